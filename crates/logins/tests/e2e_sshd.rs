//! End to end: a real OpenSSH server logs to a file (`sshd -E`), which is
//! followed with `LogFollower` and parsed with `parse_message`.
//!
//! Needs root, /usr/sbin/sshd, ssh, ssh-keygen and sshpass (Debian:
//! openssh-server, sshpass; scripts/install-deps installs them). Without
//! them the test fails: it is an acceptance test and is never skipped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kestrel_logins::{parse_message, FollowerOptions, LogFollower, Login, Stage, Status};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn")
        .success()
}

fn ssh(port: u16) -> Command {
    let mut c = Command::new("timeout");
    c.args(["30", "ssh", "-p", &port.to_string()]);
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "ConnectTimeout=10",
    ] {
        c.args(["-o", o]);
    }
    c
}

fn wrong_password(port: u16, user: &str) {
    let mut c = Command::new("sshpass");
    c.args(["-p", "definitely-wrong"]);
    let s = ssh(port);
    c.arg(s.get_program()).args(s.get_args());
    c.args([
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
        &format!("{user}@127.0.0.1"),
        "true",
    ]);
    assert!(!run(&mut c), "a wrong password logged in");
}

#[test]
fn real_sshd_logins() {
    let missing: Vec<&str> = ["/usr/sbin/sshd", "ssh", "ssh-keygen", "sshpass", "timeout"]
        .into_iter()
        .filter(|p| !(Path::new(p).exists() || have(p)))
        .collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        missing.is_empty() && root,
        "real_sshd_logins needs root and {missing:?} (run scripts/install-deps as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for key in ["hostkey", "id"] {
        assert!(run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join(key))));
    }
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = d.join("sshd.log");
    let mut follower = LogFollower::open(
        &log,
        FollowerOptions {
            state_path: Some(d.join("state.json")),
            start_at_end: false,
            ..FollowerOptions::default()
        },
    )
    .unwrap();
    let mut sshd = Command::new("/usr/sbin/sshd");
    sshd.args(["-D", "-f", "/dev/null", "-p", &port.to_string(), "-E"])
        .arg(&log);
    for o in [
        "ListenAddress=127.0.0.1".to_string(),
        format!("HostKey={}", d.join("hostkey").display()),
        format!("PidFile={}", d.join("sshd.pid").display()),
        format!("AuthorizedKeysFile={}", d.join("authorized_keys").display()),
        "LogLevel=INFO".to_string(),
        "PasswordAuthentication=yes".to_string(),
        "KbdInteractiveAuthentication=no".to_string(),
        "PermitRootLogin=yes".to_string(),
        "StrictModes=no".to_string(),
        "UsePAM=no".to_string(),
    ] {
        sshd.args(["-o", &o]);
    }
    let _sshd = Kill(sshd.stdin(Stdio::null()).spawn().expect("start sshd"));
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    wrong_password(port, "root");
    wrong_password(port, "nosuchuser");
    let mut c = ssh(port);
    c.arg("-i").arg(d.join("id")).args([
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "PreferredAuthentications=publickey",
        "root@127.0.0.1",
        "true",
    ]);
    // Only the authentication matters; the session may fail in a container.
    run(&mut c);

    let mut logins: Vec<Login> = Vec::new();
    let mut lines = Vec::new();
    let start = Instant::now();
    let found = |logins: &[Login]| {
        let failed_root = logins.iter().any(|l| {
            l.stage == Stage::Auth
                && l.status == Status::Failed
                && l.method == "password"
                && l.user == "root"
                && l.user_exists
        });
        let failed_invalid = logins.iter().any(|l| {
            l.stage == Stage::Auth
                && l.status == Status::Failed
                && l.user == "nosuchuser"
                && !l.user_exists
        });
        let invalid = logins
            .iter()
            .any(|l| l.stage == Stage::InvalidUser && l.user == "nosuchuser");
        let accepted = logins
            .iter()
            .any(|l| l.status == Status::Success && l.method == "publickey" && l.user == "root");
        failed_root && failed_invalid && invalid && accepted
    };
    while !found(&logins) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "expected logins not seen; lines: {lines:#?}\nlogins: {logins:#?}"
        );
        for line in follower.poll().unwrap() {
            // `sshd -E` writes bare messages (no syslog header).
            if let Some(l) = parse_message("sshd", None, &line) {
                logins.push(l);
            }
            lines.push(line);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for l in &logins {
        assert_eq!(l.from_ip.to_string(), "127.0.0.1");
        assert_ne!(l.port, 0);
        assert_ne!(l.port, port);
    }
    // A new follower from the saved state repeats nothing.
    drop(follower);
    let mut again = LogFollower::open(
        &log,
        FollowerOptions {
            state_path: Some(d.join("state.json")),
            start_at_end: false,
            ..FollowerOptions::default()
        },
    )
    .unwrap();
    let rest = again.poll().unwrap();
    assert!(
        rest.iter().all(|l| !lines.contains(l)),
        "repeated lines: {rest:?}"
    );
}
