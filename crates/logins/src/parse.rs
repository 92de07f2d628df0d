//! Parsing of sshd log messages into [`Login`]s and [`Login`]s into events.
//!
//! User names are attacker controlled: they may contain spaces and text that
//! looks like the rest of the message (` from 1.2.3.4 port 22 ssh2`). Every
//! parse is therefore anchored at the END of the message: the source address
//! and port are taken from the right, and the user name is whatever remains
//! between the fixed prefix and that source.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kestrel_event::{Event, Host, When};

/// `data_type` of an ssh login event.
pub const DATA_TYPE_LOGIN: &str = "1001";

/// Outcome of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
}

impl Status {
    /// `"Success"` or `"Failed"`, as in the reference.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "Success",
            Status::Failed => "Failed",
        }
    }
}

/// Which sshd message a [`Login`] came from. One failed attempt usually
/// produces several messages (`Invalid user`, `Failed password`,
/// `Connection closed by invalid user`); this lets a consumer tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `Accepted METHOD for ...` / `Failed METHOD for ...`.
    Auth,
    /// `Invalid user USER from IP [port N]`.
    InvalidUser,
    /// `Connection closed by` / `Connection reset by` an authenticating or
    /// invalid user (gave up before succeeding).
    ConnectionClosed,
    /// `Disconnected from authenticating|invalid user ...`.
    Disconnected,
}

/// One ssh login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub status: Status,
    /// Authentication method (`password`, `publickey`,
    /// `keyboard-interactive/pam`, ...); `"invalid_user"` for
    /// [`Stage::InvalidUser`], empty for closed/disconnected messages.
    pub method: String,
    pub user: String,
    /// False when sshd said "invalid user".
    pub user_exists: bool,
    pub from_ip: IpAddr,
    /// Source port; 0 when the message has none (old `Invalid user` form).
    pub port: u16,
    /// Protocol, `"ssh2"`.
    pub processor: String,
    pub stage: Stage,
    /// When the message was logged, if the line or journal entry said so.
    pub time: Option<SystemTime>,
    /// sshd process id, if known.
    pub pid: Option<u32>,
}

/// Program names (syslog identifiers) whose messages are parsed: `sshd`,
/// and OpenSSH >= 9.8's `sshd-session` and `sshd-auth`.
pub fn is_sshd_ident(ident: &str) -> bool {
    matches!(ident, "sshd" | "sshd-session" | "sshd-auth")
}

/// Parses one line of /var/log/auth.log or /var/log/secure:
/// `Nov 27 03:12:01 host sshd[123]: MESSAGE` (local time, current year) or
/// `2026-11-27T03:12:01.123456+00:00 host sshd[123]: MESSAGE`.
/// Returns `None` for anything that is not an sshd login message.
pub fn parse_line(line: &str) -> Option<Login> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (time, rest) = parse_timestamp(line)?;
    let rest = rest.strip_prefix(' ')?;
    let (_host, rest) = rest.split_once(' ')?;
    let (tag, msg) = rest.split_once(' ')?;
    let tag = tag.strip_suffix(':')?;
    let (ident, pid) = match tag.split_once('[') {
        Some((ident, pid)) => (ident, Some(pid.strip_suffix(']')?.parse().ok()?)),
        None => (tag, None),
    };
    let mut login = parse_message(ident, pid, msg)?;
    login.time = time;
    Some(login)
}

/// Parses the text of one sshd message (journal `MESSAGE`, or the part of a
/// log line after `sshd[PID]: `). `ident` is the program name (`sshd`,
/// `sshd-session`, `sshd-auth`); other programs give `None`.
pub fn parse_message(ident: &str, pid: Option<u32>, message: &str) -> Option<Login> {
    if !is_sshd_ident(ident) {
        return None;
    }
    let msg = strip_repeated(message.trim_end_matches(['\n', '\r']));
    let mut login = if let Some(rest) = msg.strip_prefix("Accepted ") {
        parse_auth(Status::Success, rest)?
    } else if let Some(rest) = msg.strip_prefix("Failed ") {
        parse_auth(Status::Failed, rest)?
    } else if let Some(rest) = msg.strip_prefix("Invalid user ") {
        parse_invalid_user(rest)?
    } else if let Some(rest) = msg.strip_prefix("Connection closed by ") {
        parse_closed(rest, Stage::ConnectionClosed)?
    } else if let Some(rest) = msg.strip_prefix("Connection reset by ") {
        parse_closed(rest, Stage::ConnectionClosed)?
    } else if let Some(rest) = msg.strip_prefix("Disconnected from ") {
        parse_closed(rest, Stage::Disconnected)?
    } else {
        return None;
    };
    login.pid = pid;
    Some(login)
}

