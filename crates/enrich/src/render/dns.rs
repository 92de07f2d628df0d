//! data_type 601. A datagram that did not parse keeps its addresses; its
//! question fields are empty and `malformed` says why.

use kestrel_decode::Dns;
use kestrel_event::{Event, Host, DATA_TYPE_DNS};

use super::{head, ids, ip_or_empty, placement, tail};
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(d: &Dns, lk: &mut Lookups, host: &Host) -> Event {
    let cx = lk.context(&d.task, Some(d.addrs.sip));
    if let Ok(m) = &d.message {
        lk.answers.learn(&d.task, &m.query, &m.answers, d.ktime_ns);
    }
    render(d, &cx, host)
}

pub(crate) fn render(d: &Dns, cx: &Context, host: &Host) -> Event {
    let t = &d.task;
    let mut ev = Event::with_capacity(36);
    head(&mut ev, t, DATA_TYPE_DNS);
    ev.push_int("sa_family", d.addrs.family);
    ev.push_int("fd", d.fd);
    ev.push_int("dport", d.addrs.dport);
    ev.push("dip", ip_or_empty(d.addrs.dip));
    ev.push("exe", cx.exe());
    ids(&mut ev, t);
    ev.push("sip", ip_or_empty(d.addrs.sip));
    ev.push_int("sport", d.addrs.sport);
    let (qr, opcode, rcode, query, qtype) = match &d.message {
        Ok(m) => (
            u8::from(m.qr).to_string(),
            m.opcode.to_string(),
            m.rcode.to_string(),
            m.query.clone(),
            m.qtype.to_string(),
        ),
        Err(_) => Default::default(),
    };
    let (answers, answers_truncated) = match &d.message {
        Ok(m) => (
            m.answers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            (!m.answers_complete).to_string(),
        ),
        Err(_) => (String::new(), "false".to_string()),
    };
    ev.push("qr", qr);
    ev.push("opcode", opcode);
    ev.push("rcode", rcode);
    ev.push("query", query);
    ev.push_int("sessionid", t.sessionid);
    tail(&mut ev, cx, host, d.ktime_ns);
    ev.push("exe_md5", cx.exe_md5());
    // Kestrel's additions.
    ev.push("qtype", qtype);
    ev.push(
        "malformed",
        d.message
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    );
    ev.push("answers", answers);
    ev.push("answers_truncated", answers_truncated);
    ev.push_int("euid", t.euid);
    placement(&mut ev, t, cx);
    ev
}
