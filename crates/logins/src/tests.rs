use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::parse::{parse_rfc3339, parse_syslog_time};
use kestrel_event::Host;

type Want = (Status, &'static str, &'static str, bool, &'static str, u16);

const S: Status = Status::Success;
const F: Status = Status::Failed;

const FP: &str = "SHA256:Xk3v9Qm2a7HfN1tPq0bYc4ZsLwR8uEoJdGi5KxVhT6M";

fn cases() -> Vec<(String, Option<Want>)> {
    let l = |s: &str| s.to_string();
    vec![
        // ---- OpenSSH 7.4, CentOS 7, /var/log/secure ----
        (l("Nov 27 03:12:01 centos7 sshd[1234]: Accepted password for root from 192.168.1.10 port 52314 ssh2"),
            Some((S, "password", "root", true, "192.168.1.10", 52314))),
        (format!("Nov  7 03:12:01 centos7 sshd[1234]: Accepted publickey for deploy from 10.1.2.3 port 40022 ssh2: RSA {FP}"),
            Some((S, "publickey", "deploy", true, "10.1.2.3", 40022))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Failed password for root from 203.0.113.5 port 33511 ssh2"),
            Some((F, "password", "root", true, "203.0.113.5", 33511))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Invalid user admin from 203.0.113.5"),
            Some((F, "invalid_user", "admin", false, "203.0.113.5", 0))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Failed password for invalid user admin from 203.0.113.5 port 33512 ssh2"),
            Some((F, "password", "admin", false, "203.0.113.5", 33512))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Failed none for invalid user test from 203.0.113.5 port 33513 ssh2"),
            Some((F, "none", "test", false, "203.0.113.5", 33513))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Accepted keyboard-interactive/pam for alice from 10.0.0.5 port 50000 ssh2"),
            Some((S, "keyboard-interactive/pam", "alice", true, "10.0.0.5", 50000))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Failed keyboard-interactive/pam for invalid user bob from 10.0.0.5 port 50001 ssh2"),
            Some((F, "keyboard-interactive/pam", "bob", false, "10.0.0.5", 50001))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: message repeated 2 times: [ Failed password for root from 203.0.113.5 port 33511 ssh2]"),
            Some((F, "password", "root", true, "203.0.113.5", 33511))),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: input_userauth_request: invalid user admin [preauth]"), None),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Connection closed by 203.0.113.5 port 33512 [preauth]"), None),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: Received disconnect from 203.0.113.5 port 33512:11: Bye Bye [preauth]"), None),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root"), None),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: pam_unix(sshd:session): session opened for user root by (uid=0)"), None),
        (l("Nov 27 03:12:02 centos7 sshd[1235]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root"), None),
        // ---- OpenSSH 8.x (Ubuntu 20.04/22.04, RHEL 8/9) ----
        (l("Nov 27 03:12:03 ubuntu sshd[2001]: Invalid user oracle from 198.51.100.7 port 41234"),
            Some((F, "invalid_user", "oracle", false, "198.51.100.7", 41234))),
        (l("Nov 27 03:12:03 ubuntu sshd[2001]: Connection closed by invalid user oracle 198.51.100.7 port 41234 [preauth]"),
            Some((F, "", "oracle", false, "198.51.100.7", 41234))),
        (l("Nov 27 03:12:03 ubuntu sshd[2002]: Connection closed by authenticating user root 198.51.100.7 port 41236 [preauth]"),
            Some((F, "", "root", true, "198.51.100.7", 41236))),
        (l("Nov 27 03:12:03 ubuntu sshd[2002]: Disconnected from authenticating user root 198.51.100.7 port 41236 [preauth]"),
            Some((F, "", "root", true, "198.51.100.7", 41236))),
        (l("Nov 27 03:12:03 ubuntu sshd[2002]: Disconnected from invalid user oracle 198.51.100.7 port 41234 [preauth]"),
            Some((F, "", "oracle", false, "198.51.100.7", 41234))),
        (l("Nov 27 03:12:03 ubuntu sshd[2002]: Connection reset by authenticating user root 198.51.100.7 port 41238 [preauth]"),
            Some((F, "", "root", true, "198.51.100.7", 41238))),
        (format!("Nov 27 03:12:03 ubuntu sshd[2003]: Accepted publickey for ubuntu from 2001:db8::1 port 22 ssh2: ED25519 {FP}"),
            Some((S, "publickey", "ubuntu", true, "2001:db8::1", 22))),
        (format!("Nov 27 03:12:03 ubuntu sshd[2003]: Failed publickey for root from ::ffff:1.2.3.4 port 2222 ssh2: RSA {FP}"),
            Some((F, "publickey", "root", true, "::ffff:1.2.3.4", 2222))),
        (l("Nov 27 03:12:03 rhel9 sshd[2004]: Accepted gssapi-with-mic for carol from 10.20.30.40 port 45678 ssh2"),
            Some((S, "gssapi-with-mic", "carol", true, "10.20.30.40", 45678))),
        (format!("Nov 27 03:12:03 rhel9 sshd[2004]: Accepted hostbased for dave from 10.20.30.41 port 1022 ssh2: ECDSA {FP}"),
            Some((S, "hostbased", "dave", true, "10.20.30.41", 1022))),
        (l("Nov 27 03:12:03 ubuntu sshd[2005]: Disconnected from user ubuntu 10.0.0.1 port 22"), None),
        (l("Nov 27 03:12:03 ubuntu sshd[2005]: Received disconnect from 10.0.0.1 port 22:11: disconnected by user"), None),
        (l("Nov 27 03:12:03 ubuntu sshd[2005]: Postponed publickey for ubuntu from 10.0.0.1 port 22 ssh2 [preauth]"), None),
        (l("Nov 27 03:12:03 ubuntu sshd[2005]: error: maximum authentication attempts exceeded for root from 10.0.0.1 port 22 ssh2 [preauth]"), None),
        // ---- OpenSSH 9.2 (Debian 12), RFC 3339 timestamps ----
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Accepted password for root from 192.0.2.1 port 51234 ssh2"),
            Some((S, "password", "root", true, "192.0.2.1", 51234))),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Failed password for invalid user test from 2001:db8:0:1::99 port 51235 ssh2"),
            Some((F, "password", "test", false, "2001:db8:0:1::99", 51235))),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Invalid user test from 2001:db8:0:1::99 port 51235"),
            Some((F, "invalid_user", "test", false, "2001:db8:0:1::99", 51235))),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Connection closed by invalid user test 2001:db8:0:1::99 port 51235 [preauth]"),
            Some((F, "", "test", false, "2001:db8:0:1::99", 51235))),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Server listening on 0.0.0.0 port 22."), None),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: pam_unix(sshd:session): session closed for user root"), None),
        (l("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Connection from 192.0.2.1 port 51234 on 192.0.2.2 port 22 rdomain \"\""), None),
        (format!("2026-11-27T03:12:01.123456+00:00 deb12 sshd[3002]: Accepted publickey for ops from 192.0.2.8 port 40400 ssh2: ED25519-CERT {FP} ID ops from laptop (serial 7) CA ED25519 {FP}"),
            Some((S, "publickey", "ops", true, "192.0.2.8", 40400))),
        // ---- OpenSSH 9.8+ / 10.x: sshd-session and sshd-auth ----
        (format!("2026-11-27T03:12:01.000000Z fedora sshd-session[4001]: Accepted publickey for root from 10.9.8.7 port 60000 ssh2: ED25519 {FP}"),
            Some((S, "publickey", "root", true, "10.9.8.7", 60000))),
        (l("Nov 27 03:12:04 arch sshd-session[4002]: Failed password for invalid user guest from 10.9.8.7 port 60001 ssh2"),
            Some((F, "password", "guest", false, "10.9.8.7", 60001))),
        (l("Nov 27 03:12:04 arch sshd-session[4002]: Invalid user guest from 10.9.8.7 port 60001"),
            Some((F, "invalid_user", "guest", false, "10.9.8.7", 60001))),
        (l("Nov 27 03:12:04 arch sshd-auth[4003]: Connection closed by invalid user guest 10.9.8.7 port 60001 [preauth]"),
            Some((F, "", "guest", false, "10.9.8.7", 60001))),
        (l("Nov 27 03:12:04 arch sshd-session[4002]: Failed password for root from 10.9.8.7 port 60002 ssh2"),
            Some((F, "password", "root", true, "10.9.8.7", 60002))),
        // ---- attacker-controlled user names: anchored at the end ----
        (l("Nov 27 03:12:05 h sshd[9]: Failed password for invalid user x from 1.2.3.4 port 22 ssh2 from 10.0.0.9 port 5555 ssh2"),
            Some((F, "password", "x from 1.2.3.4 port 22 ssh2", false, "10.0.0.9", 5555))),
        (l("Nov 27 03:12:05 h sshd[9]: Invalid user x from 1.2.3.4 port 22 from 10.0.0.9 port 5555"),
            Some((F, "invalid_user", "x from 1.2.3.4 port 22", false, "10.0.0.9", 5555))),
        (l("Nov 27 03:12:05 h sshd[9]: Connection closed by invalid user a b 1.2.3.4 port 9 10.0.0.9 port 5555 [preauth]"),
            Some((F, "", "a b 1.2.3.4 port 9", false, "10.0.0.9", 5555))),
        (l("Nov 27 03:12:05 h sshd[9]: Failed password for invalid user invalid user y from 10.0.0.9 port 5555 ssh2"),
            Some((F, "password", "invalid user y", false, "10.0.0.9", 5555))),
        (l("Nov 27 03:12:05 h sshd[9]: Invalid user  from 10.0.0.9 port 5555"),
            Some((F, "invalid_user", "", false, "10.0.0.9", 5555))),
        (l("Nov 27 03:12:05 h sshd[9]: Failed none for invalid user  from 10.0.0.9 port 5555 ssh2"),
            Some((F, "none", "", false, "10.0.0.9", 5555))),
        // ---- not sshd, or not a log line ----
        (l("Nov 27 03:12:06 h sudo[5]: Accepted password for root from 1.2.3.4 port 22 ssh2"), None),
        (l("Nov 27 03:12:06 h sshd-foo[5]: Accepted password for root from 1.2.3.4 port 22 ssh2"), None),
        (l("Nov 27 03:12:06 h sshd[5]: Accepted password for root from 1.2.3.4 port x ssh2"), None),
        (l("Nov 27 03:12:06 h sshd[5]: Accepted password for root from 999.2.3.4 port 22 ssh2"), None),
        (l("garbage"), None),
        (l(""), None),
    ]
}

