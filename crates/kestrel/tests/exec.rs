//! Exec events (data_type 59) from the real kernel. Needs root.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{field, marker, md5_hex, Agent};

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn exec_event_carries_argv_env_tree_and_hashes() {
    let agent = Agent::start(&[]);
    let mark = marker("exec");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg0("sh")
        .arg("-c")
        // The shell outlives its exec by a second so /proc can be read.
        .arg("sleep 1; exit 0")
        .arg(&mark)
        .arg("with space")
        .arg("quo\"te'single")
        .arg(OsStr::from_bytes(b"bad\xffbyte"));
    for i in 0..150 {
        cmd.arg(format!("a{i}"));
    }
    cmd.env("LD_PRELOAD", "/nonexistent/kestrel-test-preload.so")
        .env("SSH_CONNECTION", "10.9.8.7 50000 10.9.8.1 22")
        .current_dir("/tmp")
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let ev = agent.wait_for("the marked exec", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    child.wait().unwrap();

    let argv = field(&ev, "argv");
    let expected_head =
        format!("sh -c sleep 1; exit 0 {mark} with space quo\"te'single bad\\xffbyte a0 a1 a2");
    assert!(argv.starts_with(&expected_head), "argv: {argv}");
    // 157 arguments, more than the 128 the kernel side keeps: marked.
    assert_eq!(field(&ev, "argc"), "157");
    assert_eq!(field(&ev, "argv_truncated"), "true");
    assert!(
        argv.ends_with(" a120"),
        "argv keeps exactly 128 arguments: {argv}"
    );
    assert_eq!(
        field(&ev, "LD_PRELOAD"),
        "/nonexistent/kestrel-test-preload.so"
    );
    assert_eq!(field(&ev, "SSH_CONNECTION"), "10.9.8.7 50000 10.9.8.1 22");

    let exe = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(field(&ev, "exe"), exe.to_str().unwrap());
    assert_eq!(field(&ev, "exe_md5"), md5_hex(&exe));
    assert_eq!(field(&ev, "run_path"), "/tmp");
    assert_eq!(field(&ev, "user"), "root");
    assert_eq!(field(&ev, "uid"), "0");
    assert_eq!(field(&ev, "pid"), pid.to_string());
    assert_eq!(field(&ev, "tgid"), pid.to_string());
    assert_eq!(field(&ev, "ppid"), std::process::id().to_string());
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "comm"), "sh");
    let tree = field(&ev, "pid_tree");
    let tail = format!("->{}({})->{pid}(sh)", std::process::id(), own_comm());
    assert!(
        tree.ends_with(&tail),
        "pid_tree {tree} should end with {tail}"
    );
    assert!(
        tree.starts_with("1("),
        "pid_tree {tree} should start at pid 1"
    );
    assert!(!field(&ev, "time").is_empty() && !field(&ev, "hostname").is_empty());
    let nodename = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(field(&ev, "nodename"), nodename.trim());
    agent.stop();
}

#[test]
fn long_arguments_are_cut_at_the_byte_limit_and_marked() {
    let agent = Agent::start(&[]);
    let mark = marker("long");
    let big = "x".repeat(300);
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&mark).current_dir("/var/tmp").stdin(Stdio::null());
    for _ in 0..30 {
        cmd.arg(&big);
    }
    cmd.status().unwrap();
    let ev = agent.wait_for("the long exec", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    let argv = field(&ev, "argv");
    assert_eq!(field(&ev, "argc"), "32");
    assert_eq!(field(&ev, "argv_truncated"), "true");
    // 4096 bytes of NUL-separated arguments, NULs shown as spaces.
    assert_eq!(argv.len(), 4096, "{argv}");
    // /bin/true is long gone when the event is enriched: these come from
    // the kernel, captured at exec time.
    assert_eq!(field(&ev, "run_path"), "/var/tmp");
    assert_eq!(field(&ev, "stdin"), "/dev/null");
    agent.stop();
}

