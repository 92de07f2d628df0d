//! data_type 62 (process-directed) / 200 (thread-directed): Elkeid's
//! fields (target_pid, sig), then Kestrel's.

use kestrel_decode::kill::Kill;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

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
    ev.push_int("target_pid", k.target_pid);
    ev.push_int("sig", k.sig);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, k.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("target_tgid", k.target_tgid);
    ev.push_lossless("target_comm", &k.target_comm);
    ev.push_int("si_code", k.si_code);
    ev.push("syscall", k.syscall_name());
    ev.push("sig_result", result_name(k.result));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
