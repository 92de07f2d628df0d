//! Detect: the policies applied to finished events, on a thread of its
//! own between enrichment and output, then the rule engine
//! (`kestrel-detect`), whose alerts (data_type 9000) join the stream
//! right after the event that completed them.
//!
//! Events get their `event_id` here, not in the output, so that an
//! alert can name the events that made it.
//!
//! Two policies drop events (counted) before the rules see them:
//! - the credential allowlist: a change to root by the exec of a program
//!   that becomes root by design (sudo, su, sshd) is expected, not news;
//! - the control server's event filter (disabled data_types, excluded
//!   executables and comms), which `config` commands change at run time.
//!   A change swaps one `Arc`, read once per batch, so events of the types
//!   still enabled are never lost.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use kestrel_detect::{Engine, EngineConfig, EngineCounters, LoadError, Origin, RuleSet};
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

    /// A directory of rule files (`*.yaml`, docs/detections.md), loaded
    /// beside the built-in set; repeat the flag for several. A file that
    /// does not parse stops the agent at start; SIGHUP reloads them all
    /// (a bad file then keeps the rules in force). [default: none]
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Option<Vec<PathBuf>>,

    /// A directory of Sigma rules (`*.yml`, `*.yaml`, subdirectories
    /// too), translated into Kestrel's rules: log sources `product: linux`
    /// with categories process_creation, file_event and
    /// network_connection, and correlation rules; a rule the mapping
    /// cannot serve is logged with the reason and skipped
    /// (docs/detections.md); repeat the flag for several. [default: none]
    #[arg(long = "sigma", value_name = "DIR")]
    pub sigma: Option<Vec<PathBuf>>,

    /// Leave the built-in rule set out (only --rules directories).
    // No value on the command line; optional so that a flag left out
    // leaves the file's `no_builtin_rules = true` alone.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_builtin_rules: Option<bool>,

    /// Seconds during which repeated alerts of one rule and key are
    /// counted instead of sent; the next one sent carries the count in
    /// `suppressed`. 0 sends every one. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub alert_suppress_secs: Option<u64>,

    /// Entries of detection state (sequences in progress, threshold
    /// groups, first-seen values) for all rules together; past it the
    /// least recently used go (counted in detect_state_evictions).
    /// [default: 8192]
    #[arg(long, value_name = "N")]
    pub detect_state_entries: Option<u64>,
}

/// Where the rules come from.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub builtin: bool,
    pub dirs: Vec<PathBuf>,
    pub sigma: Vec<PathBuf>,
}

impl RulesConfig {
    /// Every rule file's text, and the lists the agent fills itself:
    /// `kestrel_agent_pids`, the agent's own pid (`agent_pid`), for the
    /// rule on signals sent to it.
    pub fn sources(
        &self,
        agent_pid: Option<u32>,
    ) -> std::result::Result<Vec<kestrel_detect::RuleSource>, LoadError> {
        let mut sources = if self.builtin {
            kestrel_detect::builtin_sources()
        } else {
            Vec::new()
        };
        for d in &self.dirs {
            sources.extend(kestrel_detect::read_dir(d, Origin::Custom)?);
        }
        // After Kestrel's own: a Sigma rule whose id is taken is the one
        // skipped.
        for d in &self.sigma {
            sources.extend(kestrel_detect::read_dir(d, Origin::Sigma)?);
        }
        sources.push(kestrel_detect::RuleSource {
            origin: Origin::Builtin,
            name: "agent:lists".into(),
            text: format!(
                "lists:\n  kestrel_agent_pids: [{}]\n",
                agent_pid.map(|p| format!("'{p}'")).unwrap_or_default()
            ),
        });
        Ok(sources)
    }

    /// Reads and compiles every rule file (again, on a reload).
    pub fn load(&self) -> std::result::Result<RuleSet, LoadError> {
        kestrel_detect::compile(&self.sources(Some(std::process::id()))?)
    }
}

/// Logs each rule read but not served, with its reason: at start (once
/// logging is up) and after every reload.
fn log_unsupported(set: &RuleSet) {
    for r in set.report.iter().filter(|r| r.status == "unsupported") {
        tracing::warn!(
            rule_id = %r.rule_id,
            title = %r.title,
            file = %r.file,
            reason = %r.reason,
            "rule not loaded: Kestrel cannot serve it"
        );
    }
}

