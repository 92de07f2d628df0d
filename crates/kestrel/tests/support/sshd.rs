//! A real OpenSSH server on 127.0.0.1 for the login tests: its own host key
//! and configuration in a scratch directory, logging to a file of its own
//! (`sshd -E`) or to syslog, and the client logins the tests make against
//! it. Needs root, openssh-server and sshpass (scripts/install-deps
//! installs them); without them the tests fail: they are acceptance tests
//! and are never skipped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd, killed when dropped.
pub struct Sshd {
    child: Child,
    port: u16,
}

/// Makes the key pair `path` and `path.pub` (ed25519, no passphrase).
fn keygen(path: &Path) {
    assert!(quiet(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
    ));
}

/// Runs `cmd` with no input and its output discarded; whether it exited 0.
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn")
        .success()
}

fn have(prog: &str) -> bool {
    Path::new(prog).exists()
        || Command::new("sh")
            .args(["-c", &format!("command -v {prog}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A client key pair `dir/id`, authorized for root on a server started
/// on `dir`.
pub fn client_key(dir: &Path) -> PathBuf {
    let key = dir.join("id");
    keygen(&key);
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
    key
}

/// `timeout 30 ssh -p PORT` with no host key checks.
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

impl Sshd {
    /// Starts sshd on a free port with a new host key in `dir` and the
    /// authorized keys `dir/authorized_keys` (see [`client_key`]), logging
    /// to `log`, or to syslog (/dev/log) when `log` is None.
    pub fn start(dir: &Path, log: Option<&Path>) -> Sshd {
        let missing: Vec<&str> = ["/usr/sbin/sshd", "ssh", "ssh-keygen", "sshpass", "timeout"]
            .into_iter()
            .filter(|p| !have(p))
            .collect();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            missing.is_empty() && root,
            "the sshd tests need root and {missing:?} (run scripts/install-deps as root)"
        );
        keygen(&dir.join("hostkey"));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sshd = Command::new("/usr/sbin/sshd");
        sshd.args(["-D", "-f", "/dev/null", "-p", &port.to_string()]);
        if let Some(log) = log {
            sshd.arg("-E").arg(log);
        }
        for o in [
            "ListenAddress=127.0.0.1".to_string(),
            format!("HostKey={}", dir.join("hostkey").display()),
            format!("PidFile={}", dir.join("sshd.pid").display()),
            format!(
                "AuthorizedKeysFile={}",
                dir.join("authorized_keys").display()
            ),
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
        let sshd = Sshd { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A password login as `user` with `password` (one try, no keys),
    /// running `remote` there.
    pub fn password_login(&self, user: &str, password: &str, remote: &str) -> Command {
        let mut c = Command::new("sshpass");
        c.args(["-p", password]);
        let s = ssh(self.port);
        c.arg(s.get_program()).args(s.get_args());
        c.args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            &format!("{user}@127.0.0.1"),
            remote,
        ]);
        c
    }

    /// One password login as `user` with a wrong password: refused.
    pub fn wrong_password(&self, user: &str) {
        let mut c = self.password_login(user, "definitely-wrong", "true");
        assert!(!quiet(&mut c), "a wrong password logged in");
    }

    /// One key login as root with `key`. Only the authentication matters:
    /// the session may fail in a container, so its result is not checked.
    pub fn key_login(&self, key: &Path) {
        let mut c = ssh(self.port);
        c.arg("-i").arg(key).args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "root@127.0.0.1",
            "true",
        ]);
        quiet(&mut c);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
