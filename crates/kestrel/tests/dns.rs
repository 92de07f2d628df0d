//! DNS answers (data_type 601) from real resolvers against a local test
//! responder. The lookups run in a mount namespace whose /etc/resolv.conf
//! points at the responder: the host's stays untouched. Needs root.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::support::{field, marker, Agent};
use kestrel_decode::dns;

/// Answers A queries for names starting with "ok-" with 192.0.2.99 (a
/// documentation address: data only, nothing is ever sent to it), AAAA
/// queries for them with no records, and everything else with NXDOMAIN.
fn responder(addr: &str) -> SocketAddr {
    let sock = UdpSocket::bind(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let Ok(m) = dns::parse(q) else { continue };
            let ok = m
                .query
                .split('.')
                .next()
                .is_some_and(|l| l.starts_with("ok-"));
            let question_end = 12 + q[12..].iter().position(|&b| b == 0).unwrap() + 1 + 4;
            let mut a = q[..question_end].to_vec();
            a[2] = 0x81 | (q[2] & 0x01); // response, keep RD
            a[3] = if ok { 0x80 } else { 0x83 }; // RA, NOERROR or NXDOMAIN
            if ok && m.qtype == 1 {
                a[7] = 1; // one answer
                a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
            }
            let _ = sock.send_to(&a, peer);
        }
    });
    local
}

/// A scratch directory named by a fresh tag (no dashes: it goes into DNS
/// names) holding a resolv.conf that names only `nameserver`, for a
/// lookup run in a mount namespace with it bound over /etc/resolv.conf.
fn resolv_conf(tag: &str, nameserver: &str) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let tag = marker(tag).replace('-', "");
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {nameserver}\noptions timeout:2 attempts:1\n"),
    )
    .unwrap();
    (tag, dir, resolv)
}

