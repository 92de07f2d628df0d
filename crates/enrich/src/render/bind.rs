//! data_type 49: Elkeid's fields (sa_family, sip, sport, res), then
//! Kestrel's.

use kestrel_decode::bind::Bind;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(b: &Bind, lk: &mut Lookups, host: &Host) -> Event {
    render(b, &lk.context(&b.task, None), host)
}

pub(crate) fn render(b: &Bind, cx: &Context, host: &Host) -> Event {
    let t = &b.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Bind.spec().data_types[0]);
    ev.push("sa_family", b.addrs.family.to_string());
    // The wildcard address is written out ("0.0.0.0", "::"): which one a
    // listener took is the point of the event.
    ev.push("sip", b.addrs.sip.to_string());
    ev.push("sport", b.addrs.sport.to_string());
    ev.push("res", b.res.to_string());
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sessionid", t.sessionid.to_string());
    tail(&mut ev, cx, host, b.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("fd", b.fd.to_string());
    ev.push("protocol", b.protocol.to_string());
    ev.push("sock_type", b.sock_type.to_string());
    ev.push("euid", t.euid.to_string());
    placement(&mut ev, t, cx);
    ev
}
