//! data_type 101.

use kestrel_decode::Ptrace;
use kestrel_event::{Event, Host, DATA_TYPE_PTRACE};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(p: &Ptrace, lk: &mut Lookups, host: &Host) -> Event {
    render(p, &lk.context(&p.task, None), host)
}

pub(crate) fn render(p: &Ptrace, cx: &Context, host: &Host) -> Event {
    let t = &p.task;
    let mut ev = Event::with_capacity(30);
    head(&mut ev, t, DATA_TYPE_PTRACE);
    ev.push_int("ptrace_request", p.request);
    ev.push_int("target_pid", p.target_pid);
    // Zero-padded hex, as in the reference.
    ev.push("addr", format!("{:016x}", p.addr));
    ev.push("data", format!("{:016x}", p.data));
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, p.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("res", p.res);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