/// The reference's event for a login: `data_type` 1001 and its fields, in
/// the reference's order. `time` is the log time (now if unknown) in epoch
/// milliseconds.
pub fn to_event(login: &Login, host: &Host) -> Event {
    let mut e = Event::with_capacity(11);
    e.push("data_type", DATA_TYPE_LOGIN);
    e.push("status", login.status.as_str());
    e.push("type", login.method.as_str());
    e.push(
        "user_exsit",
        if login.user_exists { "true" } else { "false" },
    );
    e.push("user", login.user.as_str());
    e.push("from_ip", login.from_ip.to_string());
    e.push("port", login.port.to_string());
    e.push("processor", login.processor.as_str());
    host.stamp(&mut e, login.time.map_or_else(When::now, When::Wall));
    e
}

/// rsyslog's `message repeated N times: [ MSG]` (one login is reported).
fn strip_repeated(msg: &str) -> &str {
    if let Some(rest) = msg.strip_prefix("message repeated ") {
        if let Some((_, inner)) = rest.split_once(" times: [ ") {
            return inner.strip_suffix(']').unwrap_or(inner);
        }
    }
    msg
}

fn strip_preauth(s: &str) -> &str {
    s.strip_suffix(" [preauth]").unwrap_or(s)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    // Link-local IPv6 may carry a zone: fe80::1%eth0.
    let s = s.split_once('%').map_or(s, |(a, _)| a);
    s.parse().ok()
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `[invalid user ]USER` -> (user, exists).
fn split_invalid(user: &str) -> (&str, bool) {
    match user.strip_prefix("invalid user ") {
        Some(u) => (u, false),
        None => (user, true),
    }
}

/// Tries every ` from ` in `body`, rightmost first, and returns the first
/// split whose right side is a valid source (checked by `source`).
fn split_source<'a, T>(
    body: &'a str,
    source: impl Fn(&'a str) -> Option<T>,
) -> Option<(&'a str, T)> {
    for (i, _) in body.rmatch_indices(" from ") {
        if let Some(t) = source(&body[i + " from ".len()..]) {
            return Some((&body[..i], t));
        }
    }
    None
}

/// `METHOD for [invalid user ]USER from IP port N ssh2[: KEY...]`
fn parse_auth(status: Status, rest: &str) -> Option<Login> {
    let (method, rest) = rest.split_once(' ')?;
    if method.is_empty() {
        return None;
    }
    let body = rest.strip_prefix("for ")?;
    let (user, (ip, port, proto)) = split_source(body, |s| {
        let (ip, rest) = s.split_once(' ')?;
        let ip = parse_ip(ip)?;
        let rest = rest.strip_prefix("port ")?;
        let (port, rest) = rest.split_once(' ')?;
        let port = parse_port(port)?;
        let rest = strip_preauth(rest);
        let proto = ["ssh2", "ssh1"].into_iter().find(|p| {
            rest.strip_prefix(p)
                .is_some_and(|t| t.is_empty() || t.starts_with(':'))
        })?;
        Some((ip, port, proto))
    })?;
    let (user, exists) = split_invalid(user);
    Some(Login {
        status,
        method: method.to_string(),
        user: user.to_string(),
        user_exists: exists,
        from_ip: ip,
        port,
        processor: proto.to_string(),
        stage: Stage::Auth,
        time: None,
        pid: None,
    })
}

/// `USER from IP port N` or `USER from IP`
fn parse_invalid_user(rest: &str) -> Option<Login> {
    let (user, (ip, port)) = split_source(strip_preauth(rest), |s| match s.split_once(' ') {
        None => Some((parse_ip(s)?, 0)),
        Some((ip, rest)) => Some((parse_ip(ip)?, parse_port(rest.strip_prefix("port ")?)?)),
    })?;
    Some(Login {
        status: Status::Failed,
        method: "invalid_user".to_string(),
        user: user.to_string(),
        user_exists: false,
        from_ip: ip,
        port,
        processor: "ssh2".to_string(),
        stage: Stage::InvalidUser,
        time: None,
        pid: None,
    })
}

/// `authenticating user USER IP port N [preauth]` or
/// `invalid user USER IP port N [preauth]`
fn parse_closed(rest: &str, stage: Stage) -> Option<Login> {
    let (rest, exists) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        (r, true)
    } else if let Some(r) = rest.strip_prefix("invalid user ") {
        (r, false)
    } else {
        return None;
    };
    let rest = strip_preauth(rest);
    let (left, port) = rest.rsplit_once(" port ")?;
    let port = parse_port(port)?;
    let (user, ip) = left.rsplit_once(' ')?;
    let ip = parse_ip(ip)?;
    Some(Login {
        status: Status::Failed,
        method: String::new(),
        user: user.to_string(),
        user_exists: exists,
        from_ip: ip,
        port,
        processor: "ssh2".to_string(),
        stage,
        time: None,
        pid: None,
    })
}

