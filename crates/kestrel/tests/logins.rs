//! ssh logins (data_type 1001) from a real OpenSSH server on 127.0.0.1: a
//! wrong password, an invalid user and a key login. Through the agent: the
//! server's own log file rotated mid-test loses nothing, the systemd
//! journal is read, a restarted agent repeats nothing. And through
//! kestrel-logins alone: its log follower and parser on the same server's
//! log. Needs root, openssh-server and sshpass.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::sshd::{client_key, Sshd};
use crate::support::{field, marker, serial, Agent};
use kestrel_logins::{parse_message, FollowerOptions, LogFollower, Login, Stage, Status};
use serde_json::Value;

/// Eight digits that make this run's user names unique.
fn short_tag() -> String {
    marker("")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .rev()
        .take(8)
        .collect()
}

/// Agent flags for the login monitor, with everything else as tests run it.
fn login_args(auth_log: &Path, journal: &str, state: &Path) -> Vec<String> {
    vec![
        "--auth-log".into(),
        auth_log.display().to_string(),
        "--login-journal".into(),
        journal.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
}

fn logins(agent: &Agent, user: &str) -> Vec<Value> {
    agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "1001" && e["user"].as_str() == Some(user))
        .collect()
}

#[test]
fn ssh_logins_across_rotation_and_restart() {
    // Two agents, and logins while neither runs.
    let _serial = serial();
    let dir = std::env::temp_dir().join(marker("sshd"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let key = client_key(d);
    let log = d.join("sshd.log");
    let sshd = Sshd::start(d, Some(&log));
    let port = sshd.port();
    let state = d.join("state");
    let base = login_args(&log, "off", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let agent = Agent::start_to_file(&d.join("out1.json"), &base);

    let tag = short_tag();
    let (invalid, while_down) = (format!("kx{tag}"), format!("kd{tag}"));
    sshd.wrong_password("root");
    sshd.wrong_password(&invalid);
    let failed = agent.wait_for("the wrong root password", |e| {
        e["data_type"] == "1001"
            && e["user"] == "root"
            && e["status"] == "Failed"
            && e["type"] == "password"
    });
    assert_eq!(field(&failed, "user_exsit"), "true");
    assert_eq!(field(&failed, "from_ip"), "127.0.0.1");
    assert_eq!(field(&failed, "processor"), "ssh2");
    assert_ne!(field(&failed, "port"), "0");
    let inv = agent.wait_for("the invalid user", |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(invalid.as_str())
            && e["type"] == "password"
    });
    assert_eq!(field(&inv, "user_exsit"), "false");
    assert_eq!(field(&inv, "status"), "Failed");

    // Rotation as logrotate does it: rename, then make the writer reopen
    // (sshd re-executes itself on SIGHUP and opens its -E file anew).
    std::fs::rename(&log, d.join("sshd.log.1")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sshd.pid() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while !log.exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not reopen its log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sshd.key_login(&key);
    let ok = agent.wait_for("the key login after rotation", |e| {
        e["data_type"] == "1001" && e["user"] == "root" && e["status"] == "Success"
    });
    assert_eq!(field(&ok, "type"), "publickey");
    assert_eq!(field(&ok, "user_exsit"), "true");
    let before = logins(&agent, &invalid).len();
    agent.stop();

    // A login while the agent is down is reported by the next agent; none
    // of the earlier ones is reported again.
    sshd.wrong_password(&while_down);
    let agent = Agent::start_to_file(&d.join("out2.json"), &base);
    let down = agent.wait_for("the login made while the agent was down", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(while_down.as_str())
    });
    assert_eq!(field(&down, "user_exsit"), "false");
    // Give the follower a few more polls, then check for repeats.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        logins(&agent, &invalid).len(),
        0,
        "the restarted agent repeated old logins"
    );
    assert_eq!(
        logins(&agent, "root").len(),
        0,
        "the restarted agent repeated old logins"
    );
    assert!(
        before >= 2,
        "each invalid-user attempt gives several sshd lines"
    );
    agent.stop();
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

/// A systemd-journald for the test when the machine runs none (a fresh
/// Debian 12 container has the binary but no systemd), with /dev/log
/// pointing at it so sshd's syslog lines land in the journal.
struct Journald {
    child: Option<Child>,
    made_dev_log: bool,
}

impl Journald {
    fn ensure() -> Journald {
        let socket = Path::new("/run/systemd/journal/socket");
        let running = socket.exists()
            && std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(socket))
                .is_ok();
        let child = if running {
            None
        } else {
            std::fs::create_dir_all("/run/systemd/journal").unwrap();
            let c = Command::new("/lib/systemd/systemd-journald")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start systemd-journald");
            let start = Instant::now();
            while !socket.exists() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "journald did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(c)
        };
        let dev_log = Path::new("/dev/log");
        let made_dev_log = dev_log.symlink_metadata().is_err();
        if made_dev_log {
            std::os::unix::fs::symlink("/run/systemd/journal/dev-log", dev_log).unwrap();
        }
        Journald {
            child,
            made_dev_log,
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if self.made_dev_log {
            let _ = std::fs::remove_file("/dev/log");
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ssh_logins_from_the_journal_across_restart() {
    // Two agents, and a login while neither runs.
    let _serial = serial();
    let _journald = Journald::ensure();
    let dir = std::env::temp_dir().join(marker("sshd-journal"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    std::fs::write(d.join("authorized_keys"), b"").unwrap();
    let sshd = Sshd::start(d, None);
    let state = d.join("state");
    let missing = d.join("no-such-auth.log");
    let base = login_args(&missing, "on", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let tag = short_tag();
    let (first, second) = (format!("kj{tag}"), format!("kk{tag}"));

    let agent = Agent::start_to_file(&d.join("out1.json"), &base);
    assert!(
        agent.stderr().contains("reading the systemd journal"),
        "{}",
        agent.stderr()
    );
    sshd.wrong_password(&first);
    let ev = agent.wait_for("the invalid user, from the journal", |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(first.as_str())
            && e["type"] == "password"
    });
    assert_eq!(field(&ev, "user_exsit"), "false");
    assert_eq!(field(&ev, "status"), "Failed");
    assert_eq!(field(&ev, "from_ip"), "127.0.0.1");
    agent.stop();

    // While the agent is down; the next one starts after its cursor.
    sshd.wrong_password(&second);
    let agent = Agent::start_to_file(&d.join("out2.json"), &base);
    agent.wait_for("the login made while the agent was down", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(second.as_str())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        logins(&agent, &first).len(),
        0,
        "the restarted agent repeated old logins"
    );
    agent.stop();
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

/// kestrel-logins without the agent: `LogFollower` follows the server's
/// `sshd -E` file and `parse_message` reads its lines.
#[test]
fn real_sshd_logins() {
    // A daemon and logins with deadlines: not under another test's load.
    let _serial = serial();
    let dir = std::env::temp_dir().join(marker("sshd-follower"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let key = client_key(d);
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
    let sshd = Sshd::start(d, Some(&log));
    let port = sshd.port();

    sshd.wrong_password("root");
    sshd.wrong_password("nosuchuser");
    sshd.key_login(&key);

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
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}
