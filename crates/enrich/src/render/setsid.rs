//! data_type 112: the common fields (as Elkeid's), with the result and the
//! session the call made.

use kestrel_decode::setsid::Setsid;
use kestrel_decode::Kind;
use kestrel_event::{Event, Host};

use super::{head, ids, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(s: &Setsid, lk: &mut Lookups, host: &Host) -> Event {
    render(s, &lk.context(&s.task, None), host)
}

pub(crate) fn render(s: &Setsid, cx: &Context, host: &Host) -> Event {
    let t = &s.task;
    let mut ev = Event::with_capacity(30);
    head(&mut ev, t, Kind::Setsid.spec().data_types[0]);
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, s.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    ev.push_int("res", s.res);
    ev.push_int("sid", t.sid);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