/// Splits a leading timestamp off a log line: RFC 3339 (rsyslog's high
/// precision format) or the classic syslog `Mmm dd hh:mm:ss` (local time).
fn parse_timestamp(line: &str) -> Option<(Option<SystemTime>, &str)> {
    if line.starts_with(|c: char| c.is_ascii_digit()) {
        let (ts, rest) = line.split_at(line.find(' ')?);
        return Some((parse_rfc3339(ts), rest));
    }
    if line.len() < 15 || !line.is_char_boundary(15) {
        return None;
    }
    let (ts, rest) = line.split_at(15);
    Some((parse_syslog_time(ts, SystemTime::now()), rest))
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `2026-11-27T03:12:01[.123456](Z|+00:00|+0000)`
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    // Byte offsets below slice the text: only where it is ASCII (a
    // multi-byte character there would split).
    if b.len() < 20
        || !b[..19].is_ascii()
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (h, mi, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i64 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &r[..n.min(9)];
        nanos = num(digits)? * 10i64.pow(9 - digits.len() as u32);
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            if !r.is_ascii() {
                return None;
            }
            let (oh, om) = match r.len() {
                5 if r.as_bytes()[2] == b':' => (num(&r[0..2])?, num(&r[3..5])?),
                4 => (num(&r[0..2])?, num(&r[2..4])?),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos as u32))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 27 03:12:01` / `Nov  7 03:12:01` in local time. The year is not in
/// the line: it is the current one, or the previous one if that would put
/// the time more than a day in the future (a December line read in January).
pub(crate) fn parse_syslog_time(s: &str, now: SystemTime) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 15 || b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let mon = MONTHS.iter().position(|m| *m == &s[0..3])? as i32;
    let day = num(s[4..6].trim_start())? as i32;
    let (h, mi, sec) = (num(&s[7..9])?, num(&s[10..12])?, num(&s[13..15])?);
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as libc::time_t;
    // SAFETY: localtime_r and mktime only use the structs passed in.
    let year = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now_secs, &mut tm).is_null() {
            return None;
        }
        tm.tm_year
    };
    let make = |year: i32| -> Option<i64> {
        // SAFETY: as above.
        unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            tm.tm_year = year;
            tm.tm_mon = mon;
            tm.tm_mday = day;
            tm.tm_hour = h as i32;
            tm.tm_min = mi as i32;
            tm.tm_sec = sec as i32;
            tm.tm_isdst = -1;
            let t = libc::mktime(&mut tm);
            (t != -1).then_some(t as i64)
        }
    };
    let mut t = make(year)?;
    if t > now_secs as i64 + 86400 {
        t = make(year - 1)?;
    }
    (t >= 0).then(|| UNIX_EPOCH + Duration::from_secs(t as u64))
}
