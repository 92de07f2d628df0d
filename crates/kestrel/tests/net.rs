//! The listening side of sockets and signals between processes, from the
//! real kernel: bind (data_type 49), accept/accept4 (43), and kill, tkill,
//! tgkill and their kin (62 process-directed, 200 thread-directed). Needs
//! root.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};

use crate::support::{field, Agent};
use serde_json::Value;

fn me() -> String {
    std::process::id().to_string()
}

fn exe() -> String {
    std::env::current_exe()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn is_bind(e: &Value, fd: i32) -> bool {
    e["data_type"] == "49" && e["tgid"] == me().as_str() && e["fd"] == fd.to_string().as_str()
}

/// bind(2) on IPv4 and IPv6, TCP and UDP: a port 0 is reported as the port
/// the kernel chose, a wildcard address as itself; a refused bind carries
/// the address asked for and its error. A unix socket's bind is not a 49.
#[test]
fn bind_v4_v6_reports_the_bound_port_and_refusals() {
    let agent = Agent::start(&[]);

    // IPv4 TCP, port 0: the event says which port the kernel picked.
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let p4 = l4.local_addr().unwrap().port();
    let ev = agent.wait_for("the IPv4 bind", |e| is_bind(e, l4.as_raw_fd()));
    assert_eq!(field(&ev, "sa_family"), "2");
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    assert_eq!(field(&ev, "sport"), p4.to_string());
    assert_ne!(p4, 0);
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "protocol"), "6");
    assert_eq!(field(&ev, "sock_type"), "1");
    assert_eq!(field(&ev, "exe"), exe());
    // SAFETY: gettid has no preconditions.
    assert_eq!(field(&ev, "pid"), unsafe { libc::gettid() }.to_string());

    // IPv6 UDP on the wildcard address.
    let u6 = UdpSocket::bind("[::]:0").unwrap();
    let p6 = u6.local_addr().unwrap().port();
    let ev = agent.wait_for("the IPv6 bind", |e| is_bind(e, u6.as_raw_fd()));
    assert_eq!(field(&ev, "sa_family"), "10");
    assert_eq!(field(&ev, "sip"), "::");
    assert_eq!(field(&ev, "sport"), p6.to_string());
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "protocol"), "17");
    assert_eq!(field(&ev, "sock_type"), "2");

    // IPv6 TCP on ::1, a port given.
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let ev = agent.wait_for("the IPv6 loopback bind", |e| is_bind(e, l6.as_raw_fd()));
    assert_eq!(field(&ev, "sip"), "::1");
    assert_eq!(
        field(&ev, "sport"),
        l6.local_addr().unwrap().port().to_string()
    );

    // The port already taken: EADDRINUSE, with the address asked for.
    // SAFETY: plain socket calls on a descriptor this test owns.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = p4.to_be();
        sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let rc = libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, -1);
        assert_eq!(*libc::__errno_location(), libc::EADDRINUSE);
        fd
    };
    let ev = agent.wait_for("the refused bind", |e| is_bind(e, fd));
    assert_eq!(field(&ev, "res"), (-libc::EADDRINUSE).to_string());
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    assert_eq!(field(&ev, "sport"), p4.to_string());
    assert_eq!(field(&ev, "sa_family"), "2");

    // A unix socket's bind, then one more inet bind to know the agent has
    // seen everything before it: no 49 for the unix one.
    let dir = std::env::temp_dir().join(format!("kestrel-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    let last = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent.wait_for("the last bind", |e| is_bind(e, last.as_raw_fd()));
    let unix_fd = unix.as_raw_fd().to_string();
    assert!(
        !agent.events().iter().any(|e| e["data_type"] == "49"
            && e["tgid"] == me().as_str()
            && e["fd"] == unix_fd.as_str()
            && e["sa_family"] != "2"
            && e["sa_family"] != "10"),
        "a unix bind was reported"
    );
    // SAFETY: closing the descriptor made above.
    unsafe { libc::close(fd) };
    let _ = std::fs::remove_dir_all(&dir);
    agent.stop();
}

/// accept(2) and accept4(2) of IPv4 and IPv6 connections: one 43 each, with
/// Elkeid's meaning of the ends (sip/sport the client that connected,
/// dip/dport the listener's address), the new descriptor as res and the
/// listener's as fd. A failed accept (EAGAIN) and a unix socket's accept
/// are not reported.
#[test]
fn accept_and_accept4_v4_v6_report_both_ends() {
    let agent = Agent::start(&[]);
    // The listeners stay open to the end, so no other socket of this
    // process (tests run as threads of it) shares their descriptor numbers.
    let (mut fds, mut listeners) = (Vec::new(), Vec::new());
    for (addr, plain) in [
        ("127.0.0.1:0", true),
        ("127.0.0.1:0", false),
        ("[::1]:0", true),
        ("[::1]:0", false),
    ] {
        let l = TcpListener::bind(addr).unwrap();
        let local = l.local_addr().unwrap();
        let c = TcpStream::connect(local).unwrap();
        let client = c.local_addr().unwrap();
        let (new_fd, syscall) = if plain {
            // SAFETY: accept on the listener this test owns, no address.
            let fd =
                unsafe { libc::accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            (fd, "accept")
        } else {
            // std's accept is accept4(SOCK_CLOEXEC).
            let (s, peer) = l.accept().unwrap();
            assert_eq!(peer, client);
            let fd = s.as_raw_fd();
            std::mem::forget(s);
            (fd, "accept4")
        };
        let lfd = l.as_raw_fd().to_string();
        let ev = agent.wait_for(&format!("the {syscall} on {addr}"), |e| {
            e["data_type"] == "43"
                && e["tgid"] == me().as_str()
                && e["fd"] == lfd.as_str()
                && e["res"] == new_fd.to_string().as_str()
        });
        let v6 = matches!(local, SocketAddr::V6(_));
        assert_eq!(field(&ev, "sa_family"), if v6 { "10" } else { "2" });
        assert_eq!(field(&ev, "dip"), local.ip().to_string());
        assert_eq!(field(&ev, "dport"), local.port().to_string());
        assert_eq!(field(&ev, "sip"), client.ip().to_string());
        assert_eq!(field(&ev, "sport"), client.port().to_string());
        assert_eq!(field(&ev, "syscall"), syscall);
        assert_eq!(field(&ev, "exe"), exe());
        fds.push(new_fd);
        listeners.push(l);
        drop(c);
    }

    // EAGAIN from a non-blocking listener, and a unix connection accepted:
    // then one more TCP accept, after which neither may have shown up.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    assert_eq!(
        l.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    let dir = std::env::temp_dir().join(format!("kestrel-accept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ul = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    let _uc = std::os::unix::net::UnixStream::connect(dir.join("s")).unwrap();
    let (_us, _) = ul.accept().unwrap();
    l.set_nonblocking(false).unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (last, _) = l.accept().unwrap();
    let last_fd = last.as_raw_fd().to_string();
    let (lfd, ufd) = (l.as_raw_fd().to_string(), ul.as_raw_fd().to_string());
    agent.wait_for("the last accept", |e| {
        e["data_type"] == "43"
            && e["tgid"] == me().as_str()
            && e["fd"] == lfd.as_str()
            && e["res"] == last_fd.as_str()
    });
    // On the non-blocking listener, only the last accept; on the unix
    // one, nothing.
    let on = |fd: &str| -> Vec<Value> {
        agent
            .events()
            .into_iter()
            .filter(|e| e["data_type"] == "43" && e["tgid"] == me().as_str() && e["fd"] == fd)
            .collect()
    };
    let tcp = on(&lfd);
    assert_eq!(tcp.len(), 1, "the EAGAIN was reported: {tcp:#?}");
    assert_eq!(field(&tcp[0], "res"), last_fd);
    let unix = on(&ufd);
    assert!(unix.is_empty(), "the unix accept was reported: {unix:#?}");
    for fd in fds {
        // SAFETY: the accepted descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    agent.stop();
}

/// A process to send signals to, in a process group of its own: sleep(1)
/// ignores SIGWINCH, SIGURG, SIGCONT and SIGCHLD.
fn sleeper() -> Child {
    use std::os::unix::process::CommandExt;
    let child = Command::new("sleep")
        .arg("60")
        .process_group(0)
        .spawn()
        .unwrap();
    // Signalled once it runs sleep, not while it is still the forked copy
    // of this process.
    let comm = format!("/proc/{}/comm", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(std::time::Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

fn is_signal_to(e: &Value, target: u32, sig: i32) -> bool {
    (e["data_type"] == "62" || e["data_type"] == "200")
        && e["tgid"] == me().as_str()
        && e["target_pid"] == target.to_string().as_str()
        && e["sig"] == sig.to_string().as_str()
}

/// kill (62), tkill and tgkill (200), rt_sigqueueinfo, pidfd_send_signal
/// and a process group's kill (62) to another process, each with its
/// target and signal; signal 0 (a liveness probe)
/// and signals to the sender itself are not reported.
#[test]
fn kill_tkill_tgkill_to_another_process_are_reported() {
    let agent = Agent::start(&[]);
    let mut child = sleeper();
    let pid = child.id();
    let ipid = pid as i32;
    // SAFETY: signal calls with valid pids; the signals are harmless to
    // sleep(1) and to this process (default-ignored SIGWINCH, SIGURG).
    unsafe {
        // Filtered: signal 0, and signals to this very process and thread.
        assert_eq!(libc::kill(ipid, 0), 0);
        assert_eq!(libc::kill(std::process::id() as i32, libc::SIGWINCH), 0);
        assert_eq!(
            libc::syscall(
                libc::SYS_tgkill,
                std::process::id() as i32,
                libc::gettid(),
                libc::SIGURG
            ),
            0
        );
        // Reported.
        assert_eq!(libc::kill(ipid, libc::SIGWINCH), 0);
        assert_eq!(libc::syscall(libc::SYS_tkill, ipid, libc::SIGURG), 0);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        // si_signo, si_errno, si_code, then si_pid and si_uid.
        let raw = (&mut info as *mut libc::siginfo_t).cast::<i32>();
        *raw = libc::SIGURG;
        *raw.add(2) = -1; // SI_QUEUE
        *raw.add(4) = std::process::id() as i32;
        assert_eq!(
            libc::syscall(libc::SYS_rt_sigqueueinfo, ipid, libc::SIGURG, &info),
            0
        );
        // pidfd_send_signal, and a kill of its process group.
        let pidfd = libc::syscall(libc::SYS_pidfd_open, ipid, 0);
        assert!(pidfd >= 0, "{}", std::io::Error::last_os_error());
        assert_eq!(
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                libc::SIGCHLD,
                std::ptr::null::<libc::siginfo_t>(),
                0
            ),
            0
        );
        libc::close(pidfd as i32);
        assert_eq!(libc::kill(-ipid, libc::SIGCONT), 0);
        // Last, as it ends sleep: a signal it does not ignore.
        assert_eq!(
            libc::syscall(libc::SYS_tgkill, ipid, ipid, libc::SIGTERM),
            0
        );
    }
    let kill = agent.wait_for("the kill", |e| is_signal_to(e, pid, libc::SIGWINCH));
    assert_eq!(field(&kill, "data_type"), "62");
    assert_eq!(field(&kill, "syscall"), "kill");
    assert_eq!(field(&kill, "si_code"), "0");
    assert_eq!(field(&kill, "target_tgid"), pid.to_string());
    assert_eq!(field(&kill, "target_comm"), "sleep");
    assert_eq!(field(&kill, "sig_result"), "ignored");
    assert_eq!(field(&kill, "exe"), exe());
    let tkill = agent.wait_for("the tkill", |e| {
        is_signal_to(e, pid, libc::SIGURG) && e["syscall"] == "tkill"
    });
    assert_eq!(field(&tkill, "data_type"), "200");
    assert_eq!(field(&tkill, "si_code"), "-6");
    assert_eq!(field(&tkill, "target_tgid"), pid.to_string());
    let tgkill = agent.wait_for("the tgkill", |e| is_signal_to(e, pid, libc::SIGTERM));
    assert_eq!(field(&tgkill, "data_type"), "200");
    assert_eq!(field(&tgkill, "syscall"), "tgkill");
    assert_eq!(field(&tgkill, "si_code"), "-6");
    assert_eq!(field(&tgkill, "sig_result"), "delivered");
    let queued = agent.wait_for("the rt_sigqueueinfo", |e| {
        is_signal_to(e, pid, libc::SIGURG) && e["syscall"] == "rt_sigqueueinfo"
    });
    assert_eq!(field(&queued, "data_type"), "62");
    assert_eq!(field(&queued, "si_code"), "-1");

    let pidfd = agent.wait_for("the pidfd_send_signal", |e| {
        is_signal_to(e, pid, libc::SIGCHLD)
    });
    assert_eq!(field(&pidfd, "data_type"), "62");
    assert_eq!(field(&pidfd, "syscall"), "pidfd_send_signal");
    assert_eq!(field(&pidfd, "si_code"), "0");
    let group = agent.wait_for("the process group's kill", |e| {
        is_signal_to(e, pid, libc::SIGCONT)
    });
    assert_eq!(field(&group, "data_type"), "62");
    assert_eq!(field(&group, "syscall"), "kill");
    assert_eq!(field(&group, "target_comm"), "sleep");

    // The filtered ones came first: none of them was reported.
    let ours: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            (e["data_type"] == "62" || e["data_type"] == "200")
                && e["tgid"] == me().as_str()
                && (e["target_tgid"] == pid.to_string().as_str()
                    || e["target_tgid"] == me().as_str())
        })
        .collect();
    assert!(
        ours.iter()
            .all(|e| e["sig"] != "0" && e["target_tgid"] != me().as_str()),
        "{ours:#?}"
    );
    assert_eq!(ours.len(), 6, "{ours:#?}");
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}

/// A signal sent to the agent by another process is an event (what a
/// detection of "someone is trying to stop the HIDS" needs): SIGHUP, which
/// the agent takes as "re-open the output", so it keeps running; kill(1)
/// sends it. And the SIGTERM that stops it: recorded in the kernel before
/// the agent acts on it, and drained with the rest.
#[test]
fn a_signal_to_the_agent_itself_is_reported() {
    let dir = std::env::temp_dir().join(format!("kestrel-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("events.json");
    let agent = Agent::start_to_file(&out, &[]);
    let target = agent.pid();
    let st = Command::new("kill")
        .args(["-HUP", &target.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let ev = agent.wait_for("the SIGHUP to the agent", |e| {
        e["data_type"] == "62"
            && e["target_pid"] == target.to_string().as_str()
            && e["sig"] == libc::SIGHUP.to_string().as_str()
            && e["comm"] == "kill"
    });
    assert_eq!(field(&ev, "target_tgid"), target.to_string());
    assert_eq!(field(&ev, "target_comm"), "kestrel");
    assert_eq!(field(&ev, "syscall"), "kill");
    assert_eq!(field(&ev, "si_code"), "0");
    assert_eq!(field(&ev, "exe"), "/usr/bin/kill");
    assert_ne!(field(&ev, "tgid"), target.to_string());
    // Still running: it stops cleanly (exit 0) on this process's SIGTERM.
    agent.stop();
    let text = std::fs::read_to_string(&out).unwrap();
    let term = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| {
            e["data_type"] == "62"
                && e["target_pid"] == target.to_string().as_str()
                && e["sig"] == libc::SIGTERM.to_string().as_str()
                && e["tgid"] == me().as_str()
        });
    assert!(
        term.is_some(),
        "no event for the SIGTERM that stopped the agent"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
