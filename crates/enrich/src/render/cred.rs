//! data_type 604. Every change is rendered: which programs are expected
//! to become root is policy, decided on the rendered event.

use kestrel_decode::Cred;
use kestrel_event::{lossless_string, Event, Host, DATA_TYPE_CRED};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(c: &Cred, lk: &mut Lookups, host: &Host) -> Event {
    render(c, &lk.context(&c.task, None), host)
}

pub(crate) fn render(c: &Cred, cx: &Context, host: &Host) -> Event {
    let t = &c.task;
    let filename = lossless_string(&c.filename);
    let mut ev = Event::with_capacity(28);
    head(&mut ev, t, DATA_TYPE_CRED);
    let exe = cx.exe();
    ev.push(
        "exe",
        if exe.is_empty() {
            filename.as_str()
        } else {
            exe
        },
    );
    ids(&mut ev, t);
    ev.push_int("old_uid", c.old_uid);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, c.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push_int("old_euid", c.old_euid);
    ev.push_int("euid", t.euid);
    ev.push("trigger", trigger_name(c.trigger));
    ev.push("filename", filename);
    placement(&mut ev, t, cx);
    ev
}

/// The name of an `enum kestrel_cred_trigger` value, "" when unknown.
pub(super) fn trigger_name(trigger: u32) -> &'static str {
    match trigger {
        1 => "exec",
        2 => "exec_failed",
        3 => "connect",
        4 => "ptrace",
        6 => "fork",
        7 => "exit",
        8 => "dup",
        9 => "exec_start",
        _ => "",
    }
}
