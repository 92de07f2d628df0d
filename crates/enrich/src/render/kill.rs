//! data_type 62 (process-directed) / 200 (thread-directed): Elkeid's
//! fields (target_pid, sig), then Kestrel's.

use kestrel_decode::kill::Kill;
use kestrel_decode::Kind;
use kestrel_event::{lossless_string, Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(k: &Kill, lk: &mut Lookups, host: &Host) -> Event {
    render(k, &lk.context(&k.task, None), host)
}

/// The kernel's TRACE_SIGNAL_* results.
fn result_name(r: i32) -> String {
    match r {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already_pending".into(),
        3 => "overflow_fail".into(),
        4 => "lose_info".into(),
        r => r.to_string(),
    }
}

pub(crate) fn render(k: &Kill, cx: &Context, host: &Host) -> Event {
    let t = &k.task;
    let types = Kind::Kill.spec().data_types;
    let mut ev = Event::with_capacity(36);
    head(&mut ev, t, if k.group { types[0] } else { types[1] });
    ev.push("target_pid", k.target_pid.to_string());
    ev.push("sig", k.sig.to_string());
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sessionid", t.sessionid.to_string());
    tail(&mut ev, cx, host, k.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("target_tgid", k.target_tgid.to_string());
    ev.push("target_comm", lossless_string(&k.target_comm));
    ev.push("si_code", k.si_code.to_string());
    ev.push("syscall", k.syscall_name());
    ev.push("sig_result", result_name(k.result));
    ev.push("euid", t.euid.to_string());
    placement(&mut ev, t, cx);
    ev
}
