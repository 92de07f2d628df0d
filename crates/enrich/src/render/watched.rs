//! data_types 608 (write-open or truncate of a watched path) and 609
//! (read-open): Elkeid's `file` and `sb_id`, then Kestrel's `flags`,
//! `syscall`, `res`, `created` and `truncates`.

use kestrel_decode::watched::Watched;
use kestrel_decode::Kind;
use kestrel_event::{lossless_string, Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

const O_TRUNC: u32 = 0o1000;

/// Its context looked up, then its fields.
pub(crate) fn event(w: &Watched, lk: &mut Lookups, host: &Host) -> Event {
    render(w, &lk.context(&w.task, None), host)
}

pub(crate) fn render(w: &Watched, cx: &Context, host: &Host) -> Event {
    let t = &w.task;
    let types = Kind::Watched.spec().data_types;
    let mut ev = Event::with_capacity(32);
    head(&mut ev, t, if w.write { types[0] } else { types[1] });
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    let path = lossless_string(&w.path);
    ev.push(
        "file",
        if w.path_truncated {
            format!("...{path}")
        } else {
            path
        },
    );
    ev.push_lossless("sb_id", &w.sb_id);
    tail(&mut ev, cx, host, w.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("flags", w.open_flags);
    ev.push("syscall", w.op.name());
    ev.push_int("res", w.res);
    ev.push("created", if w.created { "true" } else { "false" });
    // What a detection of log wiping wants, which the decimal flags make
    // awkward to test: this call cuts an existing file (O_TRUNC on a file
    // the open did not make, or truncate/ftruncate to any length).
    let cuts = matches!(w.op.name(), "truncate" | "ftruncate")
        || (w.open_flags & O_TRUNC != 0 && !w.created);
    ev.push("truncates", if cuts { "true" } else { "false" });
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