#[test]
fn parser_table() {
    for (line, want) in cases() {
        let got = parse_line(&line);
        match (&got, want) {
            (None, None) => {}
            (Some(g), Some((status, method, user, exists, ip, port))) => {
                let ip: IpAddr = ip.parse().unwrap();
                assert_eq!(
                    (
                        g.status,
                        g.method.as_str(),
                        g.user.as_str(),
                        g.user_exists,
                        g.from_ip,
                        g.port
                    ),
                    (status, method, user, exists, ip, port),
                    "line: {line}"
                );
                assert_eq!(g.processor, "ssh2", "line: {line}");
                assert!(g.pid.is_some(), "line: {line}");
                assert!(g.time.is_some(), "line: {line}");
            }
            _ => panic!("line: {line}\n got {got:?}\nwant {want:?}"),
        }
    }
}

#[test]
fn stages_and_pid() {
    let l = parse_line("Nov 27 03:12:03 u sshd[2001]: Invalid user o from 1.2.3.4 port 4").unwrap();
    assert_eq!((l.stage, l.pid), (Stage::InvalidUser, Some(2001)));
    let l = parse_line(
        "Nov 27 03:12:03 u sshd-session[77]: Disconnected from invalid user o 1.2.3.4 port 4 [preauth]",
    )
    .unwrap();
    assert_eq!((l.stage, l.pid), (Stage::Disconnected, Some(77)));
    let l = parse_message(
        "sshd",
        None,
        "Accepted password for r from 1.2.3.4 port 4 ssh2",
    )
    .unwrap();
    assert_eq!((l.stage, l.pid, l.time), (Stage::Auth, None, None));
    assert!(parse_message(
        "sshd-auth",
        Some(1),
        "Connection closed by authenticating user r 1.2.3.4 port 4"
    )
    .is_some());
    assert!(parse_message(
        "cron",
        Some(1),
        "Accepted password for r from 1.2.3.4 port 4 ssh2"
    )
    .is_none());
}

