//! Detect: the policies applied to finished events, on a thread of its
//! own between enrichment and output.
//!
//! Two policies for now, both dropping events (counted):
//! - the credential allowlist: a change to root by the exec of a program
//!   that becomes root by design (sudo, su, sshd) is expected, not news;
//! - the control server's event filter (disabled data_types, excluded
//!   executables and comms), which `config` commands change at run time.
//!   A change swaps one `Arc`, read once per batch, so events of the types
//!   still enabled are never lost.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use kestrel_event::{Event, DATA_TYPE_CRED};
use serde::Deserialize;

use super::Link;

/// Programs that become root by design, at their usual paths.
pub const DEFAULT_CRED_ALLOWLIST: &[&str] = &[
    "/usr/bin/sudo",
    "/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/sbin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-session",
];

/// Settings of the detect stage.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct DetectSettings {
    /// Programs whose exec may make a process root without a credential
    /// change event (data_type 604); repeat the flag for several. [default:
    /// sudo, su, sshd and sshd-session at their usual paths]
    #[arg(long = "cred-allow", value_name = "PATH")]
    pub cred_allowlist: Option<Vec<String>>,
}

/// The detect stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    pub cred_allowlist: Vec<String>,
}

impl DetectSettings {
    pub fn resolve(self) -> anyhow::Result<DetectConfig> {
        let cred_allowlist = self.cred_allowlist.unwrap_or_else(|| {
            DEFAULT_CRED_ALLOWLIST
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        // The list is matched against the executable's full path: a bare
        // name would never match (and the user would believe sudo exempt).
        if let Some(rel) = cred_allowlist.iter().find(|p| !p.starts_with('/')) {
            anyhow::bail!(
                "bad config value: cred_allowlist (--cred-allow): {rel:?} is not an absolute \
                 path; the list holds executables' full paths, e.g. /usr/bin/sudo"
            );
        }
        Ok(DetectConfig { cred_allowlist })
    }
}

/// What the detect stage counts.
#[derive(Debug, Default)]
pub struct DetectCounters {
    /// Events dropped by the server's filter.
    pub filtered: AtomicU64,
    /// Credential changes dropped because an allowlisted program was
    /// exec'd.
    pub cred_allowlisted: AtomicU64,
}

/// Which events the server's `config` commands drop.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// data_type codes not written.
    pub disabled: BTreeSet<String>,
    /// Events whose `exe` is one of these are not written.
    pub exes: BTreeSet<String>,
    /// Events whose `comm` is one of these are not written.
    pub comms: BTreeSet<String>,
}

impl Filter {
    /// Whether `ev` is filtered out.
    pub fn drops(&self, ev: &Event) -> bool {
        if self.disabled.is_empty() && self.exes.is_empty() && self.comms.is_empty() {
            return false;
        }
        ev.get("data_type")
            .is_some_and(|t| self.disabled.contains(t))
            || ev.get("exe").is_some_and(|e| self.exes.contains(e))
            || ev.get("comm").is_some_and(|c| self.comms.contains(c))
    }
}

/// The filter in force, shared with the control client that changes it.
#[derive(Debug, Default)]
pub struct SharedFilter(RwLock<Arc<Filter>>);

impl SharedFilter {
    /// The current filter.
    pub fn current(&self) -> Arc<Filter> {
        self.0.read().unwrap().clone()
    }

    /// Changes the filter with `f`; returns the new one.
    pub fn edit(&self, f: impl FnOnce(&mut Filter)) -> Filter {
        let mut w = self.0.write().unwrap();
        let mut next = (**w).clone();
        f(&mut next);
        *w = Arc::new(next.clone());
        next
    }
}

/// The detect stage's policies.
pub struct Detect {
    cred_allowlist: HashSet<String>,
    filter: Arc<SharedFilter>,
    counters: Arc<DetectCounters>,
}

impl Detect {
    pub fn new(cfg: &DetectConfig, counters: Arc<DetectCounters>) -> Self {
        Detect {
            cred_allowlist: cfg.cred_allowlist.iter().cloned().collect(),
            filter: Arc::default(),
            counters,
        }
    }

    /// The server's filter, for the control client to change.
    pub fn filter(&self) -> Arc<SharedFilter> {
        self.filter.clone()
    }

    /// Whether `ev` goes on to the output under `filter` (the current
    /// filter, read once per batch); a dropped event is counted.
    pub fn keep(&self, ev: &Event, filter: &Filter) -> bool {
        if self.expected_cred_change(ev) {
            self.counters
                .cred_allowlisted
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if filter.drops(ev) {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A change to root by the exec of an allowlisted program.
    fn expected_cred_change(&self, ev: &Event) -> bool {
        ev.get("data_type") == Some(DATA_TYPE_CRED)
            && ev.get("trigger") == Some("exec")
            && ev
                .get("filename")
                .is_some_and(|f| self.cred_allowlist.contains(f))
    }

    /// The stage's loop: batches from `rx`, the kept events to `out`.
    /// Ends when the queue is closed, or once `upstream_done` is set and
    /// the queue is empty.
    fn run(self, rx: Receiver<Event>, out: Link, upstream_done: &AtomicBool) {
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) if upstream_done.load(Ordering::Relaxed) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let filter = self.filter.current();
            for ev in std::iter::once(first).chain(rx.try_iter().take(4096)) {
                if self.keep(&ev, &filter) && out.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts the detect thread.
pub fn start(
    detect: Detect,
    rx: Receiver<Event>,
    out: Link,
    upstream_done: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kestrel-detect".into())
        .spawn(move || detect.run(rx, out, &upstream_done))
        .context("starting the detection thread")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ev(pairs: &[(&'static str, &str)]) -> Event {
        let mut e = Event::with_capacity(4);
        for (k, v) in pairs {
            e.push(k, *v);
        }
        e
    }

    #[test]
    fn allowlisted_execs_to_root_are_dropped_and_counted() {
        let counters = Arc::new(DetectCounters::default());
        let d = Detect::new(
            &DetectSettings::default().resolve().unwrap(),
            counters.clone(),
        );
        let f = Filter::default();
        let sudo = ev(&[
            ("data_type", "604"),
            ("trigger", "exec"),
            ("filename", "/usr/bin/sudo"),
        ]);
        let other = ev(&[
            ("data_type", "604"),
            ("trigger", "exec"),
            ("filename", "/tmp/x"),
        ]);
        let ptrace = ev(&[
            ("data_type", "604"),
            ("trigger", "ptrace"),
            ("filename", "/usr/bin/sudo"),
        ]);
        let exec = ev(&[("data_type", "59"), ("filename", "/usr/bin/sudo")]);
        assert!(!d.keep(&sudo, &f));
        assert!(d.keep(&other, &f) && d.keep(&ptrace, &f) && d.keep(&exec, &f));
        assert_eq!(counters.cred_allowlisted.load(Ordering::Relaxed), 1);
        assert_eq!(counters.filtered.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_filter_drops_and_counts() {
        let counters = Arc::new(DetectCounters::default());
        let d = Detect::new(
            &DetectConfig {
                cred_allowlist: vec![],
            },
            counters.clone(),
        );
        let exec = ev(&[("data_type", "59"), ("comm", "true")]);
        d.filter().edit(|f| {
            f.disabled.insert("59".into());
        });
        assert!(!d.keep(&exec, &d.filter().current()));
        assert!(d.keep(&exec, &Filter::default()));
        assert_eq!(counters.filtered.load(Ordering::Relaxed), 1);
    }
}