/// The detect stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    pub cred_allowlist: Vec<String>,
    pub rules: RulesConfig,
    /// The rules as loaded at start.
    pub set: RuleSet,
    pub engine: EngineConfig,
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
        let rules = RulesConfig {
            builtin: self.no_builtin_rules != Some(true),
            dirs: self.rules.unwrap_or_default(),
            sigma: self.sigma.unwrap_or_default(),
        };
        // Loaded here, so a bad rule file stops the agent before it
        // loads a probe.
        let set = rules
            .load()
            .map_err(|e| anyhow::anyhow!("bad rule file: {e}"))?;
        let suppress = crate::config::range(
            "alert_suppress_secs",
            self.alert_suppress_secs.unwrap_or(60),
            0,
            86_400,
        )?;
        let entries = crate::config::range(
            "detect_state_entries",
            self.detect_state_entries.unwrap_or(8192),
            16,
            1 << 20,
        )?;
        Ok(DetectConfig {
            cred_allowlist,
            rules,
            set,
            engine: EngineConfig {
                suppress_ms: suppress * 1000,
                max_state_entries: entries as usize,
                alert_prefix: String::new(),
            },
        })
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
    /// The rule engine's: alerts, suppressed alerts, state evictions,
    /// rules in force, reloads.
    pub engine: Arc<EngineCounters>,
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

/// A reload of the rules asked for by the control server: the files are
/// read and compiled on the caller's thread, so that a file that does not
/// parse is the command's answer, and the compiled set is handed to the
/// detect stage, which swaps it in before its next event.
#[derive(Clone)]
pub struct RuleReloader {
    rules: RulesConfig,
    flag: Arc<AtomicBool>,
    pending: Arc<Mutex<Option<RuleSet>>>,
    counters: Arc<DetectCounters>,
}

impl RuleReloader {
    /// Compiles the rule files; on success the detect stage takes them.
    /// Returns how many rules they hold.
    pub fn request(&self) -> std::result::Result<usize, String> {
        match self.rules.load() {
            Ok(set) => {
                let n = set.rules.len();
                *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
                self.flag.store(true, Ordering::Release);
                Ok(n)
            }
            Err(e) => {
                self.counters
                    .engine
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reloading the rules failed: the rules in force stay");
                Err(format!("the rules in force stay: {e}"))
            }
        }
    }
}

/// The detect stage's policies and rules.
pub struct Detect {
    cred_allowlist: HashSet<String>,
    filter: Arc<SharedFilter>,
    counters: Arc<DetectCounters>,
    engine: Engine,
    rules: RulesConfig,
    /// Set by SIGHUP: read the rule files again; or by the server's
    /// reload-rules, which leaves the set it compiled in `pending`.
    reload: Arc<AtomicBool>,
    pending: Arc<Mutex<Option<RuleSet>>>,
    /// `event_id` prefix (agent id and run) and the next sequence number.
    ids: String,
    seq: u64,
    alerts: Vec<Event>,
}

impl Detect {
    /// `ids` is the `event_id` prefix (see identity.rs).
    pub fn new(cfg: &DetectConfig, counters: Arc<DetectCounters>, ids: String) -> Self {
        let engine = Engine::new(
            cfg.set.clone(),
            EngineConfig {
                alert_prefix: ids.clone(),
                ..cfg.engine.clone()
            },
            counters.engine.clone(),
        );
        tracing::info!(
            rules = engine.rules().count(),
            builtin = cfg.rules.builtin,
            dirs = ?cfg.rules.dirs,
            sigma = ?cfg.rules.sigma,
            unsupported = cfg.set.report.iter().filter(|r| r.status == "unsupported").count(),
            "detection rules loaded"
        );
        log_unsupported(&cfg.set);
        Detect {
            cred_allowlist: cfg.cred_allowlist.iter().cloned().collect(),
            filter: Arc::default(),
            counters,
            engine,
            rules: cfg.rules.clone(),
            reload: Arc::default(),
            pending: Arc::default(),
            ids,
            seq: 0,
            alerts: Vec::new(),
        }
    }

