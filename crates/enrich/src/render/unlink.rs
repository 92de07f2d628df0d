//! data_type 605: Elkeid's file, then Kestrel's res and syscall. The
//! renderer of 606 (rmdir.rs) shares it.

use kestrel_decode::{Kind, Removal};
use kestrel_event::{Event, Host};

use super::rename::{path_str, syscall_name};
use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &Removal, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

pub(crate) fn render(r: &Removal, cx: &Context, host: &Host) -> Event {
    removal(r, cx, host, Kind::Unlink.spec().data_types[0])
}

/// The fields of 605 and 606.
pub(super) fn removal(r: &Removal, cx: &Context, host: &Host, data_type: &'static str) -> Event {
    let t = &r.task;
    let mut ev = Event::with_capacity(30);
    head(&mut ev, t, data_type);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    ev.push("file", path_str(&r.file));
    tail(&mut ev, cx, host, r.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("res", r.res);
    ev.push("syscall", syscall_name(r.syscall));
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
