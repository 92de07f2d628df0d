//! data_type 157: the common fields (`comm` the name before), Elkeid's
//! `option` and `new_name`, then how the name was changed.

use kestrel_decode::prctl::Prctl;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// prctl(2)'s x86-64 syscall number.
const SYS_PRCTL: u32 = 157;

/// Its context looked up, then its fields.
pub(crate) fn event(p: &Prctl, lk: &mut Lookups, host: &Host) -> Event {
    render(p, &lk.context(&p.task, None), host)
}

pub(crate) fn render(p: &Prctl, cx: &Context, host: &Host) -> Event {
    let t = &p.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Prctl.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, p.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push(
        "option",
        if p.syscall == SYS_PRCTL {
            p.option.to_string()
        } else {
            String::new()
        },
    );
    ev.push_lossless("new_name", &p.new_name);
    // Kestrel's additions.
    ev.push_lossless("old_name", &t.comm);
    ev.push(
        "via",
        if p.syscall == SYS_PRCTL {
            "prctl"
        } else {
            "proc_comm"
        },
    );
    ev.push_int("syscall", p.syscall);
    ev.push_int("renamer_pid", p.renamer);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
