//! Login events (data_type 1001) through the agent, from a real OpenSSH
//! server on 127.0.0.1 writing its own log file: a wrong password, an
//! invalid user and a key login; the log rotated mid-test loses nothing; a
//! restarted agent repeats nothing. Needs root, openssh-server and sshpass.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{field, marker, Agent};
use serde_json::Value;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ssh_args(port: u16) -> Vec<String> {
    let mut a: Vec<String> = vec!["ssh".into(), "-p".into(), port.to_string()];
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "ConnectTimeout=10",
    ] {
        a.push("-o".into());
        a.push(o.into());
    }
    a
}

fn wrong_password(port: u16, user: &str) {
    let st = Command::new("timeout")
        .args(["30", "sshpass", "-p", "definitely-wrong"])
        .args(ssh_args(port))
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            &format!("{user}@127.0.0.1"),
            "true",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "a wrong password logged in");
}

fn key_login(port: u16, key: &Path) {
    Command::new("timeout")
        .arg("30")
        .args(ssh_args(port))
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
}

/// sshd logging to `log`, or to syslog (/dev/log) when `log` is None.
fn start_sshd(d: &Path, port: u16, log: Option<&Path>) -> Kill {
    let mut sshd = Command::new("/usr/sbin/sshd");
    sshd.args(["-D", "-f", "/dev/null", "-p", &port.to_string()]);
    if let Some(log) = log {
        sshd.arg("-E").arg(log);
    }
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
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = sshd.stdin(Stdio::null()).spawn().expect("start sshd");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Kill(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let dir = std::env::temp_dir().join(marker("sshd"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    for key in ["hostkey", "id"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join(key))
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
    let port = free_port();
    let log = d.join("sshd.log");
    let sshd = start_sshd(d, port, Some(&log));
    let state = d.join("state");
    let base = login_args(&log, "off", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let agent = Agent::start_to_file(&d.join("out1.json"), &base);

    let tag = short_tag();
    let (invalid, while_down) = (format!("kx{tag}"), format!("kd{tag}"));
    wrong_password(port, "root");
    wrong_password(port, &invalid);
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
    unsafe { libc::kill(sshd.0.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while !log.exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not reopen its log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    key_login(port, &d.join("id"));
    let ok = agent.wait_for("the key login after rotation", |e| {
        e["data_type"] == "1001" && e["user"] == "root" && e["status"] == "Success"
    });
    assert_eq!(field(&ok, "type"), "publickey");
    assert_eq!(field(&ok, "user_exsit"), "true");
    let before = logins(&agent, &invalid).len();
    agent.stop();

    // A login while the agent is down is reported by the next agent; none
    // of the earlier ones is reported again.
    wrong_password(port, &while_down);
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
    let _journald = Journald::ensure();
    let dir = std::env::temp_dir().join(marker("sshd-journal"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("hostkey"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(d.join("authorized_keys"), b"").unwrap();
    let port = free_port();
    let sshd = start_sshd(d, port, None);
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
    wrong_password(port, &first);
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
    wrong_password(port, &second);
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