#[test]
fn timestamps() {
    let l = parse_line(
        "2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Accepted password for root from 192.0.2.1 port 51234 ssh2",
    )
    .unwrap();
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(ms(l.time.unwrap()), 1795749121123);
    assert_eq!(
        ms(parse_rfc3339("2026-11-27T03:12:01+01:00").unwrap()),
        1795745521000
    );
    assert_eq!(
        ms(parse_rfc3339("2026-11-27T02:12:01Z").unwrap()),
        1795745521000
    );
    assert_eq!(
        ms(parse_rfc3339("2026-11-27T03:12:01.5+0100").unwrap()),
        1795745521500
    );
    assert!(parse_rfc3339("2026-13-27T03:12:01Z").is_none());
    assert!(parse_rfc3339("2026-11-27T03:12:01").is_none());

    // Syslog time: local time, year from "now", a December line read on
    // January 1st belongs to the previous year.
    let now = UNIX_EPOCH + Duration::from_secs(1798761600); // 2027-01-01T00:00:00Z
    let t = parse_syslog_time("Dec 31 23:59:59", now).unwrap();
    let back = now.duration_since(t).unwrap_or_default();
    assert!(back < Duration::from_secs(2 * 86400), "{t:?}");
    let t1 = parse_syslog_time("Nov  7 03:12:01", now).unwrap();
    let t2 = parse_syslog_time("Nov 17 03:12:01", now).unwrap();
    assert_eq!(
        t2.duration_since(t1).unwrap(),
        Duration::from_secs(10 * 86400)
    );
    assert!(parse_syslog_time("Foo 17 03:12:01", now).is_none());
    assert!(parse_syslog_time("Nov 17 25:12:01", now).is_none());
}

