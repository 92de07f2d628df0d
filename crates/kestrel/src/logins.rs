//! The agent's login monitor (data_type 1001): sshd's lines from auth log
//! files, or from the systemd journal when the host keeps no such file (a
//! fresh Debian 12 has no rsyslog).
//!
//! Read positions are kept in the state directory, so a restarted agent
//! neither repeats nor skips a login. Both sources at once would report
//! every login twice, so the journal is used only when no log file exists
//! at start (`login_journal = "auto"`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kestrel_event::Host;
use kestrel_logins::{FollowerOptions, JournalOptions, JournalSource, LogFollower};
use serde::Deserialize;

use crate::agent::sources::Inject;
use crate::config::General;

/// Settings of the login monitor.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct LoginSettings {
    /// Log files whose sshd lines give login events (data_type 1001);
    /// repeat the flag for several. [default: /var/log/auth.log,
    /// /var/log/secure]
    #[arg(long = "auth-log", value_name = "PATH")]
    pub auth_logs: Option<Vec<PathBuf>>,

    /// Read sshd logins from the systemd journal: auto (when none of the
    /// auth logs exists), on, or off. [default: auto]
    #[arg(long, value_name = "MODE")]
    pub login_journal: Option<String>,

    /// Turn the login monitor off.
    // No value on the command line; optional so that a flag left out
    // leaves the file's `no_logins = true` alone.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_logins: Option<bool>,
}

impl LoginSettings {
    /// None when the monitor is off.
    pub fn resolve(self, general: &General) -> Result<Option<LoginConfig>> {
        if self.no_logins == Some(true) {
            if self.login_journal.as_deref() == Some("on") {
                bail!(
                    "conflicting config values: no_logins (--no-logins) turns the login monitor \
                     off, login_journal = \"on\" (--login-journal on) asks it to read the \
                     journal: drop one of them"
                );
            }
            return Ok(None);
        }
        Ok(Some(LoginConfig {
            auth_logs: self
                .auth_logs
                .unwrap_or_else(|| vec!["/var/log/auth.log".into(), "/var/log/secure".into()]),
            journal: match self.login_journal.as_deref().unwrap_or("auto") {
                "auto" => JournalMode::Auto,
                "on" => JournalMode::On,
                "off" => JournalMode::Off,
                other => {
                    bail!("bad config value: login_journal = {other:?}: use auto, on or off")
                }
            },
            state_dir: general.state_dir.clone(),
        }))
    }
}

/// Whether to read the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// Only when none of the log files exists at start.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Login monitor settings.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Log files to follow.
    pub auth_logs: Vec<PathBuf>,
    /// Journal use.
    pub journal: JournalMode,
    /// Where read positions are kept.
    pub state_dir: PathBuf,
}

/// A file name for the position of `log` ("/var/log/auth.log" →
/// "var_log_auth.log.pos").
fn state_file(dir: &Path, log: &Path) -> PathBuf {
    let name: String = log
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    dir.join(format!("{name}.pos"))
}

/// Starts the monitor threads, which send their events through `inject`.
pub fn start(cfg: LoginConfig, inject: Inject, stop: Arc<AtomicBool>) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the state directory {} (state_dir): {e}",
            cfg.state_dir.display()
        )
    })?;
    let any_file = cfg.auth_logs.iter().any(|p| p.exists());
    let use_journal = match cfg.journal {
        JournalMode::On => true,
        JournalMode::Off => false,
        JournalMode::Auto => !any_file,
    };
    if !cfg.auth_logs.is_empty() && (any_file || !use_journal) {
        let mut followers = Vec::new();
        for log in &cfg.auth_logs {
            let opts = FollowerOptions {
                state_path: Some(state_file(&cfg.state_dir, log)),
                ..FollowerOptions::default()
            };
            followers.push(LogFollower::open(log, opts)?);
        }
        tracing::info!(files = ?cfg.auth_logs, "login monitor following log files");
        let (inject, stop) = (inject.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kestrel-logins".into())
            .spawn(move || follow_loop(followers, inject, stop))?;
    }
    if use_journal {
        let opts = JournalOptions {
            cursor_path: Some(cfg.state_dir.join("journal.cursor")),
            ..JournalOptions::default()
        };
        match JournalSource::spawn(opts) {
            Ok(source) => {
                tracing::info!("login monitor reading the systemd journal");
                std::thread::Builder::new()
                    .name("kestrel-journal".into())
                    .spawn(move || journal_loop(source, inject))?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot run journalctl; logins from the journal will be missing")
            }
        }
    }
    Ok(())
}

fn follow_loop(mut followers: Vec<LogFollower>, inject: Inject, stop: Arc<AtomicBool>) {
    let mut host = Host::new();
    let mut failing = vec![false; followers.len()];
    while !stop.load(Ordering::Relaxed) {
        host.maybe_refresh();
        for (i, f) in followers.iter_mut().enumerate() {
            match f.poll() {
                Ok(lines) => {
                    failing[i] = false;
                    for line in lines {
                        // Syslog files carry "TIME HOST sshd[PID]: MESSAGE";
                        // sshd's own -E log file carries bare messages.
                        let login = kestrel_logins::parse_line(&line).or_else(|| {
                            kestrel_logins::parse_message("sshd", None, line.trim_end_matches('\r'))
                        });
                        if let Some(login) = login {
                            let ev = kestrel_logins::to_event(&login, &host);
                            if inject.send(ev).is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    if !failing[i] {
                        tracing::warn!(path = %f.path().display(), error = %e, "cannot read the log file");
                        failing[i] = true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn journal_loop(mut source: JournalSource, inject: Inject) {
    let mut host = Host::new();
    loop {
        match source.next_login() {
            Ok(Some(login)) => {
                host.maybe_refresh();
                let ev = kestrel_logins::to_event(&login, &host);
                if inject.send(ev).is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::warn!("journalctl ended; logins from the journal will be missing");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading journalctl failed");
                return;
            }
        }
    }
}
