//! sshd messages from the systemd journal, read from `journalctl -f -o json`.

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::follow::write_atomic;
use crate::parse::{parse_message, Login};

/// One journal entry as far as login parsing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `__CURSOR`: where to resume after this entry.
    pub cursor: Option<String>,
    /// The login in `MESSAGE`, if it is an sshd login message.
    pub login: Option<Login>,
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
/// object; otherwise the entry's cursor and, for an sshd login message, the
/// login (time from `__REALTIME_TIMESTAMP`, pid from `_PID`, program from
/// `SYSLOG_IDENTIFIER` or else `_COMM`).
pub fn parse_journal_json(line: &str) -> Option<JournalEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    if !v.is_object() {
        return None;
    }
    let cursor = field(&v, "__CURSOR");
    let ident = field(&v, "SYSLOG_IDENTIFIER").or_else(|| field(&v, "_COMM"));
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
    Some(JournalEntry { cursor, login })
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
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            journalctl: PathBuf::from("journalctl"),
            cursor_path: None,
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
            if let Some(login) = entry.login {
                self.persist();
                return Ok(Some(login));
            }
        }
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