#[test]
fn timestamps_with_multibyte_characters_do_not_panic() {
    // Found by the auth_log fuzz target: byte offsets inside 'Γ'.
    let crash: &[u8] = &[
        50, 48, 50, 54, 45, 49, 50, 45, 50, 52, 84, 52, 51, 58, 48, 50, 58, 48, 206, 147, 61, 0, 0,
        0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 113, 97, 255, 118,
    ];
    assert!(parse_line(&kestrel_event::lossless_string(crash)).is_none());
    for line in [
        "2026-12-01T23:40:0Γ+00:00 h sshd[1]: Invalid user a from 1.2.3.4 port 5",
        "2026-12-01T23:40:03+aΓb h sshd[1]: Invalid user a from 1.2.3.4 port 5",
        "2026-12-01T23:40:03.5+Γ:Γ h sshd[1]: Invalid user a from 1.2.3.4 port 5",
    ] {
        assert_eq!(parse_line(line).unwrap().time, None, "{line}");
    }
}

#[test]
fn event_fields() {
    let l = parse_line(
        "2026-11-27T03:12:01.123456+00:00 deb12 sshd[3001]: Failed password for invalid user x from 1.2.3.4 port 22 ssh2 from 10.0.0.9 port 5555 ssh2",
    )
    .unwrap();
    let e = to_event(&l, &Host::fixed("deb12", "192.168.0.2"));
    let mut out = Vec::new();
    e.write_json_line(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"data_type\":\"1001\",\"status\":\"Failed\",\"type\":\"password\",\"user_exsit\":\"false\",\
         \"user\":\"x from 1.2.3.4 port 22 ssh2\",\"from_ip\":\"10.0.0.9\",\"port\":\"5555\",\
         \"processor\":\"ssh2\",\"time\":\"1795749121123\",\"local_ip\":\"192.168.0.2\",\"hostname\":\"deb12\"}\n"
    );
    let l = parse_message(
        "sshd",
        Some(1),
        "Accepted publickey for root from ::ffff:1.2.3.4 port 22 ssh2: RSA SHA256:x",
    )
    .unwrap();
    let e = to_event(&l, &Host::fixed("h", ""));
    assert_eq!(e.get("status"), Some("Success"));
    assert_eq!(e.get("user_exsit"), Some("true"));
    assert_eq!(e.get("from_ip"), Some("::ffff:1.2.3.4"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let t: u128 = e.get("time").unwrap().parse().unwrap();
    assert!(t.abs_diff(now) < 60_000);
}

// ---------------------------------------------------------------- follower

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

fn opts(dir: &Path) -> FollowerOptions {
    FollowerOptions {
        state_path: Some(dir.join("state.json")),
        start_at_end: false,
        ..FollowerOptions::default()
    }
}

#[test]
fn follow_append_and_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert!(f.poll().unwrap().is_empty()); // no file yet
    append(&log, b"a\nb\r\n");
    assert_eq!(f.poll().unwrap(), ["a", "b"]);
    append(&log, b"c\npar");
    assert_eq!(f.poll().unwrap(), ["c"]);
    append(&log, b"tial\n\xff\n");
    assert_eq!(f.poll().unwrap(), ["partial", "\\xff"]);
    assert!(f.poll().unwrap().is_empty());
}

#[test]
fn follow_start_at_end_without_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, b"old\n");
    let mut f = LogFollower::open(&log, FollowerOptions::default()).unwrap();
    assert!(f.poll().unwrap().is_empty());
    append(&log, b"new\n");
    assert_eq!(f.poll().unwrap(), ["new"]);
}

