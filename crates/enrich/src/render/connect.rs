//! data_type 42.

use kestrel_decode::Connect;
use kestrel_event::{Event, Host, DATA_TYPE_CONNECT};

use super::{head, ids, ip_or_empty, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(c: &Connect, lk: &mut Lookups, host: &Host) -> Event {
    let cx = lk.context(&c.task, Some(c.addrs.sip));
    let mut ev = render(c, &cx, host);
    // Kestrel's addition, after the others: the name this process looked
    // up that gave this address.
    ev.push(
        "dip_hostname",
        lk.answers.name_of(&c.task, c.addrs.dip, c.ktime_ns),
    );
    ev
}

pub(crate) fn render(c: &Connect, cx: &Context, host: &Host) -> Event {
    let t = &c.task;
    let mut ev = Event::with_capacity(28);
    head(&mut ev, t, DATA_TYPE_CONNECT);
    ev.push("sa_family", c.addrs.family.to_string());
    ev.push("fd", c.fd.to_string());
    ev.push("dport", c.addrs.dport.to_string());
    ev.push("dip", c.addrs.dip.to_string());
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sip", ip_or_empty(c.addrs.sip));
    ev.push("sport", c.addrs.sport.to_string());
    ev.push("res", c.res.to_string());
    ev.push("sessionid", t.sessionid.to_string());
    tail(&mut ev, cx, host, c.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push("euid", t.euid.to_string());
    // Kestrel's addition: connect, or a UDP datagram sent to an address.
    ev.push("connect_type", c.via.name());
    placement(&mut ev, t, cx);
    ev
}
