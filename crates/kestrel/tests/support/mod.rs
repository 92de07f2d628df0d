//! What the end-to-end tests share: the real `kestrel` binary and its agent
//! (root, real kernel), and the helpers that read back what it prints; the
//! daemons some areas need are in the submodules.

pub mod kafka;
pub mod qemu;
pub mod server;
pub mod sshd;

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One system-wide test at a time. The tests are threads of one process;
/// agents, servers, benchmarks, guests and brokers would see each other's
/// load, slow each other past their deadlines, and count each other's
/// losses. Every [`Agent`] holds it; a test that does system-wide work
/// outside one agent's lifetime holds it for its whole body with
/// [`serial`]. Quick commands that exit at once (argument errors, one-shot
/// inventories and scans) do not take it.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`SERIAL`]: a test holding it for its body
    /// starts agents, which take it again.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// [`SERIAL`], held until dropped.
pub struct Serial(Option<MutexGuard<'static, ()>>);

/// Waits for [`SERIAL`]; at once if this thread holds it already.
pub fn serial() -> Serial {
    if HOLDING.get() {
        return Serial(None);
    }
    // A test that failed while holding it poisoned it: the next one runs
    // all the same (its agent, daemons and load were stopped by their
    // Drop during the unwinding).
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.set(true);
    Serial(Some(guard))
}

impl Drop for Serial {
    fn drop(&mut self) {
        if self.0.is_some() {
            HOLDING.set(false);
        }
    }
}

/// The kernel's core_pattern, set for a test and put back when dropped.
/// Only tests that run an [`Agent`] set it, so [`SERIAL`] keeps them
/// apart.
pub struct CorePattern(Vec<u8>);

pub const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

impl CorePattern {
    pub fn set(pattern: &str) -> CorePattern {
        let old = std::fs::read(CORE_PATTERN).unwrap();
        std::fs::write(CORE_PATTERN, pattern).unwrap();
        CorePattern(old)
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PATTERN, &self.0);
    }
}

pub fn kestrel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
}

pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    out_file: Option<PathBuf>,
    _serial: Serial,
}

/// Start of a Perl script (perl-base is on every Debian system) for a
/// single-threaded subject process: unbuffered output, `Socket` and `POSIX`
/// loaded, and `conn()`, one TCP connect to 127.0.0.1:1 (refused: one
/// connect event per call).
pub const PERL_CONN: &str = r#"
    use Socket; use POSIX ();
    $| = 1;
    sub conn { socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
               connect($s, pack_sockaddr_in(1, inet_aton("127.0.0.1"))); close $s; }
"#;

/// A unique marker for this test run.
pub fn marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kestrel-{tag}-{}-{nanos}", std::process::id())
}

impl Agent {
    /// Starts `kestrel agent` with events on stdout.
    pub fn start(args: &[&str]) -> Agent {
        Self::spawn(args, None)
    }

    /// Starts `kestrel agent --output file:PATH`.
    pub fn start_to_file(path: &Path, args: &[&str]) -> Agent {
        let mut all = vec!["--output".to_string(), format!("file:{}", path.display())];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        Self::spawn(&refs, Some(path.to_path_buf()))
    }