    /// The flag that asks for a reload of the rules (SIGHUP sets it).
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    /// What the control server's reload-rules command acts through.
    pub fn reloader(&self) -> RuleReloader {
        RuleReloader {
            rules: self.rules.clone(),
            flag: self.reload.clone(),
            pending: self.pending.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Reads the rule files again (or takes the set a reload-rules
    /// command compiled). A rule whose definition did not change keeps its
    /// state; a file that does not parse keeps the old rules.
    pub fn reload_rules(&mut self) {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match pending.map_or_else(|| self.rules.load(), Ok) {
            Ok(set) => {
                let n = set.rules.len();
                log_unsupported(&set);
                let kept = self.engine.reload(set);
                tracing::info!(rules = n, kept_state = kept, "detection rules reloaded");
            }
            Err(e) => {
                self.counters
                    .engine
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reloading the rules failed: the rules in force stay");
            }
        }
    }

    /// Runs `ev` through the policies and, if kept, gives it its
    /// `event_id` and runs it through the rules: `emit` gets it, then
    /// the alerts it completed. Returns false when `emit` did.
    pub fn handle(
        &mut self,
        mut ev: Event,
        filter: &Filter,
        mut emit: impl FnMut(Event) -> bool,
    ) -> bool {
        if !self.keep(&ev, filter) {
            return true;
        }
        ev.push_display("event_id", format_args!("{}-{}", self.ids, self.seq));
        self.seq += 1;
        self.engine.process(&ev, &mut self.alerts);
        if !emit(ev) {
            return false;
        }
        let mut alerts = std::mem::take(&mut self.alerts);
        for mut a in alerts.drain(..) {
            if filter.drops(&a) {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            a.push_display("event_id", format_args!("{}-{}", self.ids, self.seq));
            self.seq += 1;
            if !emit(a) {
                return false;
            }
        }
        self.alerts = alerts;
        true
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
    fn run(mut self, rx: Receiver<Event>, out: Link, upstream_done: &AtomicBool) {
        loop {
            // Here too, so a reload on an idle host is not left waiting.
            if self.reload.swap(false, Ordering::Acquire) {
                self.reload_rules();
            }
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) if upstream_done.load(Ordering::Relaxed) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let filter = self.filter.current();
            for ev in std::iter::once(first).chain(rx.try_iter().take(4096)) {
                // Checked before every event, not once per wait: a reload
                // asked for while the thread waited, or during a batch
                // (which pulls events as it goes), is in force for the
                // next event, so an event made after the command's answer
                // never meets the old rules.
                if self.reload.swap(false, Ordering::Acquire) {
                    self.reload_rules();
                }
                if !self.handle(ev, &filter, |e| out.send(e).is_ok()) {
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
            "t-1".into(),
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
                ..DetectSettings::default().resolve().unwrap()
            },
            counters.clone(),
            "t-1".into(),
        );
        let exec = ev(&[("data_type", "59"), ("comm", "true")]);
        d.filter().edit(|f| {
            f.disabled.insert("59".into());
        });
        assert!(!d.keep(&exec, &d.filter().current()));
        assert!(d.keep(&exec, &Filter::default()));
        assert_eq!(counters.filtered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn events_get_ids_and_alerts_follow_their_trigger() {
        let d = DetectSettings::default().resolve().unwrap();
        let mut det = Detect::new(&d, Arc::default(), "a-2".into());
        let mut out = Vec::new();
        let memfd = ev(&[
            ("data_type", "59"),
            ("exe", "/memfd:x (deleted)"),
            ("exe_memfd", "true"),
            ("res", "0"),
            ("time", "1000"),
        ]);
        let plain = ev(&[("data_type", "59"), ("exe", "/usr/bin/true")]);
        for e in [plain, memfd] {
            assert!(det.handle(e, &Filter::default(), |e| {
                out.push(e);
                true
            }));
        }
        let ids: Vec<_> = out.iter().map(|e| e.get("event_id").unwrap()).collect();
        assert_eq!(ids, ["a-2-0", "a-2-1", "a-2-2"]);
        assert_eq!(out[2].get("data_type"), Some("9000"));
        assert_eq!(out[2].get("trigger_event_ids"), Some("a-2-1"));
        assert!(out[2].get("alert_id").unwrap().starts_with("a-2-alert-"));
    }
}
