//! `kestrel server` for the server tests (server.rs, server_hardening.rs):
//! the server and agents as child processes whose logs are collected, and
//! `kestrel ctl` against it.

pub mod browser;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{kestrel, marker};

/// A child process whose stderr is collected; killed when dropped.
pub struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, ready: &str) -> Proc {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kestrel");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let p = Proc { child, stderr };
        wait_until(90, || p.stderr().contains(ready).then_some(()))
            .unwrap_or_else(|| panic!("{ready:?} not in the log:\n{}", p.stderr()));
        p
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and a clean exit expected.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status}:\n{}", self.stderr());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms for up to `secs`.
pub fn wait_until<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh scratch directory under /tmp.
pub fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/kserver-{}", marker(tag)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kestrel server` on 127.0.0.1 with a 3 s offline timeout, plus `extra`.
pub fn server_cmd(data: &Path, grpc: u16, http: u16, extra: &[&str]) -> Command {
    let mut c = kestrel();
    c.args([
        "server",
        "--listen",
        &format!("127.0.0.1:{grpc}"),
        "--http",
        &format!("127.0.0.1:{http}"),
        "--offline-after-secs",
        "3",
        "--data",
    ])
    .arg(data)
    .args(extra);
    c
}

pub fn start_server(data: &Path, grpc: u16, http: u16, extra: &[&str]) -> Proc {
    Proc::spawn(
        &mut server_cmd(data, grpc, http, extra),
        "kestrel server listening",
    )
}

/// `kestrel ctl` with the admin token.
pub fn ctl(data: &Path, http: u16, args: &[&str]) -> Output {
    kestrel()
        .args([
            "ctl",
            "--api",
            &format!("https://127.0.0.1:{http}"),
            "--token-file",
        ])
        .arg(data.join("admin.token"))
        .args(args)
        .output()
        .unwrap()
}