#[test]
fn follow_rename_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, b"a\nb\n");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(f.poll().unwrap(), ["a", "b"]);
    // Written to the old file after our last poll, then rotated.
    append(&log, b"c\nd");
    fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
    append(&dir.path().join("auth.log.1"), b"\n");
    append(&log, b"e\nf\n");
    assert_eq!(f.poll().unwrap(), ["c", "d", "e", "f"]);
    append(&log, b"g\n");
    assert_eq!(f.poll().unwrap(), ["g"]);
}

#[test]
fn follow_copytruncate() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("secure");
    append(&log, b"one\ntwo\nthree\n");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(f.poll().unwrap().len(), 3);
    fs::copy(&log, dir.path().join("secure-1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, b"x\n");
    assert_eq!(f.poll().unwrap(), ["x"]);
    append(&log, b"y\n");
    assert_eq!(f.poll().unwrap(), ["y"]);
}

#[test]
fn follow_resumes_from_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, b"a\nb\n");
    {
        let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
        assert_eq!(f.poll().unwrap(), ["a", "b"]);
        append(&log, b"c\npar");
        assert_eq!(f.poll().unwrap(), ["c"]);
    }
    assert!(dir.path().join("state.json").exists());
    assert!(!dir.path().join("state.json.tmp").exists());
    append(&log, b"tial\n");
    {
        // Nothing repeated, nothing lost; a default (start at end) follower
        // still resumes from the state.
        let o = FollowerOptions {
            state_path: Some(dir.path().join("state.json")),
            ..FollowerOptions::default()
        };
        let mut f = LogFollower::open(&log, o).unwrap();
        assert_eq!(f.poll().unwrap(), ["partial"]);
        assert!(f.poll().unwrap().is_empty());
        append(&log, b"d\n");
    }
    // Rotated while not running: the old file is finished first.
    fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
    append(&log, b"e\n");
    {
        let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
        assert_eq!(f.poll().unwrap(), ["d", "e"]);
    }
    {
        let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
        assert!(f.poll().unwrap().is_empty());
        append(&log, b"f\n");
        assert_eq!(f.poll().unwrap(), ["f"]);
    }
    // Truncated while not running: start over.
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, b"g\n");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(f.poll().unwrap(), ["g"]);
}

