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
