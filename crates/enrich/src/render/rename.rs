//! data_type 82: Elkeid's old_name, new_name and sb_id, then Kestrel's
//! res, syscall and flags. The renderer of 86 (link.rs) shares it.

use kestrel_decode::{Kind, PathArg, PathPair};
use kestrel_event::{lossless_string, Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &PathPair, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

pub(crate) fn render(r: &PathPair, cx: &Context, host: &Host) -> Event {
    pair(r, cx, host, Kind::Rename.spec().data_types[0], None)
}

/// The syscall's name, from its x86-64 number.
pub(super) fn syscall_name(nr: u32) -> &'static str {
    match nr {
        82 => "rename",
        264 => "renameat",
        316 => "renameat2",
        86 => "link",
        265 => "linkat",
        88 => "symlink",
        266 => "symlinkat",
        87 => "unlink",
        263 => "unlinkat",
        84 => "rmdir",
        90 => "chmod",
        91 => "fchmod",
        268 => "fchmodat",
        452 => "fchmodat2",
        92 => "chown",
        93 => "fchown",
        94 => "lchown",
        260 => "fchownat",
        _ => "",
    }
}

/// A path argument as a string: "..." before a path whose directory walk
/// was cut (as file_path in 602), after a name the kernel's copy cut.
pub(super) fn path_str(a: &PathArg) -> String {
    let p = lossless_string(&a.path);
    match (a.dir_truncated && !a.literal, a.name_truncated) {
        (false, false) => p,
        (true, false) => format!("...{p}"),
        (false, true) => format!("{p}..."),
        (true, true) => format!("...{p}..."),
    }
}

/// The fields of 82 and 86; `link_type` only for 86.
pub(super) fn pair(
    r: &PathPair,
    cx: &Context,
    host: &Host,
    data_type: &'static str,
    link_type: Option<&'static str>,
) -> Event {
    let t = &r.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, data_type);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("old_name", path_str(&r.old));
    ev.push("new_name", path_str(&r.new));
    ev.push_lossless("sb_id", &r.sb_id);
    tail(&mut ev, cx, host, r.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    if let Some(lt) = link_type {
        ev.push("link_type", lt);
    }
    ev.push_int("res", r.res);
    ev.push("syscall", syscall_name(r.syscall));
    ev.push_int("flags", r.flags);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