#[test]
fn follow_skips_huge_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    let big = vec![b'x'; 1024 * 1024];
    append(&log, b"a\n");
    append(&log, &big);
    assert_eq!(f.poll().unwrap(), ["a"]);
    assert_eq!(f.skipped_lines(), 1);
    append(&log, &big);
    drop(f);
    // A restart in the middle of the long line keeps skipping it.
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    append(&log, b"tail of the big line\nb\n");
    append(&log, &big);
    append(&log, b"\nc\n");
    assert_eq!(f.poll().unwrap(), ["b", "c"]);
    assert_eq!(f.skipped_lines(), 1);
    assert_eq!((f.oversize_lines(), f.partial_lines()), (1, 0));
}

/// Truncates `path` in place, as logrotate's `copytruncate` does.
fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[test]
fn follow_truncated_and_refilled_while_stopped() {
    // Refilled past the saved offset: the size passes, the head does not.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(
        &log,
        b"Nov 27 03:00:00 h sshd[1]: one\nNov 27 03:00:01 h sshd[1]: two\n",
    );
    {
        let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
        assert_eq!(f.poll().unwrap().len(), 2);
    }
    truncate(&log);
    let refill =
        b"Nov 27 04:00:00 h sshd[2]: genuine\nNov 27 04:00:01 h sshd[2]: Invalid user xx forged\n";
    append(&log, refill);
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(
        f.poll().unwrap(),
        [
            "Nov 27 04:00:00 h sshd[2]: genuine",
            "Nov 27 04:00:01 h sshd[2]: Invalid user xx forged"
        ]
    );
    assert_eq!((f.truncations(), f.partial_lines()), (1, 0));
}

#[test]
fn follow_truncated_and_refilled_between_polls() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, b"first line\nsecond line\n");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(f.poll().unwrap().len(), 2);
    truncate(&log);
    append(&log, b"new one\nnew two, longer than the old\n");
    assert_eq!(
        f.poll().unwrap(),
        ["new one", "new two, longer than the old"]
    );
    assert_eq!(f.truncations(), 1);
    // Past the first KiB the head is still what is compared.
    let long: String = (0..100).map(|i| format!("line {i:04}\n")).collect();
    append(&log, long.as_bytes());
    assert_eq!(f.poll().unwrap().len(), 100);
    truncate(&log);
    append(&log, long.replace("line", "LINE").as_bytes());
    append(&log, b"more\n");
    let got = f.poll().unwrap();
    assert_eq!((got.len(), got[0].as_str()), (101, "LINE 0000"));
    assert_eq!(f.truncations(), 2);
}

#[test]
fn follow_never_resumes_mid_line() {
    // A saved offset that does not follow a newline (a state from before
    // head checks, or for other bytes): the rest of that line is skipped
    // and counted, not parsed.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, b"aaaa\nbbbb\n");
    let st = dir.path().join("state.json");
    let meta = fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    fs::write(
        &st,
        format!(
            r#"{{"path":"{}","dev":{},"inode":{},"offset":7}}"#,
            log.display(),
            meta.dev(),
            meta.ino()
        ),
    )
    .unwrap();
    append(&log, b"cccc\n");
    let mut f = LogFollower::open(&log, opts(dir.path())).unwrap();
    assert_eq!(f.poll().unwrap(), ["cccc"]);
    assert_eq!((f.partial_lines(), f.skipped_lines()), (1, 1));
}

