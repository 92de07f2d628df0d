//! data_type 356: the common fields, Elkeid's `fdname` and `flags`, then
//! the result.

use kestrel_decode::memfd::Memfd;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(m: &Memfd, lk: &mut Lookups, host: &Host) -> Event {
    render(m, &lk.context(&m.task, None), host)
}

pub(crate) fn render(m: &Memfd, cx: &Context, host: &Host) -> Event {
    let t = &m.task;
    let mut ev = Event::with_capacity(32);
    head(&mut ev, t, Kind::Memfd.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, m.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_lossless("fdname", &m.name);
    ev.push_int("flags", m.flags);
    ev.push_int("res", m.res);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
