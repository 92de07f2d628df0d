//! sshd messages from the systemd journal, read from `journalctl -f -o json`.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::follow::write_atomic;
use crate::parse::{parse_message, Login};

/// One journal entry as far as login parsing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `__CURSOR`: where to resume after this entry.
    pub cursor: Option<String>,
    /// The login in `MESSAGE`, if it is an sshd login message from sshd.
    pub login: Option<Login>,
    /// The entry names an sshd program (`SYSLOG_IDENTIFIER` or `_COMM`)
    /// but was not sent by sshd (see [`sent_by_sshd`]): it is not parsed.
    pub rejected: bool,
}

/// Directories sshd's programs are installed in (`sshd` in the first
/// ones, OpenSSH >= 9.8's `sshd-session` and `sshd-auth` in the
/// distributions' libexec directories). Only root can write to them, so a
/// user's own copy of a program named `sshd` lies elsewhere.
const SSHD_DIRS: [&str; 10] = [
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/lib/openssh",
    "/usr/libexec/openssh",
    "/usr/libexec",
    "/usr/lib/ssh",
    "/usr/local/libexec",
];

/// Whether `exe` is one of sshd's programs where the system installs them.
fn is_sshd_exe(exe: &str) -> bool {
    let p = Path::new(exe);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    crate::parse::is_sshd_ident(name) && SSHD_DIRS.iter().any(|d| dir == Path::new(d))
}

/// `ssh.service`, `sshd.service` and their per-connection instances
/// (`ssh@...service`, socket activation).
fn is_sshd_unit(unit: &str) -> bool {
    let Some(stem) = unit.strip_suffix(".service") else {
        return false;
    };
    let base = stem.split_once('@').map_or(stem, |(b, _)| b);
    matches!(base, "ssh" | "sshd" | "openssh-server")
}

/// Whether journald says the entry came from sshd. `_COMM` and
/// `SYSLOG_IDENTIFIER` prove nothing: any user names a process `sshd` (a
/// copy of a program under that name, or `prctl(PR_SET_NAME)`) and sets
/// any identifier. The fields journald itself adds from the kernel's view
/// of the sender can't be forged by a client: the sender must be root
/// (`_UID` 0) and either run one of sshd's programs from a system
/// directory (`_EXE`) or belong to sshd's systemd unit (`_SYSTEMD_UNIT`,
/// from its cgroup). Root's own processes can forge anything; they are
/// not what this guards against.
pub fn sent_by_sshd(entry: &Value) -> bool {
    if field(entry, "_UID").as_deref() != Some("0") {
        return false;
    }
    field(entry, "_EXE").is_some_and(|e| is_sshd_exe(&e))
        || field(entry, "_SYSTEMD_UNIT").is_some_and(|u| is_sshd_unit(&u))
}

/// A journal field as text. journalctl writes non-UTF-8 values as an array
/// of byte values (and, for repeated fields, arrays of those); bytes become
/// `\xNN` where invalid.
fn field(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => {
            if a.iter().all(Value::is_number) {
                let bytes: Option<Vec<u8>> = a
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect();
                bytes.map(|b| kestrel_event::lossless_string(&b))
            } else {
                // A field set more than once: take the first value.
                a.first().and_then(|f| match f {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
            }
        }
        _ => None,
    }
}

/// Parses one line of `journalctl -o json`. `None` if it is not a JSON
/// object; otherwise the entry's cursor and, for an sshd login message
/// [`sent_by_sshd`], the login (time from `__REALTIME_TIMESTAMP`, pid from
/// `_PID`, program from `SYSLOG_IDENTIFIER` or else `_COMM`).
pub fn parse_journal_json(line: &str) -> Option<JournalEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    if !v.is_object() {
        return None;
    }
    let cursor = field(&v, "__CURSOR");
    let ident = field(&v, "SYSLOG_IDENTIFIER").or_else(|| field(&v, "_COMM"));
    let claims_sshd = ident.as_deref().is_some_and(crate::parse::is_sshd_ident)
        || field(&v, "_COMM").is_some_and(|c| crate::parse::is_sshd_ident(&c));
    if claims_sshd && !sent_by_sshd(&v) {
        return Some(JournalEntry {
            cursor,
            login: None,
            rejected: true,
        });
    }
    let login = ident.and_then(|ident| {
        let message = field(&v, "MESSAGE")?;
        let pid = field(&v, "_PID")
            .or_else(|| field(&v, "SYSLOG_PID"))
            .and_then(|p| p.parse().ok());
        let mut login = parse_message(&ident, pid, &message)?;
        login.time = field(&v, "__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse::<u64>().ok())
            .map(|us| UNIX_EPOCH + Duration::from_micros(us));
        Some(login)
    });
    Some(JournalEntry {
        cursor,
        login,
        rejected: false,
    })
}

/// The login in one `journalctl -o json` line, if any.
pub fn parse_journal_line(line: &str) -> Option<Login> {
    parse_journal_json(line)?.login
}

/// How to run journalctl.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The journalctl binary.
    pub journalctl: PathBuf,
    /// Where the cursor of the last processed entry is kept (the file holds
    /// just the cursor text). Without it, or when it is empty, reading starts
    /// with new entries.
    pub cursor_path: Option<PathBuf>,
    /// Counts the entries rejected as not sent by sshd.
    pub rejected: Arc<AtomicU64>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            journalctl: PathBuf::from("journalctl"),
            cursor_path: None,
            rejected: Arc::default(),
        }
    }
}