    fn spawn(args: &[&str], out_file: Option<PathBuf>) -> Agent {
        let serial = serial();
        // The start-up inventory is hundreds of events: off unless a test
        // asks for it.
        let inventory: &[&str] = if args.contains(&"--inventory-interval-hours") {
            &[]
        } else {
            &["--inventory-interval-hours", "0"]
        };
        // And the anti-rootkit scan (tests/rootkit.rs runs it on its own).
        let rootkit: &[&str] = if args.contains(&"--rootkit-scan-interval-hours") {
            &[]
        } else {
            &["--rootkit-scan-interval-hours", "0"]
        };
        // Likewise the login monitor, which would read the host's logs.
        let logins: &[&str] = if args.contains(&"--auth-log") || args.contains(&"--login-journal") {
            &[]
        } else {
            &["--no-logins"]
        };
        let mut child = kestrel()
            .arg("agent")
            .args(inventory)
            .args(rootkit)
            .args(logins)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kestrel");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let lines = lines.clone();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    lines.lock().unwrap().push(l);
                }
            });
        }
        {
            let stderr = stderr.clone();
            let mut err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stderr
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
        }
        let agent = Agent {
            child,
            lines,
            stderr,
            out_file,
            _serial: serial,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent.stderr().contains("kestrel agent started") {
            if Instant::now() > deadline {
                panic!("agent did not start:\n{}", agent.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every event printed so far.
    pub fn events(&self) -> Vec<Value> {
        let lines: Vec<String> = match &self.out_file {
            Some(p) => std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect(),
            None => self.lines.lock().unwrap().clone(),
        };
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits for an event matching `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event for {what}; {} events seen; stderr:\n{}",
                    self.events().len(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`, waits for exit, checks exit status 0, and returns the
    /// final counters the agent logged.
    pub fn stop_with(mut self, sig: i32) -> HashMap<String, u64> {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = self.child.wait().unwrap();
        // Give the reader threads a moment to see EOF.
        std::thread::sleep(Duration::from_millis(100));
        let stderr = self.stderr();
        assert!(status.success(), "agent exited with {status}:\n{stderr}");
        final_counters(&stderr)
    }

    pub fn stop(self) -> HashMap<String, u64> {
        self.stop_with(libc::SIGTERM)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers of the agent's last `counters` log line.
pub fn final_counters(stderr: &str) -> HashMap<String, u64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("when=\"final\""))
        .unwrap_or_else(|| panic!("no final counters in:\n{stderr}"));
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("event has no string field {name}: {e}"))
}

pub fn md5_hex(path: &Path) -> String {
    use md5::{Digest, Md5};
    let data = std::fs::read(path).unwrap();
    Md5::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// ctypes' syscall(2), for the calls Python 3.11's os module lacks.
pub const PY_SYSCALL: &str = r#"import ctypes, os, stat, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r if r >= 0 else -ctypes.get_errno()
NULL = ctypes.c_void_p(0)
def s(b):
    return ctypes.c_char_p(b.encode() if isinstance(b, str) else b)
"#;

/// The hierarchy whose cgroups name containers: v1's memory controller, or
/// the unified hierarchy on a cgroup v2 host (see kestrel_abi.h).
pub fn container_cgroup_root() -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("cgroup.procs").exists() {
        v1.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A "container" without an engine: a docker-named cgroup
/// (`/docker/<64-hex id>`), which is what gives an event its
/// `container_id`; [`Container::command`] adds the container's own mount
/// and network namespaces. Its cgroup is removed when dropped.
pub struct Container {
    /// The cgroup's directory.
    pub cg: PathBuf,
    /// The container id (the cgroup's name).
    pub id: String,
}

impl Container {
    pub fn new() -> Container {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let id = format!("{nanos:064x}");
        let cg = container_cgroup_root().join("docker").join(&id);
        std::fs::create_dir_all(&cg).unwrap();
        Container { cg, id }
    }

    /// The shell line that moves the shell into the cgroup and execs the
    /// rest of its arguments (`sh -c LINE PROG ARGS...`): the exec names
    /// the cgroup, and so the container, to the agent, as a container's
    /// first process's does.
    pub fn enter(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            self.cg.display()
        )
    }

    /// `cmd` as a process of the container: sh enters the cgroup and execs
    /// `unshare`, which makes the namespaces and execs `cmd`, so the pid
    /// stays the spawned one's throughout.
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(self.enter())
            .args(["unshare", "-m", "-n", "--propagation", "private"])
            .args(cmd);
        c
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The last process may still be leaving it.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cg).is_ok() || !self.cg.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir(self.cg.parent().unwrap());
    }
}

/// A loopback address no one listens on now, for an agent's --metrics.
pub fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The agent's /metrics page at `addr`; None while it does not answer.
pub fn metrics_page(addr: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    Some(page)
}

/// One value from the agent's /metrics page at `addr`; None while it does
/// not answer or has no such line.
pub fn scrape(addr: &str, name: &str) -> Option<u64> {
    metrics_page(addr)?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
}
