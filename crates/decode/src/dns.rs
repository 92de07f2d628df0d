//! data_type 601: a UDP datagram received from port 53, and the bounded
//! parser that reads its header, first question and the addresses its
//! answers give.
//!
//! The payload comes from any process on the host, so it is hostile input:
//! every read is bounds-checked, compression pointers must point strictly
//! backwards (which alone guarantees termination) and are also capped in
//! number, labels over 63 bytes and names over 255 are errors. Nothing here
//! allocates more than the name and the addresses it returns (and one
//! owner name at a time while reading the answers).

use std::fmt::Write as _;
use std::mem::offset_of;
use std::net::IpAddr;

use kestrel_abi as abi;

use crate::common::{read_pod, sockaddrs, task, unspecified};
use crate::{DecodeError, SockAddrs, Task};

/// A UDP datagram received from port 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The receiving process.
    pub task: Task,
    /// The socket's descriptor.
    pub fd: i32,
    /// Bytes of the whole datagram.
    pub msg_len: u32,
    /// Local end (sip/sport) and the DNS server (dip/dport).
    pub addrs: SockAddrs,
    /// The first bytes of the datagram (at most KESTREL_DNS_PAYLOAD_MAX),
    /// parsed. A datagram that does not parse is still a record: its
    /// sender and receiver are worth reporting.
    pub message: Result<DnsMessage, DnsError>,
}

/// What `Record::Dns` holds.
pub type Decoded = Dns;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Dns, DecodeError> {
    const PAYLOAD: usize = offset_of!(abi::kestrel_dns, payload);
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Fixed {
        bytes: [u8; PAYLOAD],
    }
    read_pod::<Fixed>(buf, 0, hdr.kind)?;
    let t: abi::kestrel_task = read_pod(buf, offset_of!(abi::kestrel_dns, task), hdr.kind)?;
    let addrs: abi::kestrel_sockaddrs =
        read_pod(buf, offset_of!(abi::kestrel_dns, addrs), hdr.kind)?;
    let len = read_pod::<u32>(buf, offset_of!(abi::kestrel_dns, payload_len), hdr.kind)? as usize;
    let payload = buf
        .get(PAYLOAD..PAYLOAD + len)
        .ok_or(DecodeError::BadLengths(len))?;
    Ok(Dns {
        ktime_ns: hdr.ktime_ns,
        task: task(&t),
        fd: read_pod(buf, offset_of!(abi::kestrel_dns, fd), hdr.kind)?,
        msg_len: read_pod(buf, offset_of!(abi::kestrel_dns, msg_len), hdr.kind)?,
        addrs: sockaddrs(&addrs).unwrap_or_else(|| unspecified(addrs.family)),
        message: parse(payload),
    })
}

/// What a DNS message says, as far as Kestrel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// true for a response.
    pub qr: bool,
    /// Operation code (0 = standard query).
    pub opcode: u8,
    /// Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// Answer records in the message.
    pub ancount: u16,
    /// The first question's name, without the final dot; bytes outside
    /// printable ASCII, '.' and '\' inside labels are written `\DDD`.
    pub query: String,
    /// The first question's type (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// The addresses of the answer section's A and AAAA records, in order
    /// (at most [`MAX_ANSWERS`]); other records (CNAME, ...) are skipped.
    pub answers: Vec<IpAddr>,
    /// The answer section was read to its end: false when the copied bytes
    /// ended inside it, a record did not parse, or there were more
    /// addresses than kept.
    pub answers_complete: bool,
}

/// Addresses kept from one answer.
pub const MAX_ANSWERS: usize = 16;

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Shorter than what its header or question says.
    #[error("truncated message")]
    Truncated,
    /// No question in the message.
    #[error("no question")]
    NoQuestion,
    /// A label longer than 63 bytes (a length byte of 64..191, which the
    /// wire format reserves for obsolete label types).
    #[error("label over 63 bytes")]
    LabelTooLong,
    /// A name longer than 255 bytes.
    #[error("name over 255 bytes")]
    NameTooLong,
    /// A compression pointer that does not point backwards, or too many.
    #[error("bad compression pointer")]
    BadPointer,
}

const HEADER: usize = 12;
const MAX_NAME: usize = 255;
const MAX_POINTERS: usize = 32;

