//! data_type 356: the common fields, Elkeid's `fdname` and `flags`, then
//! the result.

use kestrel_decode::memfd::Memfd;
use kestrel_decode::Kind;
use kestrel_event::{lossless_string, Event, Host};

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
    ev.push("sessionid", t.sessionid.to_string());
    tail(&mut ev, cx, host, m.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("fdname", lossless_string(&m.name));
    ev.push("flags", m.flags.to_string());
    ev.push("res", m.res.to_string());
    ev.push("euid", t.euid.to_string());
    placement(&mut ev, t, cx);
    ev
}
