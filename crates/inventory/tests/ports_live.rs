//! `ports::collect` against sockets this test opens, and the /proc/net
//! parser on sample text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};

use kestrel_inventory::ports;

#[test]
fn lists_own_sockets() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();

    let (sockets, warnings) = ports::collect();
    // Netlink works here, so the /proc/net fallback is not used.
    assert!(warnings.is_empty(), "{warnings:?}");
    let me = std::process::id();
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_string_lossy();

    let t = sockets
        .iter()
        .find(|s| s.proto == "tcp" && s.port == tcp_port)
        .unwrap_or_else(|| panic!("tcp {tcp_port} not in {sockets:#?}"));
    assert_eq!(t.family, 4);
    assert_eq!(t.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(t.pid, Some(me));
    assert_eq!(t.exe, exe);
    assert!(t.inode > 0);
    assert!(!t.comm.is_empty());
    assert!(!t.cmdline.is_empty());

    let u = sockets
        .iter()
        .find(|s| s.proto == "udp" && s.port == udp_port)
        .unwrap_or_else(|| panic!("udp {udp_port} not in {sockets:#?}"));
    assert_eq!(u.family, 6);
    assert_eq!(u.addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(u.pid, Some(me));
    assert_eq!(u.exe, exe);
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(t.uid, uid);
    assert_eq!(u.uid, uid);
}

const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:0008A1F5 00000000     0        0 34567 4 0000000000000000 20 4 1 10 -1
   3: garbage
";

const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 45678 1 0000000000000000 100 0 0 10 0
   1: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 56789 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 67890 1 0000000000000000 100 0 0 10 0
";

const UDP4: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 11111 2 0000000000000000 0
  101: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 22222 2 0000000000000000 0
  102: 0F02000A:A2B4 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 33333 2 0000000000000000 0
";

#[cfg(target_endian = "little")]
#[test]
fn parses_proc_net_tcp() {
    let (s, w) = ports::parse_proc_net(TCP4, "tcp", 4);
    assert_eq!(s.len(), 2, "{s:#?}");
    assert_eq!(s[0].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(s[0].port, 631);
    assert_eq!(s[0].inode, 23456);
    assert_eq!(s[0].proto, "tcp");
    assert_eq!(s[1].addr, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(s[1].port, 22);
    assert_eq!(s[1].pid, None);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line_or_record, Some(5));

    let (s, w) = ports::parse_proc_net(TCP6, "tcp", 6);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].addr, "::1".parse::<IpAddr>().unwrap());
    assert_eq!((s[0].port, s[0].uid, s[0].family), (8080, 1000, 6));
    assert_eq!(s[1].addr, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(s[1].port, 80);
    assert_eq!(s[2].addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
}

#[cfg(target_endian = "little")]
#[test]
fn parses_proc_net_udp() {
    let (s, w) = ports::parse_proc_net(UDP4, "udp", 4);
    assert!(w.is_empty(), "{w:?}");
    // Unbound (port 0) and connected sockets are left out.
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0].addr, "127.0.0.53".parse::<IpAddr>().unwrap());
    assert_eq!((s[0].port, s[0].uid, s[0].proto), (53, 101, "udp"));
}

#[test]
fn proc_net_garbage_does_not_panic() {
    for text in [
        "",
        "\n\n",
        "x",
        "0: zz:zz 0 0A",
        "0: 0100007F:FFFFF 0:0 0A a b c 0 0 1",
    ] {
        for (p, f) in [("tcp", 4), ("udp", 6)] {
            let _ = ports::parse_proc_net(text, p, f);
        }
    }
}

/// `(proto, port)` of what `ss -Hltun` lists, or `None` without `ss`.
fn ss_ports() -> Option<std::collections::BTreeSet<(String, u16)>> {
    let out = std::process::Command::new("ss")
        .args(["-Hltun"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f.get(4)?.rsplit(':').next()?.parse().ok()?;
                Some((f[0].to_string(), port))
            })
            .filter(|(_, port)| *port != 0)
            .collect(),
    )
}

#[test]
fn host_matches_ss() {
    let Some(before) = ss_ports() else {
        eprintln!("skipping: ss is not available");
        return;
    };
    let (sockets, warnings) = ports::collect();
    let after = ss_ports().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let ours: std::collections::BTreeSet<(String, u16)> = sockets
        .iter()
        .map(|s| (s.proto.to_string(), s.port))
        .collect();
    // Sockets present before and after our dump cannot have been missed.
    for p in before.intersection(&after) {
        assert!(
            ours.contains(p),
            "{p:?} listed by ss but not in {sockets:#?}"
        );
    }
    for s in &sockets {
        eprintln!(
            "{} {}:{} uid={} pid={:?} {} [{}]",
            s.proto, s.addr, s.port, s.uid, s.pid, s.exe, s.cmdline
        );
    }
}
