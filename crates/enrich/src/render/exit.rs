//! data_type 60: the common fields (as Elkeid's 60), then how and when the
//! process ended.

use kestrel_decode::exit::Exit;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{bool_str, head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(e: &Exit, lk: &mut Lookups, host: &Host) -> Event {
    render(e, &lk.context(&e.task, None), host)
}

pub(crate) fn render(e: &Exit, cx: &Context, host: &Host) -> Event {
    let t = &e.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Exit.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, e.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("exit_code", e.exit_code);
    ev.push("runtime_ms", e.runtime_ms().to_string());
    // Kestrel's additions: the exit code taken apart.
    ev.push(
        "exit_status",
        e.status().map(|s| s.to_string()).unwrap_or_default(),
    );
    ev.push(
        "signal",
        e.signal().map(|s| s.to_string()).unwrap_or_default(),
    );
    ev.push("core_dumped", bool_str(e.core_dumped()));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
