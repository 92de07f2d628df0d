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
    ev.push("ptrace_request", p.request.to_string());
    ev.push("target_pid", p.target_pid.to_string());
    // Zero-padded hex, as in the reference.
    ev.push("addr", format!("{:016x}", p.addr));
    ev.push("data", format!("{:016x}", p.data));
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sessionid", t.sessionid.to_string());
    tail(&mut ev, cx, host, p.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("res", p.res.to_string());
    ev.push("euid", t.euid.to_string());
    placement(&mut ev, t, cx);
    ev
}
