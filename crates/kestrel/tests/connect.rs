//! Connect events (data_type 42) from the real kernel. Needs root.

use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::support::{field, Agent, PERL_CONN};
use serde_json::Value;

fn is_connect_to(e: &Value, port: u16) -> bool {
    e["data_type"] == "42"
        && e["dport"].as_str() == Some(&port.to_string())
        && e["tgid"].as_str() == Some(&std::process::id().to_string())
}

#[test]
fn tcp_connects_v4_open_closed_and_v6() {
    let agent = Agent::start(&[]);

    // Open port: res 0, both ends exact.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = s.local_addr().unwrap();
    let ev = agent.wait_for("connect to an open port", |e| is_connect_to(e, port));
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "sa_family"), "2");
    assert_eq!(field(&ev, "dip"), "127.0.0.1");
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    assert_eq!(field(&ev, "sport"), local.port().to_string());
    assert_eq!(
        field(&ev, "exe"),
        std::env::current_exe().unwrap().to_str().unwrap()
    );
    assert_eq!(field(&ev, "tgid"), std::process::id().to_string());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    assert_eq!(field(&ev, "fd"), fd.to_string());
    drop(s);

    // Closed port: refused, and the source port the SYN left from.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = TcpStream::connect(("127.0.0.1", closed)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    let ev = agent.wait_for("connect to a closed port", |e| is_connect_to(e, closed));
    assert_eq!(field(&ev, "res"), (-libc::ECONNREFUSED).to_string());
    assert_eq!(field(&ev, "dip"), "127.0.0.1");
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    let sport: u16 = field(&ev, "sport").parse().unwrap();
    assert_ne!(sport, 0, "the refused SYN had a source port");
    assert_eq!(field(&ev, "sa_family"), "2");

    // IPv6 loopback.
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let port6 = l6.local_addr().unwrap().port();
    let s6 = TcpStream::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port6))).unwrap();
    let ev = agent.wait_for("connect over IPv6", |e| is_connect_to(e, port6));
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "sa_family"), "10");
    assert_eq!(field(&ev, "dip"), "::1");
    assert_eq!(field(&ev, "sip"), "::1");
    assert_eq!(
        field(&ev, "sport"),
        s6.local_addr().unwrap().port().to_string()
    );
    agent.stop();
}

#[test]
fn non_blocking_connect_reports_einprogress() {
    let agent = Agent::start(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // SAFETY: plain socket syscalls on a descriptor this test owns.
    let (rc, errno, sport) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let errno = *libc::__errno_location();
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        libc::getsockname(fd, (&mut local as *mut libc::sockaddr_in).cast(), &mut len);
        libc::close(fd);
        (rc, errno, u16::from_be(local.sin_port))
    };
    let expected = if rc == 0 { 0 } else { -errno };
    let ev = agent.wait_for("the non-blocking connect", |e| is_connect_to(e, port));
    assert_eq!(field(&ev, "res"), expected.to_string());
    // On loopback the kernel answers EINPROGRESS: the case this covers.
    assert_eq!(expected, -libc::EINPROGRESS, "connect returned {rc}");
    assert_eq!(field(&ev, "sport"), sport.to_string());
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    agent.stop();
}

/// A process whose parent exits (it is reparented) and which then starts a
/// new session must be reported with its new parent, then its new session,
/// at the connects in between (the kernel side caches part of a process's
/// identity; this keeps ppid, pgid and sid honest if it ever caches them).
/// Perl forks the subject itself so the test controls when its parent exits.
#[test]
fn ppid_pgid_and_sid_follow_reparenting_and_setsid() {
    let agent = Agent::start(&[]);
    let body = r#"
        pipe(my $r, my $w) or die "pipe: $!";
        my $p = $$;
        my $c = fork() // die "fork: $!";
        if ($c) { close $w; <$r>; exit 0; }
        close $r;
        conn();
        print "$$ $p\n";
        close $w;
        select(undef, undef, undef, 0.02) while getppid() == $p;
        conn();
        my $pp = getppid();
        POSIX::setsid() or die "setsid: $!";
        conn();
        print "$pp\n";
        exec "/bin/true", "kestrel-setsid" or die "exec: $!";
    "#;
    let script = format!("{PERL_CONN}{body}");
    let out = std::process::Command::new("perl")
        .arg("-e")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(nums.len(), 3, "perl printed {text:?}");
    let (child, parent, reaper) = (nums[0], nums[1], nums[2]);
    assert_ne!(reaper, parent);

    // The exec that ends it names the session (connect records have no
    // sid field).
    let exec = agent.wait_for("the exec after setsid", |e| {
        e["data_type"] == "59" && e["tgid"] == child && e["comm"] == "true"
    });
    assert_eq!(field(&exec, "sid"), child, "after setsid");
    assert_eq!(field(&exec, "pgid"), child, "after setsid");
    assert_eq!(field(&exec, "ppid"), reaper);
    let conns: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "42" && e["tgid"] == child)
        .collect();
    assert_eq!(conns.len(), 3, "{conns:#?}");
    assert_eq!(field(&conns[0], "ppid"), parent);
    assert_eq!(field(&conns[1], "ppid"), reaper, "after its parent exited");
    assert_ne!(field(&conns[1], "pgid"), child);
    assert_eq!(field(&conns[2], "ppid"), reaper);
    assert_eq!(field(&conns[2], "pgid"), child, "after setsid");
    agent.stop();
}

