//! data_type 43: Elkeid's fields (sa_family, dip, dport, sip, sport, res)
//! with Elkeid's meaning: `sip`/`sport` the peer that connected (the
//! connection's source), `dip`/`dport` the local end it came in on.

use kestrel_decode::accept::Accept;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(a: &Accept, lk: &mut Lookups, host: &Host) -> Event {
    // The local end names the network the event happened in.
    render(a, &lk.context(&a.task, Some(a.addrs.sip)), host)
}

pub(crate) fn render(a: &Accept, cx: &Context, host: &Host) -> Event {
    let t = &a.task;
    let mut ev = Event::with_capacity(34);
    head(&mut ev, t, Kind::Accept.spec().data_types[0]);
    ev.push_int("sa_family", a.addrs.family);
    ev.push_display("dip", a.addrs.sip);
    ev.push_int("dport", a.addrs.sport);
    ev.push_display("sip", a.addrs.dip);
    ev.push_int("sport", a.addrs.dport);
    ev.push_int("res", a.res);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, a.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("fd", a.fd);
    ev.push(
        "syscall",
        match a.syscall {
            288 => "accept4",
            _ => "accept",
        },
    );
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
