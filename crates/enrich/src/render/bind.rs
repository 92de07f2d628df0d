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
    ev.push_int("sa_family", b.addrs.family);
    // The wildcard address is written out ("0.0.0.0", "::"): which one a
    // listener took is the point of the event.
    ev.push_display("sip", b.addrs.sip);
    ev.push_int("sport", b.addrs.sport);
    ev.push_int("res", b.res);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, b.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("fd", b.fd);
    ev.push_int("protocol", b.protocol);
    ev.push_int("sock_type", b.sock_type);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
