//! data_type 92: the file and the owner asked for, then Kestrel's res,
//! syscall and flags. The owner is `owner_uid` and `owner_gid`: `uid` is
//! already the caller's, as in every event.

use kestrel_decode::{chown::Chown, Kind};
use kestrel_event::{Event, Host};

use super::rename::{path_str, syscall_name};
use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &Chown, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

/// An id as the call took it: -1 leaves it as it was.
fn id(v: Option<u32>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

pub(crate) fn render(r: &Chown, cx: &Context, host: &Host) -> Event {
    let t = &r.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Chown.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("file", path_str(&r.file));
    ev.push("owner_uid", id(r.uid));
    ev.push("owner_gid", id(r.gid));
    ev.push_lossless("sb_id", &r.sb_id);
    tail(&mut ev, cx, host, r.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("res", r.res);
    ev.push("syscall", syscall_name(r.syscall));
    ev.push_int("flags", r.flags);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