#[test]
fn dns_answers_from_getent_getaddrinfo_and_dig() {
    let agent = Agent::start(&[]);
    responder("127.0.0.2:53");
    responder("[::1]:53");
    let (tag, dir, resolv) = resolv_conf("dns", "127.0.0.2");
    let before = std::fs::read("/etc/resolv.conf").unwrap();
    let script = format!(
        "mount --bind {r} /etc/resolv.conf && \
         getent hosts ok-getent.{tag}.test; \
         getent ahosts nx-gai.{tag}.test; \
         dig +tries=1 +time=2 @127.0.0.2 ok-dig.{tag}.test; \
         dig +tries=1 +time=2 @::1 nx-dig6.{tag}.test; true",
        r = resolv.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.0.2.99"),
        "getent resolved through the responder: {out:?}"
    );
    assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), before);

    // By executable: dig receives on a thread named "isc-net-0000".
    let answer = |name: String, exe: &'static str| {
        move |e: &serde_json::Value| {
            e["data_type"] == "601" && e["query"].as_str() == Some(&name) && e["exe"] == exe
        }
    };
    let ev = agent.wait_for(
        "getent's answer",
        answer(format!("ok-getent.{tag}.test"), "/usr/bin/getent"),
    );
    assert_eq!(field(&ev, "qr"), "1");
    assert_eq!(field(&ev, "rcode"), "0");
    assert_eq!(field(&ev, "opcode"), "0");
    assert_eq!(field(&ev, "dip"), "127.0.0.2");
    assert_eq!(field(&ev, "dport"), "53");
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    assert_ne!(field(&ev, "sport"), "0");
    assert_eq!(field(&ev, "sa_family"), "2");
    assert_eq!(field(&ev, "comm"), "getent");
    // The address the process was given (its AAAA answer, if it asked,
    // has none).
    let a_answer = |e: &serde_json::Value| e["qtype"] == "1";
    let ev = if a_answer(&ev) {
        ev
    } else {
        agent.wait_for("getent's A answer", |e| {
            answer(format!("ok-getent.{tag}.test"), "/usr/bin/getent")(e) && a_answer(e)
        })
    };
    assert_eq!(field(&ev, "answers"), "192.0.2.99");
    assert_eq!(field(&ev, "answers_truncated"), "false");
    let ev = agent.wait_for(
        "getaddrinfo's NXDOMAIN",
        answer(format!("nx-gai.{tag}.test"), "/usr/bin/getent"),
    );
    assert_eq!(field(&ev, "rcode"), "3");
    assert_eq!(field(&ev, "answers"), "");
    let ev = agent.wait_for(
        "dig's answer",
        answer(format!("ok-dig.{tag}.test"), "/usr/bin/dig"),
    );
    assert_eq!(field(&ev, "rcode"), "0");
    assert_eq!(field(&ev, "qtype"), "1");
    assert_eq!(field(&ev, "answers"), "192.0.2.99");
    let ev = agent.wait_for(
        "dig over IPv6",
        answer(format!("nx-dig6.{tag}.test"), "/usr/bin/dig"),
    );
    assert_eq!(field(&ev, "rcode"), "3");
    assert_eq!(field(&ev, "dip"), "::1");
    assert_eq!(field(&ev, "sa_family"), "10");
    let c = agent.stop();
    assert_eq!(c["dns_lost"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_udp_traffic_is_filtered_in_the_kernel() {
    let agent = Agent::start(&[]);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    // A well-formed DNS answer, but not from port 53.
    let msg = dns::build::message(7, 0x8180, &marker("notdns"), 1);
    for _ in 0..50 {
        tx.send_to(&msg, rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 512];
        rx.recv_from(&mut buf).unwrap();
    }
    // One real answer afterwards, to know the earlier ones had their chance.
    responder("127.0.0.3:53");
    let q = UdpSocket::bind("127.0.0.1:0").unwrap();
    let name = marker("realdns");
    q.send_to(&dns::build::message(8, 0x0100, &name, 1), "127.0.0.3:53")
        .unwrap();
    let mut buf = [0u8; 512];
    q.recv_from(&mut buf).unwrap();
    agent.wait_for("the real answer", |e| {
        e["query"].as_str() == Some(name.as_str())
    });
    let c = agent.stop();
    assert_eq!(
        c["dns_submitted"], 1,
        "only the datagram from port 53: {c:?}"
    );
    let _ = port;
}

/// Go's resolver reads its answers with read(2) from a connected UDP
/// socket; readv(2) is the same path with a vector. Both are seen (through
/// sock:sock_recv_length), once each, with the socket's descriptor.
#[test]
fn answers_taken_with_read_and_readv() {
    use std::os::fd::AsRawFd;
    let agent = Agent::start(&[]);
    responder("127.0.0.4:53");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect("127.0.0.4:53").unwrap();
    let fd = sock.as_raw_fd();
    let (by_read, by_readv) = (
        format!("ok-{}", marker("read")),
        format!("ok-{}", marker("readv")),
    );
    let mut buf = [0u8; 512];
    sock.send(&dns::build::message(9, 0x0100, &by_read, 1))
        .unwrap();
    // SAFETY: read into a buffer this test owns, on its own socket.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 12, "read: {}", std::io::Error::last_os_error());
    sock.send(&dns::build::message(10, 0x0100, &by_readv, 1))
        .unwrap();
    let iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: as above, one vector over the same buffer.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 1) };
    assert!(n > 12, "readv: {}", std::io::Error::last_os_error());

    for name in [&by_read, &by_readv] {
        let ev = agent.wait_for(name, |e| {
            e["data_type"] == "601" && e["query"].as_str() == Some(name.as_str())
        });
        assert_eq!(field(&ev, "rcode"), "0");
        assert_eq!(field(&ev, "dip"), "127.0.0.4");
        assert_eq!(field(&ev, "dport"), "53");
        assert_eq!(field(&ev, "fd"), fd.to_string());
        assert_eq!(field(&ev, "tgid"), std::process::id().to_string());
    }
    let c = agent.stop();
    assert_eq!(c["dns_submitted"], 2, "each answer once: {c:?}");
}

/// A real Go program (tests/go-resolver, built here with the Debian Go
/// toolchain the test dependencies install) resolving through Go's own
/// resolver: its A and AAAA answers are seen.
#[test]
fn answers_to_a_go_program() {
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-resolver");
    std::fs::create_dir_all(&out_dir).unwrap();
    let bin = out_dir.join("go-resolver");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-resolver/main.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src)
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOPATH", out_dir.join("gopath"))
        .env("HOME", &out_dir)
        .output()
        .expect("go (golang-go, from scripts/install-deps --test)");
    assert!(built.status.success(), "go build: {built:?}");

    let agent = Agent::start(&[]);
    responder("127.0.0.6:53");
    let (tag, dir, resolv) = resolv_conf("godns", "127.0.0.6");
    let name = format!("ok-go.{tag}.test");
    let script = format!(
        "mount --bind {r} /etc/resolv.conf && {b} {name}",
        r = resolv.display(),
        b = bin.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("GODEBUG", "netdns=go")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.0.2.99"),
        "the Go program resolved through the responder: {out:?}"
    );
    let exe = bin.to_str().unwrap();
    for qtype in ["1", "28"] {
        let ev = agent.wait_for(&format!("the Go program's answer, type {qtype}"), |e| {
            e["data_type"] == "601"
                && e["query"].as_str() == Some(name.as_str())
                && e["qtype"] == qtype
        });
        assert_eq!(field(&ev, "exe"), exe);
        assert_eq!(field(&ev, "dip"), "127.0.0.6");
        assert_eq!(field(&ev, "rcode"), "0");
    }
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