/// Parses the header and first question of a DNS message.
pub fn parse(msg: &[u8]) -> Result<DnsMessage, DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let flags = u16_at(2);
    if u16_at(4) == 0 {
        return Err(DnsError::NoQuestion);
    }
    let (query, end) = read_name(msg, HEADER)?;
    if msg.len() < end + 4 {
        return Err(DnsError::Truncated);
    }
    // Only the first question is read: answers follow the others too.
    let after = if u16_at(4) == 1 { Some(end + 4) } else { None };
    let (answers, answers_complete) = match after {
        Some(at) => read_answers(msg, at, u16_at(6)),
        None => (Vec::new(), u16_at(6) == 0),
    };
    Ok(DnsMessage {
        id: u16_at(0),
        qr: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        ancount: u16_at(6),
        query,
        qtype: u16_at(end),
        answers,
        answers_complete,
    })
}

/// The A and AAAA addresses of the `count` answer records from `at`, and
/// whether all of them were read. A record that does not parse ends the
/// section (the question's fields are still good).
fn read_answers(msg: &[u8], mut at: usize, count: u16) -> (Vec<IpAddr>, bool) {
    let mut out = Vec::new();
    for _ in 0..count {
        let Ok((_, end)) = read_name(msg, at) else {
            return (out, false);
        };
        let Some(fixed) = msg.get(end..end + 10) else {
            return (out, false);
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let Some(rdata) = msg.get(end + 10..end + 10 + rdlen) else {
            return (out, false);
        };
        let ip = match (rtype, rdlen) {
            (1, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap_or_default())),
            (28, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(rdata).unwrap_or_default())),
            _ => None,
        };
        if let Some(ip) = ip {
            if out.len() == MAX_ANSWERS {
                return (out, false);
            }
            out.push(ip);
        }
        at = end + 10 + rdlen;
    }
    (out, true)
}


/// Reads the name at `start`; returns it and the offset just after it in
/// the message (after the first pointer, if any).
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut wire_len = 1; // the final zero-length label
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    // Pointers must go strictly backwards from the lowest offset seen.
    let mut lowest = start;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return Err(DnsError::NameTooLong);
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    match b {
                        b'.' | b'\\' => {
                            let _ = write!(name, "\\{b:03}");
                        }
                        0x21..=0x7e => name.push(b as char),
                        _ => {
                            let _ = write!(name, "\\{b:03}");
                        }
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(DnsError::Truncated)? as usize;
                let target = ((len & 0x3f) << 8) | lo;
                pointers += 1;
                if target >= lowest || pointers > MAX_POINTERS {
                    return Err(DnsError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                lowest = target;
                pos = target;
            }
            _ => return Err(DnsError::LabelTooLong),
        }
    }
}

