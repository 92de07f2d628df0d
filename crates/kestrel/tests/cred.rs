//! Credential changes to root (data_type 604). Needs root.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{field, marker, Agent};

#[test]
fn regaining_a_saved_root_uid_is_reported_at_the_next_action() {
    let agent = Agent::start(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Drop to uid 1000 keeping saved uid 0, act (a connect), take uid 0
    // back with setresuid (SYS_setresuid = 117 on x86-64), act again.
    let script = format!(
        "use IO::Socket::INET; \
         syscall(117, 1000, 1000, 0) == 0 or die \"drop: $!\"; \
         IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {port}, Proto => 'tcp'); \
         syscall(117, 0, 0, 0) == 0 or die \"regain: $!\"; \
         IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {port}, Proto => 'tcp');"
    );
    let child = Command::new("perl").args(["-e", &script]).spawn().unwrap();
    let pid = child.id().to_string();
    assert!(child.wait_with_output().unwrap().status.success());
    let ev = agent.wait_for("the credential change", |e| {
        e["data_type"] == "604" && e["tgid"].as_str() == Some(pid.as_str())
    });
    assert_eq!(field(&ev, "old_uid"), "1000");
    assert_eq!(field(&ev, "uid"), "0");
    assert_eq!(field(&ev, "euid"), "0");
    assert_eq!(field(&ev, "trigger"), "connect");
    assert_eq!(field(&ev, "user"), "root");
    agent.stop();
}

/// A setuid-root copy of `id` that only uid 65534 will run.
fn setuid_copy(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("kestrel-suid-{tag}"));
    std::fs::copy("/usr/bin/id", &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755)).unwrap();
    path
}

/// A shell running as uid 65534 (seen by Kestrel at its exec) that runs
/// the setuid copy, as a logged-in user would.
fn run_as_nobody(path: &std::path::Path) {
    let st = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
        ])
        .arg(format!("{} >/dev/null", path.display()))
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_setuid_root_exec_is_reported_unless_allowlisted() {
    let tag = marker("suid");
    let path = setuid_copy(&tag);
    let p = path.to_str().unwrap().to_string();

    let agent = Agent::start(&[]);
    run_as_nobody(&path);
    let ev = agent.wait_for("the setuid exec", |e| {
        e["data_type"] == "604" && e["filename"].as_str() == Some(p.as_str())
    });
    assert_eq!(field(&ev, "old_uid"), "65534");
    assert_eq!(field(&ev, "uid"), "65534");
    assert_eq!(field(&ev, "euid"), "0");
    assert_eq!(field(&ev, "trigger"), "exec");
    agent.stop();

    // The same program, allowlisted: its exec is expected to become root.
    let agent = Agent::start(&["--cred-allow", &p]);
    let mark = marker("after");
    run_as_nobody(&path);
    // An event after it, to know the agent has seen the exec.
    Command::new("/bin/true").arg(&mark).status().unwrap();
    agent.wait_for("the marker", |e| {
        e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e["data_type"] == "604" && e["filename"].as_str() == Some(p.as_str())),
        "an allowlisted program was reported"
    );
    let c = agent.stop();
    assert!(c["cred_allowlisted"] >= 1, "{c:?}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn processes_running_before_the_agent_are_compared_too() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ready = std::env::temp_dir().join(marker("seed-ready"));
    let go = std::env::temp_dir().join(marker("seed-go"));
    // Drops to uid 1000 (saved uid 0) before the agent starts, waits for
    // it, then takes root back and acts.
    let script = format!(
        "use IO::Socket::INET; \
         syscall(117, 1000, 1000, 0) == 0 or die \"drop: $!\"; \
         open(my $f, '>', '{ready}'); close $f; \
         select(undef, undef, undef, 0.1) until -e '{go}'; \
         syscall(117, 0, 0, 0) == 0 or die \"regain: $!\"; \
         IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {port}, Proto => 'tcp');",
        ready = ready.display(),
        go = go.display()
    );
    let child = Command::new("perl")
        .args(["-e", &script])
        .current_dir("/")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    while !ready.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let agent = Agent::start(&[]);
    std::fs::write(&go, b"").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let ev = agent.wait_for("the change of a process older than the agent", |e| {
        e["data_type"] == "604" && e["tgid"].as_str() == Some(pid.as_str())
    });
    assert_eq!(field(&ev, "old_uid"), "1000");
    assert_eq!(field(&ev, "trigger"), "connect");
    agent.stop();
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&go);
}

/// A process already root by setresuid (seen last as uid 1000) that execs
/// `su`: the exec did not make it root, so the allowlist must not hide the
/// change. A real `su` exec by an unprivileged user stays allowlisted.
#[test]
fn an_allowlisted_exec_cannot_cover_an_earlier_change() {
    let agent = Agent::start(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Drop to uid 1000 keeping saved uid 0, act (seen as 1000), take
    // root back (SYS_setresuid = 117), and exec su as the first thing
    // Kestrel sees.
    let script = format!(
        "use IO::Socket::INET; \
         syscall(117, 1000, 1000, 0) == 0 or die \"drop: $!\"; \
         IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {port}, Proto => 'tcp'); \
         syscall(117, 0, 0, 0) == 0 or die \"regain: $!\"; \
         exec('/usr/bin/su', '--help') or die \"exec: $!\";"
    );
    let child = Command::new("perl")
        .args(["-e", &script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    assert!(child.wait_with_output().unwrap().status.success());
    let ev = agent.wait_for("the change before su", |e| {
        e["data_type"] == "604" && e["tgid"].as_str() == Some(pid.as_str())
    });
    assert_eq!(field(&ev, "old_uid"), "1000");
    assert_eq!(field(&ev, "uid"), "0");
    assert_eq!(field(&ev, "trigger"), "exec_start");

    // su run by uid 65534: the setuid-root file makes it root; expected.
    let su = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["/usr/bin/su", "--help"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let su_pid = su.id().to_string();
    assert!(su.wait_with_output().unwrap().status.success());
    let mark = marker("su-after");
    Command::new("/bin/true").arg(&mark).status().unwrap();
    agent.wait_for("the marker", |e| {
        e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    let events = agent.events();
    assert!(
        !events
            .iter()
            .any(|e| e["data_type"] == "604" && e["tgid"].as_str() == Some(su_pid.as_str())),
        "a real su exec was reported"
    );
    // Only the one change, at the exec's start: su's exec by the process
    // already root is no change.
    assert_eq!(
        events
            .iter()
            .filter(|e| e["data_type"] == "604" && e["tgid"].as_str() == Some(pid.as_str()))
            .count(),
        1
    );
    let c = agent.stop();
    assert!(c["cred_allowlisted"] >= 1, "{c:?}");
}