#[test]
fn failed_exec_is_reported_with_its_result() {
    let agent = Agent::start(&[]);
    let mark = marker("noexec");
    let path = format!("/nonexistent/{mark}");
    let err = Command::new(&path).arg("arg1").spawn().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let ev = agent.wait_for("the failed exec", |e| {
        e["data_type"] == "59" && e["exe"].as_str() == Some(path.as_str())
    });
    assert_eq!(field(&ev, "res"), (-libc::ENOENT).to_string());
    assert_eq!(field(&ev, "argv"), format!("{path} arg1"));
    assert_eq!(field(&ev, "exe_md5"), "");
    agent.stop();
}

#[test]
fn reverse_shell_names_the_shell_and_the_listener() {
    let agent = Agent::start(&[]);
    let mark = marker("revshell");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = listener.local_addr().unwrap().port();
    let stream = std::net::TcpStream::connect(("127.0.0.1", lport)).unwrap();
    let shell_local = stream.local_addr().unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    // A shell whose stdin and stdout are the TCP socket: a reverse shell.
    let mut shell = Command::new("/bin/sh")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(
            stream.try_clone().unwrap(),
        )))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(stream)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shell_pid = shell.id();
    writeln!(peer, "/bin/echo {mark}").unwrap();
    let ev = agent.wait_for("the command run by the reverse shell", |e| {
        e["data_type"] == "59"
            && e["comm"] == "echo"
            && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    writeln!(peer, "exit").unwrap();
    let mut got = String::new();
    peer.read_to_string(&mut got).unwrap();
    assert!(got.contains(&mark));
    shell.wait().unwrap();

    assert_eq!(field(&ev, "socket_process_pid"), shell_pid.to_string());
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(field(&ev, "socket_process_exe"), sh.to_str().unwrap());
    assert_eq!(field(&ev, "socket_process_exe_md5"), md5_hex(&sh));
    assert_eq!(field(&ev, "dip"), "127.0.0.1");
    assert_eq!(field(&ev, "dport"), lport.to_string());
    assert_eq!(field(&ev, "sip"), "127.0.0.1");
    assert_eq!(field(&ev, "sport"), shell_local.port().to_string());
    assert_eq!(field(&ev, "sa_family"), "2");
    assert!(field(&ev, "stdin").starts_with("socket:["), "{ev}");
    agent.stop();
}

/// A bash that puts a TCP connection to `port` on its stdin and stdout with
/// redirections (dup2, after its own exec), waits for `go` to exist, then
/// runs `/bin/echo MARK` with stdin and stdout on /dev/null: the command's
/// own descriptors say nothing, its parent holds the socket.
fn redirecting_shell(port: u16, go: &Path, mark: &str) -> std::process::Child {
    let script = format!(
        "exec 0<>/dev/tcp/127.0.0.1/{port}; exec 1>&0; \
         while [ ! -e {go} ]; do read -t 0.05 _ </dev/null; done; \
         /bin/echo {mark} </dev/null >/dev/null",
        go = go.display()
    );
    Command::new("/bin/bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn assert_names_shell_socket(ev: &serde_json::Value, shell_pid: u32, lport: u16) {
    assert_eq!(
        field(ev, "socket_process_pid"),
        shell_pid.to_string(),
        "{ev}"
    );
    assert_eq!(field(ev, "dip"), "127.0.0.1", "{ev}");
    assert_eq!(field(ev, "dport"), lport.to_string(), "{ev}");
    assert_eq!(field(ev, "sa_family"), "2", "{ev}");
    assert!(!field(ev, "stdin").starts_with("socket:["), "{ev}");
}

/// Runs `redirecting_shell`, with the agent started after the shell's
/// redirection (`agent_first` false: only the agent's start-up scan of /proc
/// can know it) or before it (the dup2 probe sees it), and checks that the
/// command it runs names the shell's socket.
fn socket_holder_is_found(tag: &str, agent_first: bool) {
    let early = agent_first.then(|| Agent::start(&[]));
    let mark = marker(tag);
    let go = std::env::temp_dir().join(format!("{mark}.go"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = listener.local_addr().unwrap().port();
    let mut shell = redirecting_shell(lport, &go, &mark);
    let (_peer, _) = listener.accept().unwrap();
    let agent = early.unwrap_or_else(|| Agent::start(&[]));
    std::fs::write(&go, b"").unwrap();
    let ev = agent.wait_for("the command run under the redirected shell", |e| {
        e["data_type"] == "59"
            && e["filename"] == "/bin/echo"
            && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    shell.wait().unwrap();
    let _ = std::fs::remove_file(&go);
    assert_names_shell_socket(&ev, shell.id(), lport);
    agent.stop();
}

#[test]
fn a_socket_duplicated_onto_stdio_after_exec_is_found() {
    socket_holder_is_found("dup2", true);
}

#[test]
fn a_socket_on_stdio_before_the_agent_started_is_found() {
    socket_holder_is_found("seeded", false);
}

#[test]
fn a_quiet_event_is_collected_by_the_poll_timeout() {
    // A wakeup threshold no single event reaches: only the timed poll
    // can collect the event.
    let agent = Agent::start(&["--wakeup-bytes", "4194304", "--max-latency-ms", "100"]);
    let mark = marker("quiet");
    Command::new("/bin/true").arg(&mark).status().unwrap();
    agent.wait_for("the quiet exec", |e| {
        e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    // Seen while the agent runs, with a wakeup threshold no event reaches:
    // only the timed poll can have collected it. How long it waited is a
    // wall-clock figure (max_delay_ms covers every event and the host's
    // load, 2.1 s once on a busy CI machine): not asserted here.
    let c = agent.stop_with(libc::SIGINT);
    assert!(c.contains_key("max_delay_ms"), "{c:?}");
    assert_eq!(c["kernel_lost"], 0);
    // Alerts (data_type 9000) are events the agent adds.
    assert_eq!(c["received"] + c["alerts"], c["emitted"]);
}

#[test]
fn file_output_follows_rotation_on_sighup() {
    let dir = std::env::temp_dir().join(marker("rotate"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.json");
    let agent = Agent::start_to_file(&path, &[]);
    let first = marker("before");
    Command::new("/bin/true").arg(&first).status().unwrap();
    agent.wait_for("first", |e| {
        e["argv"].as_str().is_some_and(|a| a.contains(&first))
    });
    let rotated = dir.join("events.json.1");
    std::fs::rename(&path, &rotated).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent.stderr().contains("output re-opened") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = marker("after");
    Command::new("/bin/true").arg(&second).status().unwrap();
    agent.wait_for("second", |e| {
        e["argv"].as_str().is_some_and(|a| a.contains(&second))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains(&first) && !old.contains(&second));
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&first));
    agent.stop();
    std::fs::remove_dir_all(Path::new(&dir)).unwrap();
}

#[test]
fn working_directory_is_walked_in_the_kernel_across_mounts() {
    let agent = Agent::start(&[]);
    // /proc is a mount of its own: the walk must cross into the parent.
    let across = marker("cwd-mount");
    Command::new("/bin/true")
        .arg(&across)
        .current_dir("/proc/sys/kernel")
        .status()
        .unwrap();
    // Deeper than the kernel walks (32 components): the short-lived
    // process leaves only the innermost part, marked with "...".
    let deep_mark = marker("cwd-deep");
    let mut deep = std::env::temp_dir().join(&deep_mark);
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    Command::new("/bin/true")
        .arg(&deep_mark)
        .current_dir(&deep)
        .status()
        .unwrap();
    let has = |m: &str| {
        let m = m.to_string();
        move |e: &serde_json::Value| e["argv"].as_str().is_some_and(|a| a.contains(&m))
    };
    let ev = agent.wait_for("exec in /proc/sys/kernel", has(&across));
    assert_eq!(field(&ev, "run_path"), "/proc/sys/kernel");
    let ev = agent.wait_for("exec in a deep directory", has(&deep_mark));
    let run_path = field(&ev, "run_path");
    let full = deep.to_str().unwrap();
    // Either /proc still had the process (full path) or the kernel's
    // innermost 32 components, marked.
    assert!(
        run_path == full || (run_path.starts_with("...") && full.ends_with(&run_path[3..])),
        "run_path {run_path} for {full}"
    );
    assert!(run_path.ends_with("/d38/d39"));
    agent.stop();
    std::fs::remove_dir_all(std::env::temp_dir().join(&deep_mark)).unwrap();
}

/// Processes name themselves and choose their arguments: a comm of
/// `x)->1(sshd` must not add an ancestor to `pid_tree`, `["a b"]` and
/// `["a","b"]` must be told apart (`argv_list`), and so must a raw 0xff
/// byte and the text `\xff`.
#[test]
fn names_and_arguments_cannot_be_forged() {
    let agent = Agent::start(&[]);
    let mark = marker("forge");
    let dir = std::env::temp_dir().join(&mark);
    std::fs::create_dir_all(&dir).unwrap();
    // A shell whose comm (its file's name) looks like the tree's syntax.
    let fake = dir.join("x)->1(sshd");
    std::fs::copy("/bin/sh", &fake).unwrap();
    let st = Command::new(&fake)
        .arg("-c")
        .arg(format!(
            "/bin/true '{mark}-one' 'a b'; /bin/true '{mark}-two' a b; \
             /bin/true '{mark}-text' '\\xff'"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("/bin/true")
        .arg(format!("{mark}-raw"))
        .arg(OsStr::from_bytes(b"\xff"))
        .status()
        .unwrap();
    assert!(st.success());
    let find = |tag: &str| {
        let head = format!("/bin/true {mark}-{tag}");
        agent.wait_for(tag, |e| {
            e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.starts_with(&head))
        })
    };
    let one = find("one");
    let two = find("two");

    // The shell is one ancestor, its comm escaped: no pid 1 "sshd" after it.
    let tree = field(&one, "pid_tree");
    assert!(!tree.contains("->1(sshd)"), "pid_tree {tree}");
    let parents: Vec<&str> = tree.split("->").collect();
    assert!(
        parents
            .iter()
            .all(|p| p.ends_with(')') && p.matches('(').count() == 1),
        "pid_tree {tree}"
    );
    assert!(
        tree.ends_with(&format!(
            "(x\\x29-\\x3e1\\x28sshd)->{}(true)",
            field(&one, "tgid")
        )),
        "pid_tree {tree}"
    );

    let list = |e: &serde_json::Value| -> Vec<String> {
        serde_json::from_str(field(e, "argv_list")).unwrap()
    };
    // The old field reads the same for both; the new one does not.
    assert_eq!(
        field(&one, "argv").replace("-one", ""),
        field(&two, "argv").replace("-two", "")
    );
    assert_eq!(list(&one)[2..], ["a b".to_string()]);
    assert_eq!(list(&two)[2..], ["a".to_string(), "b".to_string()]);

    // Raw byte and escape text, in argv and argv_list alike.
    let text = find("text");
    let raw = find("raw");
    assert_eq!(list(&text)[2], "\\\\xff");
    assert_eq!(list(&raw)[2], "\\xff");
    assert!(field(&text, "argv").ends_with(" \\\\xff"), "{text}");
    assert!(field(&raw, "argv").ends_with(" \\xff"), "{raw}");
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An unprivileged user makes 400 distinct executables of 60 MiB each (a
/// copy of `true` with a sparse tail: no disk, an instant each) and runs
/// each once. Every exec is then a file not yet hashed, 60 MiB to read on
/// the collecting thread: without a budget that held collection up for
/// most of a minute, and the marker exec after them with it. With the
/// budget the marker comes at once and the execs left unhashed say why.
#[test]
fn large_new_executables_cannot_blind_collection() {
    use serde_json::Value;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(marker("bigexe"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let agent = Agent::start(&["--ring-buffer-bytes", "67108864"]);
    let mark = marker("bigexe-marker");
    let script = format!(
        "use File::Copy; \
         for my $i (1..400) {{ my $p = \"{d}/e$i\"; copy('/bin/true', $p) or die \"$!\"; \
                              chmod 0755, $p; truncate($p, 60 << 20) or die \"$!\"; }} \
         for my $i (1..400) {{ system(\"{d}/e$i\") == 0 or die \"e$i\"; }} \
         system('/bin/true', '{mark}') == 0 or die 'marker';",
        d = dir.display()
    );
    let st = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["perl", "-e", &script])
        .status()
        .unwrap();
    assert!(st.success());
    let ran = Instant::now();
    let marker_argv = format!("/bin/true {mark}");
    agent.wait_for("the marker exec", |e| {
        e["data_type"] == "59" && e["argv"].as_str() == Some(marker_argv.as_str())
    });
    eprintln!("marker seen {:?} after the execs ended", ran.elapsed());
    let prefix = format!("{}/e", dir.display());
    let ours: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["data_type"] == "59" && e["exe"].as_str().is_some_and(|x| x.starts_with(&prefix))
        })
        .collect();
    let budget = ours
        .iter()
        .filter(|e| field(e, "exe_md5_status") == "budget")
        .count();
    // Each event either has its hash or says why not.
    for e in &ours {
        assert_eq!(
            field(e, "exe_md5").is_empty(),
            field(e, "exe_md5_status") != "verified" && field(e, "exe_md5_status") != "unverified",
            "{e}"
        );
    }
    let c = agent.stop();
    eprintln!(
        "{} execs seen, {budget} not hashed for the budget; {c:?}",
        ours.len()
    );
    assert!(
        ours.len() >= 390,
        "only {} of 400 execs reported",
        ours.len()
    );
    assert!(budget > 0, "no exec was left unhashed by the budget");
    // Other processes of the host may be cut by the budget too.
    assert!(c["md5_budget"] >= budget as u64, "{c:?}");
    assert_eq!(c["exec_lost"], 0, "{c:?}");
}

/// setsid(2), data_type 112: a process that leaves its session (as a
/// daemon or a payload detaching from its shell does) is reported with
/// the session it made, and a refused call with its error. Two ways in:
/// the syscall from Python, and util-linux's setsid(1) starting a program.
#[test]
fn setsid_is_reported_with_its_new_session() {
    let agent = Agent::start(&[]);
    // Once in a child: it becomes its session's leader. Again in the same
    // process: a session leader cannot, EPERM.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import os\n\
             os.setsid()\n\
             sid = os.getsid(0)\n\
             try:\n    os.setsid()\nexcept PermissionError:\n    pass\n\
             print(os.getpid(), sid)",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let pid = it.next().unwrap().to_string();
    let sid = it.next().unwrap().to_string();
    assert_eq!(pid, sid);
    let ok = agent.wait_for("the setsid", |e| {
        e["data_type"] == "112" && e["pid"] == pid.as_str() && e["res"] == sid.as_str()
    });
    assert_eq!(field(&ok, "sid"), pid);
    assert!(field(&ok, "exe").ends_with("python3") || field(&ok, "exe").contains("python"));
    let refused = agent.wait_for("the refused setsid", |e| {
        e["data_type"] == "112" && e["pid"] == pid.as_str() && e["res"] == "-1"
    });
    assert_eq!(field(&refused, "sid"), pid);

    // setsid(1) runs a program in a new session; the program is named by
    // the exec that follows in the same process.
    let mark = marker("setsid");
    let st = Command::new("setsid")
        .args(["--wait", "/bin/sh", "-c", &format!(": {mark}")])
        .status()
        .unwrap();
    assert!(st.success());
    let exec = agent.wait_for("setsid(1)'s shell", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    let shell = field(&exec, "pid").to_string();
    let ev = agent.wait_for("setsid(1)'s call", |e| {
        e["data_type"] == "112" && e["pid"] == shell.as_str()
    });
    assert_eq!(field(&ev, "res"), shell);
    assert_eq!(field(&ev, "comm"), "setsid");
    agent.stop();
}