/// Builders of DNS messages, for tests, fuzz seeds and test responders.
pub mod build {
    /// A message with one question for `name`, with `flags` (0x8180 for a
    /// NOERROR response, 0x8183 for NXDOMAIN, 0x0100 for a query).
    pub fn message(id: u16, flags: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&[0; 6]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    /// `m` (one question) with answer records for its name appended: a
    /// CNAME to the name itself for `None`, else an A or AAAA record.
    pub fn with_answers(mut m: Vec<u8>, answers: &[Option<std::net::IpAddr>]) -> Vec<u8> {
        let n = u16::from_be_bytes([m[6], m[7]]) + answers.len() as u16;
        m[6..8].copy_from_slice(&n.to_be_bytes());
        for a in answers {
            // The owner: a pointer to the question's name.
            m.extend_from_slice(&[0xc0, 12]);
            let (ty, data): (u16, Vec<u8>) = match a {
                Some(std::net::IpAddr::V4(v4)) => (1, v4.octets().to_vec()),
                Some(std::net::IpAddr::V6(v6)) => (28, v6.octets().to_vec()),
                None => (5, vec![0xc0, 12]),
            };
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&60u32.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(&data);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, raw, Record};

    #[test]
    fn the_record_carries_the_parsed_message_or_why_not() {
        let m = build::message(9, 0x8180, "a.example", 1);
        let Record::Dns(d) = decode(&raw::dns(raw::task(5, 1, 0, b"dig"), &m)).unwrap() else {
            panic!("not a dns record")
        };
        assert_eq!(d.message.unwrap().query, "a.example");
        assert_eq!((d.addrs.dport, d.msg_len), (53, m.len() as u32));
        let Record::Dns(d) = decode(&raw::dns(raw::task(5, 1, 0, b"dig"), &m[..5])).unwrap() else {
            panic!("not a dns record")
        };
        assert_eq!(d.message, Err(DnsError::Truncated));
    }

    #[test]
    fn answers_are_the_a_and_aaaa_addresses_and_a_cut_section_says_so() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let q = build::message(3, 0x8180, "www.example.com", 1);
        let m = build::with_answers(q.clone(), &[None, Some(v4), Some(v6)]);
        let d = parse(&m).unwrap();
        assert_eq!((d.ancount, d.answers.clone(), d.answers_complete), (3, vec![v4, v6], true));
        // Cut inside the last record: what came before is kept.
        let d = parse(&m[..m.len() - 3]).unwrap();
        assert_eq!((d.answers, d.answers_complete), (vec![v4], false));
        // A bad owner name ends the section, not the message.
        let mut bad = build::with_answers(q.clone(), &[Some(v4)]);
        let owner = q.len();
        bad[owner + 1] = 0xff; // a pointer forwards
        let d = parse(&bad).unwrap();
        assert_eq!((d.query.as_str(), d.answers.len(), d.answers_complete), ("www.example.com", 0, false));
        // More addresses than kept.
        let many = build::with_answers(q, &[Some(v4); MAX_ANSWERS + 1]);
        let d = parse(&many).unwrap();
        assert_eq!((d.answers.len(), d.answers_complete), (MAX_ANSWERS, false));
    }

    #[test]
    fn parses_a_response() {
        let m = build::message(0x1234, 0x8183, "www.example.com", 28);
        let d = parse(&m).unwrap();
        assert_eq!(d.id, 0x1234);
        assert!(d.qr);
        assert_eq!((d.opcode, d.rcode, d.qtype), (0, 3, 28));
        assert_eq!(d.query, "www.example.com");
    }

    #[test]
    fn follows_backward_pointers_only() {
        // Question name "a.example" then a second copy pointing back at it.
        let mut m = build::message(1, 0x8180, "x.example", 1);
        let q = m.len();
        m.extend_from_slice(&[1, b'a', 0xc0, 12 + 2]); // "a" + pointer to "example"
        assert_eq!(read_name(&m, q).unwrap(), ("a.example".to_string(), q + 4));
        // A pointer to itself, or forwards, is refused.
        let mut looped = build::message(1, 0x8180, "", 1);
        looped[12] = 0xc0;
        looped.insert(13, 12);
        assert_eq!(parse(&looped), Err(DnsError::BadPointer));
    }

    #[test]
    fn refuses_malformed_names() {
        let mut m = build::message(1, 0, "ab", 1);
        m[12] = 64; // label length 64
        assert_eq!(parse(&m), Err(DnsError::LabelTooLong));
        let long = vec!["abcdefghij"; 30].join(".");
        assert_eq!(
            parse(&build::message(1, 0, &long, 1)),
            Err(DnsError::NameTooLong)
        );
        let mut odd = build::message(1, 0, "ab", 1);
        odd[12] = 0x82;
        assert_eq!(parse(&odd), Err(DnsError::LabelTooLong));
        assert_eq!(parse(&[0; 5]), Err(DnsError::Truncated));
        let full = build::message(1, 0, "abc.def", 1);
        for cut in 12..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut noq = build::message(1, 0, "a", 1);
        noq[5] = 0;
        assert_eq!(parse(&noq), Err(DnsError::NoQuestion));
    }

    /// A cheap stand-in for the fuzzer that runs on every test run: many
    /// deterministic mutations of valid messages, none may panic, and the
    /// parse of any input stays within the input's size.
    #[test]
    fn mutated_messages_never_panic() {
        let seeds = [
            build::message(1, 0x8180, "www.example.com", 1),
            build::message(2, 0x8183, "a.b.c.d.e.f.g", 28),
            {
                let mut m = build::message(3, 0x8180, "x.example", 1);
                m.extend_from_slice(&[1, b'a', 0xc0, 14, 0, 1, 0, 1]);
                m
            },
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200_000 {
            let mut m = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let at = (r as usize >> 8) % m.len();
                match r % 4 {
                    0 => m[at] = (r >> 32) as u8,
                    1 => m[at] ^= 1 << ((r >> 40) % 8),
                    2 => m.truncate(at),
                    _ => m.insert(at, 0xc0 | ((r >> 48) as u8 & 0x3f)),
                }
                if m.is_empty() {
                    break;
                }
            }
            if let Ok(d) = parse(&m) {
                assert!(d.query.len() <= 4 * MAX_NAME);
            }
        }
    }

    #[test]
    fn escapes_odd_bytes() {
        let mut m = build::message(1, 0, "ab", 1);
        m[13] = b'.';
        m[14] = 0xff;
        assert_eq!(parse(&m).unwrap().query, "\\046\\255");
    }
}