#[test]
fn follow_small_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut o = opts(dir.path());
    o.max_batch = 7;
    let mut f = LogFollower::open(&log, o).unwrap();
    let want: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    append(&log, (want.join("\n") + "\n").as_bytes());
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(f.poll().unwrap());
    }
    assert_eq!(got, want);
}

// ----------------------------------------------------------------- journal

const J_ACCEPT: &str = r#"{"__CURSOR":"s=1;i=10","__REALTIME_TIMESTAMP":"1795749121123456","_PID":"4001","_UID":"0","_EXE":"/usr/lib/openssh/sshd-session","_COMM":"sshd-session","SYSLOG_IDENTIFIER":"sshd-session","MESSAGE":"Accepted publickey for root from 10.0.0.1 port 5000 ssh2: ED25519 SHA256:abc"}"#;
const J_OTHER: &str = r#"{"__CURSOR":"s=1;i=11","__REALTIME_TIMESTAMP":"1795749121200000","_PID":"4001","_UID":"0","_EXE":"/usr/lib/openssh/sshd-session","_COMM":"sshd-session","SYSLOG_IDENTIFIER":"sshd-session","MESSAGE":"pam_unix(sshd:session): session opened for user root(uid=0) by root(uid=0)"}"#;
const J_FAILED: &str = r#"{"__CURSOR":"s=1;i=12","__REALTIME_TIMESTAMP":"1795749122000000","_PID":"812","_UID":"0","_SYSTEMD_UNIT":"ssh.service","_COMM":"sshd","MESSAGE":"Failed password for invalid user ad min from 2001:db8::7 port 40000 ssh2"}"#;

