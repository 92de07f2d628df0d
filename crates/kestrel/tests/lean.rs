//! Lean mode (`--syscall-tracepoints off`): no program on a syscall
//! tracepoint, execs from sched_process_exec, file creations from
//! fanotify.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{field, free_loopback_addr, marker, scrape, Agent};

fn bpftool() -> &'static str {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bpftool is not installed: scripts/install-deps --test installs it")
}

/// The BPF programs attached through perf events and raw tracepoints of
/// process `pid`, as (fd_type, tracepoint), from the kernel's own
/// answer (BPF_TASK_FD_QUERY), not from the agent's log.
fn attached_by(pid: u32) -> Vec<(String, String)> {
    let out = Command::new(bpftool())
        .args(["perf", "-j"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool perf: {out:?}");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.iter()
        .filter(|e| e["pid"].as_u64() == Some(u64::from(pid)))
        .map(|e| {
            (
                e["fd_type"].as_str().unwrap_or_default().to_string(),
                e["tracepoint"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, tag: &str) -> TempDir {
        let d = parent.join(marker(tag));
        std::fs::create_dir(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn lean_mode_attaches_no_syscall_tracepoint_and_still_sees_execs_and_creations() {
    let base = std::env::temp_dir();
    let excluded = TempDir::new(&base, "lean-excluded");
    let ex = excluded.0.to_str().unwrap().to_string();
    let addr = free_loopback_addr();
    let agent = Agent::start(&[
        "--syscall-tracepoints",
        "off",
        "--metrics",
        &addr,
        "--file-exclude",
        "/proc",
        "--file-exclude",
        "/sys",
        "--file-exclude",
        &ex,
    ]);

    // What the kernel says this agent attached.
    let attached = attached_by(agent.pid());
    assert!(
        attached
            .iter()
            .any(|(t, tp)| t == "raw_tracepoint" && tp == "sched_process_exec"),
        "the exec program is not attached: {attached:?}"
    );
    let syscall: Vec<_> = attached
        .iter()
        .filter(|(t, tp)| {
            t == "tracepoint" && (tp.starts_with("sys_enter_") || tp.starts_with("sys_exit_"))
        })
        .collect();
    assert!(
        syscall.is_empty(),
        "syscall tracepoints attached in lean mode: {syscall:?}"
    );
    // And what it says it left out: every syscall tracepoint of the table.
    let log = agent.stderr();
    let left_out = kestrel_probes::kinds::programs()
        .filter(|p| p.is_syscall_tracepoint())
        .count();
    assert!(
        log.contains("mode=\"lean\"") && log.contains(&format!("left_out={left_out}")),
        "the start-up log does not say lean mode and its {left_out} hooks left out:\n{log}"
    );
    assert!(log.contains("syscalls/sys_exit_openat"), "{log}");

    // An exec, with its arguments.
    let mark = marker("lean-exec");
    Command::new("/bin/true")
        .arg(&mark)
        .arg("two words")
        .status()
        .unwrap();
    let e = agent.wait_for("the exec in lean mode", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    assert_eq!(field(&e, "argv"), format!("/bin/true {mark} two words"));
    let truth = std::fs::canonicalize("/bin/true").unwrap();
    assert_eq!(field(&e, "exe"), truth.to_str().unwrap());

    // A file this process creates: its absolute path, its pid.
    let dir = TempDir::new(&base, "lean-files");
    let own = dir.0.join("made-by-the-test");
    std::fs::write(&own, b"content").unwrap();
    let me = std::process::id().to_string();
    let own_s = own.to_str().unwrap().to_string();
    let e = agent.wait_for("the test's own creation", |e| {
        e["data_type"] == "602" && e["file_path"].as_str() == Some(own_s.as_str())
    });
    assert_eq!(field(&e, "tgid"), me);
    assert_eq!(field(&e, "pid"), me);
    assert_eq!(field(&e, "create_type"), "open");
    assert_eq!(field(&e, "uid"), "0");
    assert_eq!(
        field(&e, "exe"),
        std::env::current_exe().unwrap().to_str().unwrap()
    );

    // One by another process, under an excluded directory first, then
    // outside it: when the second is seen, the first would have been.
    let hidden = excluded.0.join("hidden");
    let shown = dir.0.join("by-perl");
    let st = Command::new("perl")
        .args([
            "-e",
            "open(F, '>', $ARGV[0]) or die; close F; open(F, '>', $ARGV[1]) or die; close F; \
             print $$; sleep 1",
        ])
        .arg(&hidden)
        .arg(&shown)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let perl_pid = String::from_utf8(st.stdout).unwrap();
    let shown_s = shown.to_str().unwrap().to_string();
    let e = agent.wait_for("perl's creation", |e| {
        e["data_type"] == "602" && e["file_path"].as_str() == Some(shown_s.as_str())
    });
    assert_eq!(field(&e, "tgid"), perl_pid);
    assert_eq!(field(&e, "comm"), "perl");
    let hidden_s = hidden.to_str().unwrap();
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e["file_path"].as_str() == Some(hidden_s)),
        "a creation under an excluded directory was reported"
    );

    // Another filesystem (tmpfs) from mountinfo: watched, or said not to be.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && !log.contains("/dev/shm (tmpfs):") {
        assert!(
            log.contains("/dev/shm (tmpfs)"),
            "/dev/shm is neither watched nor said not to be:\n{log}"
        );
        let f = shm.join(marker("lean-shm"));
        std::fs::write(&f, b"x").unwrap();
        let fs_ = f.to_str().unwrap().to_string();
        agent.wait_for("a creation on tmpfs", |e| {
            e["data_type"] == "602" && e["file_path"].as_str() == Some(fs_.as_str())
        });
        let _ = std::fs::remove_file(&f);
    }

    // The fanotify side's numbers are on /metrics: at least the creations
    // seen and the excluded one (read, then dropped by path), no overflow.
    let seen = agent
        .events()
        .iter()
        .filter(|e| e["data_type"] == "602")
        .count() as u64;
    let made = scrape(&addr, "kestrel_fanotify_records_total").expect("/metrics answers");
    assert!(made > seen, "fanotify records {made}, 602 events {seen}");
    assert_eq!(scrape(&addr, "kestrel_fanotify_overflows_total"), Some(0));

    let c = agent.stop();
    assert_eq!(c["kernel_lost"], 0);
}

#[test]
fn a_bad_syscall_tracepoints_value_is_refused_with_what_to_use() {
    let out = crate::support::kestrel()
        .args(["agent", "--syscall-tracepoints", "maybe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("syscall_tracepoints") && err.contains("use on") && err.contains("off"),
        "{err}"
    );
}

/// TCP connects and listeners in lean mode come from the socket's
/// CLOSE → SYN_SENT and CLOSE → LISTEN changes, in the task that made
/// them: IPv4 and IPv6, accepted or refused, from this process and from
/// another program.
#[test]
fn lean_mode_sees_tcp_connects_and_listeners_at_their_state_changes() {
    use std::net::{TcpListener, TcpStream};

    let agent = Agent::start(&["--syscall-tracepoints", "off"]);
    let me = std::process::id().to_string();
    let exe = std::env::current_exe().unwrap();
    let connect_seen = |what: &str, dip: &str, port: u16| {
        let dport = port.to_string();
        agent.wait_for(what, |e| {
            e["data_type"] == "42"
                && e["dip"].as_str() == Some(dip)
                && e["dport"].as_str() == Some(dport.as_str())
        })
    };

    for (family, host) in [("2", "127.0.0.1"), ("10", "::1")] {
        let l = TcpListener::bind((host, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = TcpStream::connect((host, port)).unwrap();
        let e = connect_seen("a connect from this process", host, port);
        assert_eq!(field(&e, "sa_family"), family);
        assert_eq!(field(&e, "tgid"), me);
        assert_eq!(field(&e, "exe"), exe.to_str().unwrap());
        assert_eq!(field(&e, "connect_type"), "connect");
        // Seen before the handshake: in progress, whatever came of it.
        assert_eq!(field(&e, "res"), "-115");
        assert_eq!(field(&e, "fd"), "-1");
        assert_eq!(field(&e, "sip"), host);
    }

    // Refused: nobody listens on the port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let e = connect_seen("a refused connect", "127.0.0.1", port);
    assert_eq!(field(&e, "tgid"), me);

    // Another program, bound to a port of its own before connecting.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let out = Command::new("perl")
        .args([
            "-MIO::Socket::INET",
            "-e",
            "my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, \
             PeerAddr => \"127.0.0.1:$ARGV[0]\", Proto => 'tcp') or die \"$@\"; \
             print $$, ' ', $s->sockport;",
        ])
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    let (pid, sport) = said.split_once(' ').unwrap();
    let e = connect_seen("perl's connect", "127.0.0.1", port);
    assert_eq!(field(&e, "tgid"), pid);
    assert_eq!(field(&e, "comm"), "perl");
    let perl = std::fs::canonicalize("/usr/bin/perl").unwrap();
    assert_eq!(field(&e, "exe"), perl.to_str().unwrap());
    // Bound before the connect: its port is known at SYN_SENT.
    assert_eq!(field(&e, "sport"), sport);

    // Listeners, reported as binds (49): this process's, bound first.
    let listen_seen = |what: &str, sip: &str, port: u16| {
        let sport = port.to_string();
        agent.wait_for(what, |e| {
            e["data_type"] == "49"
                && e["sip"].as_str() == Some(sip)
                && e["sport"].as_str() == Some(sport.as_str())
        })
    };
    for (family, host) in [("2", "127.0.0.1"), ("10", "::")] {
        let l = TcpListener::bind((host, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let e = listen_seen("a listener of this process", host, port);
        assert_eq!(field(&e, "sa_family"), family);
        assert_eq!(field(&e, "tgid"), me);
        assert_eq!(field(&e, "res"), "0");
        assert_eq!(field(&e, "protocol"), "6");
        assert_eq!(field(&e, "sock_type"), "1");
        assert_eq!(field(&e, "fd"), "-1");
    }
    // A bind shell's first half in another program, on every address.
    let out = Command::new("perl")
        .args([
            "-MIO::Socket::INET",
            "-e",
            "my $s = IO::Socket::INET->new(Listen => 5, LocalAddr => '0.0.0.0', \
             LocalPort => 0, Proto => 'tcp') or die \"$@\"; print $$, ' ', $s->sockport;",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    let (pid, port) = said.split_once(' ').unwrap();
    let e = listen_seen("perl's listener", "0.0.0.0", port.parse().unwrap());
    assert_eq!(field(&e, "tgid"), pid);
    assert_eq!(field(&e, "exe"), perl.to_str().unwrap());

    let c = agent.stop();
    assert_eq!(c["kernel_lost"], 0);
}