/// UDP datagrams sent to an address without connect(2) (sendto, sendmsg;
/// IPv4 and IPv6) are data_type 42 events, one per socket and destination
/// however many datagrams go there; a connected socket sending to its peer
/// is its connect event alone.
#[test]
fn udp_sends_without_connect_are_reported_once_per_destination() {
    use std::net::UdpSocket;
    let agent = Agent::start(&[]);
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let (flood, msg4) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (to6, msg6) = (
        UdpSocket::bind("[::1]:0").unwrap(),
        UdpSocket::bind("[::1]:0").unwrap(),
    );
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pf, pm4, p6, pm6, pp) = (
        port(&flood),
        port(&msg4),
        port(&to6),
        port(&msg6),
        port(&peer),
    );
    let script = format!(
        r#"
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10000):
    s.sendto(b"x", ("127.0.0.1", {pf}))
s.sendmsg([b"y"], [], 0, ("127.0.0.1", {pm4}))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.sendto(b"z", ("::1", {p6}))
s6.sendmsg([b"w"], [], 0, ("::1", {pm6}))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(("127.0.0.1", {pp}))
for i in range(100):
    c.sendto(b"a", ("127.0.0.1", {pp}))
print(os.getpid(), s.getsockname()[1])
"#
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let mut words = out.split_whitespace();
    let (pid, sport) = (words.next().unwrap(), words.next().unwrap());
    let from_python = |e: &Value, port: u16| {
        e["data_type"] == "42" && e["tgid"] == pid && e["dport"].as_str() == Some(&port.to_string())
    };
    agent.wait_for("the connected socket's connect", |e| from_python(e, pp));
    // Give the flood's stragglers, if any were reported, time to arrive.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = agent.events();
    let only = |port: u16, what: &str| -> Value {
        let got: Vec<&Value> = events.iter().filter(|e| from_python(e, port)).collect();
        assert_eq!(got.len(), 1, "{what}: {got:?}");
        got[0].clone()
    };
    let ev = only(pf, "10000 datagrams to one destination");
    assert_eq!(field(&ev, "connect_type"), "udp_sendto");
    assert_eq!(field(&ev, "dip"), "127.0.0.1");
    assert_eq!(field(&ev, "sa_family"), "2");
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "sport"), sport);
    assert_eq!(field(&ev, "comm"), "python3");
    let ev = only(pm4, "sendmsg over IPv4");
    assert_eq!(field(&ev, "connect_type"), "udp_sendmsg");
    assert_eq!(field(&ev, "dip"), "127.0.0.1");
    let ev = only(p6, "sendto over IPv6");
    assert_eq!(field(&ev, "connect_type"), "udp_sendto");
    assert_eq!(field(&ev, "dip"), "::1");
    assert_eq!(field(&ev, "sa_family"), "10");
    let ev = only(pm6, "sendmsg over IPv6");
    assert_eq!(field(&ev, "connect_type"), "udp_sendmsg");
    assert_eq!(field(&ev, "dip"), "::1");
    let ev = only(pp, "sendto a connected socket's own peer");
    assert_eq!(field(&ev, "connect_type"), "connect");
    agent.stop();
}

/// sendmmsg sends many datagrams in one call, each with its own address:
/// every destination is reported, the twelfth message's as well as the
/// first's, once each.
#[test]
fn udp_sendmmsg_reports_each_destination_once() {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    let agent = Agent::start(&[]);
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let to = |port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let mut addrs: Vec<libc::sockaddr_in> =
        (0..12).map(|i| to(if i < 11 { pa } else { pb })).collect();
    let mut data = *b"m";
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: plain structs, filled in below.
    let mut msgs: Vec<libc::mmsghdr> = (0..12).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, sa) in msgs.iter_mut().zip(addrs.iter_mut()) {
        m.msg_hdr.msg_name = (sa as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // SAFETY: msgs, addrs, iov and data outlive the call.
    let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), 12, 0) };
    assert_eq!(n, 12, "sendmmsg: {}", std::io::Error::last_os_error());
    let fd = s.as_raw_fd().to_string();
    let mine = |e: &Value, port: u16| {
        is_connect_to(e, port) && e["fd"] == fd.as_str() && e["connect_type"] == "udp_sendmmsg"
    };
    agent.wait_for("the twelfth message's destination", |e| mine(e, pb));
    agent.wait_for("the first message's destination", |e| mine(e, pa));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = agent.events();
    assert_eq!(events.iter().filter(|e| mine(e, pa)).count(), 1);
    assert_eq!(events.iter().filter(|e| mine(e, pb)).count(), 1);
    agent.stop();
}
