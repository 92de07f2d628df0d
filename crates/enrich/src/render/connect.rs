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
    ev.push_int("sa_family", c.addrs.family);
    ev.push_int("fd", c.fd);
    ev.push_int("dport", c.addrs.dport);
    ev.push_display("dip", c.addrs.dip);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sip", ip_or_empty(c.addrs.sip));
    ev.push_int("sport", c.addrs.sport);
    ev.push_int("res", c.res);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, c.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("euid", t.euid);
    // Kestrel's addition: connect, or a UDP datagram sent to an address.
    ev.push("connect_type", c.via.name());
    placement(&mut ev, t, cx);
    ev
}
