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

use crossbeam_channel::Sender;
use kestrel_event::Event;
use kestrel_event::Host;
use kestrel_logins::{FollowerOptions, JournalOptions, JournalSource, LogFollower};

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

/// Starts the monitor threads; `on_event` counts each event sent.
pub fn start(
    cfg: LoginConfig,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    on_event: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<()> {
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
        let (tx, stop, on_event) = (tx.clone(), stop.clone(), on_event.clone());
        std::thread::Builder::new()
            .name("kestrel-logins".into())
            .spawn(move || follow_loop(followers, tx, stop, on_event))?;
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
                    .spawn(move || journal_loop(source, tx, on_event))?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot run journalctl; logins from the journal will be missing")
            }
        }
    }
    Ok(())
}

fn follow_loop(
    mut followers: Vec<LogFollower>,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    on_event: Arc<dyn Fn() + Send + Sync>,
) {
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
                            if tx.send(ev).is_err() {
                                return;
                            }
                            on_event();
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

fn journal_loop(
    mut source: JournalSource,
    tx: Sender<Event>,
    on_event: Arc<dyn Fn() + Send + Sync>,
) {
    let mut host = Host::new();
    loop {
        match source.next_login() {
            Ok(Some(login)) => {
                host.maybe_refresh();
                let ev = kestrel_logins::to_event(&login, &host);
                if tx.send(ev).is_err() {
                    return;
                }
                on_event();
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