#[test]
fn journal_json_lines() {
    let e = parse_journal_json(J_ACCEPT).unwrap();
    assert_eq!(e.cursor.as_deref(), Some("s=1;i=10"));
    let l = e.login.unwrap();
    assert_eq!(
        (l.status, l.method.as_str(), l.user.as_str()),
        (Status::Success, "publickey", "root")
    );
    assert_eq!(l.pid, Some(4001));
    assert_eq!(
        l.time
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
        1795749121123456
    );
    let e = parse_journal_json(J_OTHER).unwrap();
    assert_eq!((e.cursor.as_deref(), e.login), (Some("s=1;i=11"), None));
    // No SYSLOG_IDENTIFIER: _COMM is used.
    let l = parse_journal_line(J_FAILED).unwrap();
    assert_eq!((l.user.as_str(), l.user_exists), ("ad min", false));
    assert_eq!(l.from_ip, "2001:db8::7".parse::<IpAddr>().unwrap());
    // MESSAGE with invalid UTF-8 comes as a byte array.
    let mut bytes: Vec<u8> = b"Invalid user ".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b" from 1.2.3.4 port 9");
    let arr: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    let line = format!(
        r#"{{"__CURSOR":"c","SYSLOG_IDENTIFIER":"sshd","_UID":"0","_EXE":"/usr/sbin/sshd","_PID":"5","MESSAGE":[{}]}}"#,
        arr.join(",")
    );
    let l = parse_journal_line(&line).unwrap();
    assert_eq!((l.user.as_str(), l.port, l.time), ("\\xff", 9, None));
    // Other programs, broken lines.
    assert!(parse_journal_line(r#"{"SYSLOG_IDENTIFIER":"sudo","MESSAGE":"Accepted password for r from 1.2.3.4 port 1 ssh2"}"#).is_none());
    assert!(parse_journal_json("not json").is_none());
    assert!(parse_journal_json("[1,2]").is_none());
    assert!(parse_journal_json(r#"{"MESSAGE":null}"#)
        .unwrap()
        .login
        .is_none());
}

#[test]
fn journal_entries_not_from_sshd_are_rejected() {
    let forged = |extra: &str| {
        format!(
            r#"{{"__CURSOR":"f","_COMM":"sshd","SYSLOG_IDENTIFIER":"sshd",{extra}"MESSAGE":"Accepted password for root from 6.6.6.6 port 22 ssh2"}}"#
        )
    };
    for extra in [
        // A user's process named sshd.
        r#""_UID":"1000","_EXE":"/home/u/sshd","#,
        // A user's process inside sshd's unit (no pam_systemd).
        r#""_UID":"1000","_SYSTEMD_UNIT":"ssh.service","#,
        r#""_UID":"1000","_EXE":"/usr/sbin/sshd","#,
        // Root, but another program (a set-user-ID one run under the name
        // sshd) or a copy outside the system directories.
        r#""_UID":"0","_EXE":"/usr/bin/sudo","#,
        r#""_UID":"0","_EXE":"/tmp/x/sshd","#,
        r#""_UID":"0","_SYSTEMD_UNIT":"user@1000.service","#,
        // No sender fields at all.
        "",
    ] {
        let e = parse_journal_json(&forged(extra)).unwrap();
        assert!(e.rejected && e.login.is_none(), "{extra}");
        assert_eq!(e.cursor.as_deref(), Some("f"));
    }
    for extra in [
        r#""_UID":"0","_EXE":"/usr/sbin/sshd","#,
        r#""_UID":"0","_EXE":"/usr/libexec/openssh/sshd-session","#,
        r#""_UID":"0","_SYSTEMD_UNIT":"sshd.service","#,
        r#""_UID":"0","_SYSTEMD_UNIT":"ssh@3-127.0.0.1:22-127.0.0.1:5000.service","#,
    ] {
        let e = parse_journal_json(&forged(extra)).unwrap();
        assert!(!e.rejected && e.login.is_some(), "{extra}");
    }
}

#[test]
fn journalctl_arguments() {
    let a = journalctl_args(None);
    assert!(a.iter().any(|x| x == "--lines=0"));
    assert!(a.ends_with(&[
        "_COMM=sshd".to_string(),
        "+".to_string(),
        "_COMM=sshd-session".to_string(),
        "+".to_string(),
        "_COMM=sshd-auth".to_string()
    ]));
    let a = journalctl_args(Some("s=1;i=2"));
    assert!(a.iter().any(|x| x == "--after-cursor=s=1;i=2"));
    assert!(!a.iter().any(|x| x == "--lines=0"));
}

#[test]
fn journal_source_with_fake_journalctl() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("journalctl");
    let canned = dir.path().join("canned");
    let forged = r#"{"__CURSOR":"s=1;i=11b","_COMM":"sshd","_UID":"1000","MESSAGE":"Accepted password for root from 6.6.6.6 port 22 ssh2"}"#;
    fs::write(
        &canned,
        format!("{J_ACCEPT}\n{J_OTHER}\n{forged}\nnoise\n{J_FAILED}\n"),
    )
    .unwrap();
    let args = dir.path().join("args");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ncat '{}'\n",
            args.display(),
            canned.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let cursor = dir.path().join("cursor");
    let o = JournalOptions {
        journalctl: script.clone(),
        cursor_path: Some(cursor.clone()),
        ..JournalOptions::default()
    };
    let mut src = JournalSource::spawn(o.clone()).unwrap();
    let a = src.next_login().unwrap().unwrap();
    assert_eq!(a.status, Status::Success);
    assert_eq!(fs::read_to_string(&cursor).unwrap(), "s=1;i=10");
    let b = src.next_login().unwrap().unwrap();
    assert_eq!(b.user, "ad min");
    assert_eq!(src.rejected(), 1);
    assert_eq!(fs::read_to_string(&cursor).unwrap(), "s=1;i=12");
    assert!(src.next_login().unwrap().is_none());
    drop(src);
    assert!(fs::read_to_string(&args).unwrap().contains("--lines=0\n"));
    // A restart resumes after the saved cursor.
    let mut src = JournalSource::spawn(o).unwrap();
    while src.next_login().unwrap().is_some() {}
    drop(src);
    assert!(fs::read_to_string(&args)
        .unwrap()
        .contains("--after-cursor=s=1;i=12\n"));
}