/// Reads sshd logins from `journalctl -f -o json` running as a child.
///
/// The cursor of every entry read is remembered and written (atomically)
/// to `cursor_path` before a login is handed out; the next start passes it
/// as `--after-cursor`. (journalctl's own `--cursor-file` is not used: it
/// writes the cursor only when journalctl exits, and then the cursor of the
/// last entry it *printed*, which may still sit unread in the pipe.)
#[derive(Debug)]
pub struct JournalSource {
    child: Child,
    reader: BufReader<ChildStdout>,
    cursor_path: Option<PathBuf>,
    cursor: Option<String>,
    saved: Option<String>,
    line: String,
    rejected: Arc<AtomicU64>,
}

/// The journalctl arguments for a start after `cursor` (or at the end).
pub fn journalctl_args(cursor: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["-f", "-o", "json", "--no-pager", "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match cursor {
        Some(c) => args.push(format!("--after-cursor={c}")),
        None => args.push("--lines=0".to_string()),
    }
    for (i, comm) in ["sshd", "sshd-session", "sshd-auth"].iter().enumerate() {
        if i > 0 {
            args.push("+".to_string());
        }
        args.push(format!("_COMM={comm}"));
    }
    args
}

impl JournalSource {
    /// Starts journalctl.
    pub fn spawn(opts: JournalOptions) -> io::Result<Self> {
        let cursor = opts
            .cursor_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let mut cmd = Command::new(&opts.journalctl);
        cmd.args(journalctl_args(cursor.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The reading thread may be blocked in a read when the agent exits:
        // journalctl must not outlive it (it would wait for the next entry
        // to notice the closed pipe).
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(JournalSource {
            child,
            reader: BufReader::with_capacity(64 * 1024, stdout),
            cursor_path: opts.cursor_path,
            saved: cursor.clone(),
            cursor,
            line: String::new(),
            rejected: opts.rejected,
        })
    }

    /// Blocks until the next login (`Ok(None)` when journalctl exits).
    pub fn next_login(&mut self) -> io::Result<Option<Login>> {
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line)?;
            if n == 0 {
                self.persist();
                return Ok(None);
            }
            let Some(entry) = parse_journal_json(self.line.trim_end()) else {
                continue;
            };
            if entry.cursor.is_some() {
                self.cursor = entry.cursor;
            }
            if entry.rejected {
                // A user can send these at will: warn on the first and then
                // ever more rarely, the counter has them all.
                let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        rejected = n,
                        "journal entry claiming to be sshd's was not sent by sshd (not root, or not sshd's program); ignored"
                    );
                }
            }
            if let Some(login) = entry.login {
                self.persist();
                return Ok(Some(login));
            }
        }
    }

    /// How many entries were rejected as not sent by sshd.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The cursor of the last entry read.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn persist(&mut self) {
        let (Some(path), Some(cursor)) = (&self.cursor_path, &self.cursor) else {
            return;
        };
        if self.saved.as_ref() == Some(cursor) {
            return;
        }
        match write_atomic(path, cursor.as_bytes()) {
            Ok(()) => self.saved = Some(cursor.clone()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot save journal cursor")
            }
        }
    }
}

impl Drop for JournalSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
