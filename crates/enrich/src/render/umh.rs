//! data_type 607: a user-mode helper's exec.

use kestrel_decode::{Exec, Kind};
use kestrel_event::{lossless_string, Event, Host};

use super::exec::{join_argv, pid_tree};
use super::{head, ids, placement, tail};
use crate::context::Lookups;

/// Its context looked up (its exec event, sent first, made it), then
/// Elkeid's fields and Kestrel's.
pub(crate) fn event(e: &Exec, lk: &mut Lookups, host: &Host) -> Event {
    let cx = lk.context(&e.task, None);
    let t = &e.task;
    let mut ev = Event::with_capacity(36);
    head(&mut ev, t, Kind::Umh.spec().data_types[0]);
    // The file the kernel mapped, walked in the kernel: the helper may be
    // gone (a core_pattern helper often is) before /proc is read.
    let walked = lossless_string(&e.exe_path);
    let exe = match (e.exe_truncated, walked.is_empty()) {
        (false, false) => walked.as_str(),
        _ => cx.exe(),
    };
    ev.push("exe", exe);
    ev.push("argv", join_argv(&e.argv));
    // call_usermodehelper's `wait` is not in the exec; what shows is who
    // runs the helper: a workqueue worker only for UMH_WAIT_PROC (it
    // waits for the helper's exit), kthreadd for UMH_WAIT_EXEC and
    // UMH_NO_WAIT, which cannot be told apart there.
    ev.push("wait", if e.parent_wq_worker { "2" } else { "" });
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("pid_tree", pid_tree(e));
    tail(&mut ev, &cx, host, e.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push(
        "umh_parent",
        e.ancestors
            .first()
            .map(|a| lossless_string(&a.comm))
            .unwrap_or_default(),
    );
    ev.push_lossless("filename", &e.filename);
    ev.push_int("res", e.res);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, &cx);
    ev
}
