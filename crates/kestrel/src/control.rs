//! The agent's link to `kestrel server` (`--server`): heartbeats with the
//! agent's state, and the server's commands, executed here.
//!
//! The control client runs on its own thread with its own tokio runtime;
//! the collecting threads never wait for it, so the agent keeps collecting
//! and writing events while the server is down. What commands change is
//! held in [`Runtime`], which the agent's threads read:
//! - the event filter (disabled data_types, excluded executables and
//!   comms), applied by the output thread to whole batches: a change swaps
//!   one `Arc`, so events of the types still enabled are never lost;
//! - a pending output change, which the output thread applies between two
//!   batches after flushing the old sink;
//! - file exclusions, applied to the kernel map by the collecting thread,
//!   which owns the probes.
//!
//! Changes made by commands last until the agent stops; the agent's flags
//! and config file stay the source of truth at start.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::excludes::FileExcludes;
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::Sender;
use kestrel_control::client::{AgentHandle, ClientConfig, Outcome};
use kestrel_control::pb::{Command, Heartbeat, ProbeStatus};
use kestrel_event::Event;
use kestrel_probes::{ProbeReport, ProbeState, Probes};
use kestrel_sinks::OutputSpec;

/// `--server` and friends, resolved.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// HOST:PORT of the server's gRPC listener.
    pub server: String,
    /// The server's CA certificate.
    pub ca_file: PathBuf,
    /// The enrollment token, needed until the agent has its secret.
    pub enroll_token_file: Option<PathBuf>,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// Host name to report instead of the system's.
    pub hostname: Option<String>,
    /// Where the agent id and secret are kept.
    pub state_dir: PathBuf,
}

/// Which events the output drops, as the server's `config` commands set.
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

/// Counters for heartbeats.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Events written.
    pub emitted: u64,
    /// Events that could not be written.
    pub write_errors: u64,
    /// Records lost in the kernel.
    pub kernel_lost: u64,
    /// Bytes waiting in the output's disk spool (Kafka), 0 without one.
    pub spool_bytes: u64,
    /// Events the output dropped for good (full spool, refused by Kafka).
    pub spool_dropped: u64,
}

/// Reads the output counters (emitted, write errors) live.
pub type OutputCounters = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

type Reply = Sender<std::result::Result<(), String>>;

enum ProbeRequest {
    /// A directory, and the key it names now (looked up by the control
    /// thread: a stat may hang, and the collecting thread must not).
    Exclude(PathBuf, kestrel_probes::DirKey),
    Include(PathBuf),
}

/// What the server's commands change, shared with the agent's threads.
#[derive(Default)]
pub struct Runtime {
    filter: RwLock<Arc<Filter>>,
    /// Events dropped by the filter.
    pub filtered: AtomicU64,
    output: Mutex<Option<(OutputSpec, Reply)>>,
    probes: Mutex<Vec<(ProbeRequest, Reply)>>,
    /// Published by the collecting thread between two ring-buffer polls.
    stats: Mutex<Stats>,
    /// Read at each heartbeat: the collecting thread can be busy for a
    /// while, the output counters are always current.
    output_counters: std::sync::OnceLock<OutputCounters>,
    restart: AtomicBool,
    last_error: Mutex<String>,
}

impl Runtime {
    /// A runtime with nothing filtered.
    pub fn new() -> Arc<Runtime> {
        Arc::new(Runtime::default())
    }

    /// The current filter.
    pub fn filter(&self) -> Arc<Filter> {
        self.filter.read().unwrap().clone()
    }

    /// An output change waiting for the output thread.
    pub fn take_output_change(&self) -> Option<(OutputSpec, Reply)> {
        self.output.lock().unwrap().take()
    }

    /// Applies waiting file exclusion changes; called by the thread that
    /// owns the probes.
    pub fn serve_probes(&self, probes: &Probes, excludes: &mut FileExcludes) {
        let reqs = std::mem::take(&mut *self.probes.lock().unwrap());
        for (req, reply) in reqs {
            let r = match &req {
                ProbeRequest::Exclude(d, key) => excludes.add(d, *key, probes),
                ProbeRequest::Include(d) => excludes.remove(d, probes),
            };
            let _ = reply.send(r.map_err(|e| e.to_string()));
        }
    }

    /// Publishes the counters heartbeats report.
    pub fn publish(&self, s: Stats) {
        *self.stats.lock().unwrap() = s;
    }

    /// Gives heartbeats the output's live counters.
    pub fn set_output_counters(&self, f: OutputCounters) {
        let _ = self.output_counters.set(f);
    }

    /// Records the agent's last error, reported in heartbeats.
    pub fn set_error(&self, e: impl Into<String>) {
        *self.last_error.lock().unwrap() = e.into();
    }

    /// Whether a `restart` command asked the agent to re-execute itself.
    pub fn restart_requested(&self) -> bool {
        self.restart.load(Ordering::Relaxed)
    }

    /// Applies one `config KEY=VALUE` command; returns what changed.
    pub fn apply_config(&self, kv: &str) -> std::result::Result<String, String> {
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("config needs KEY=VALUE, got {kv:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        let list = || -> BTreeSet<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let edit = |f: &dyn Fn(&mut Filter)| -> Filter {
            let mut w = self.filter.write().unwrap();
            let mut next = (**w).clone();
            f(&mut next);
            *w = Arc::new(next.clone());
            next
        };
        let show = |s: &BTreeSet<String>| {
            if s.is_empty() {
                "none".to_string()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(",")
            }
        };
        match key {
            "disable" | "enable" => {
                let types = list();
                if types.is_empty() || !types.iter().all(|t| t.parse::<u32>().is_ok()) {
                    return Err(format!("{key} needs data_type codes, e.g. {key}=59,42"));
                }
                let f = edit(&|f| {
                    for t in &types {
                        if key == "disable" {
                            f.disabled.insert(t.clone());
                        } else {
                            f.disabled.remove(t);
                        }
                    }
                });
                Ok(format!(
                    "{key}d data_type {}; disabled now: {}",
                    show(&types),
                    show(&f.disabled)
                ))
            }
            "exclude_exe" | "include_exe" | "exclude_comm" | "include_comm" => {
                let items = list();
                if items.is_empty() {
                    return Err(format!("{key} needs a value"));
                }
                let f = edit(&|f| {
                    let set = if key.ends_with("exe") {
                        &mut f.exes
                    } else {
                        &mut f.comms
                    };
                    for i in &items {
                        if key.starts_with("exclude") {
                            set.insert(i.clone());
                        } else {
                            set.remove(i);
                        }
                    }
                });
                Ok(format!(
                    "excluded executables: {}; excluded comms: {}",
                    show(&f.exes),
                    show(&f.comms)
                ))
            }
            "exclude_path" | "include_path" => {
                let dir = PathBuf::from(value);
                if !dir.is_absolute() {
                    return Err(format!("{key} needs an absolute directory"));
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let req = if key == "exclude_path" {
                    match kestrel_probes::DirKey::of(&dir) {
                        Ok(k) => ProbeRequest::Exclude(dir.clone(), k),
                        Err(e) => return Err(format!("{key} {}: {e}", dir.display())),
                    }
                } else {
                    ProbeRequest::Include(dir.clone())
                };
                self.probes.lock().unwrap().push((req, tx));
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(Ok(())) => Ok(format!(
                        "file creations under {} {}",
                        dir.display(),
                        if key == "exclude_path" {
                            "excluded"
                        } else {
                            "reported again"
                        }
                    )),
                    Ok(Err(e)) => Err(format!("{key} {}: {e}", dir.display())),
                    Err(_) => Err("the collecting thread did not answer".into()),
                }
            }
            "output" => {
                let spec: OutputSpec = value.parse().map_err(|e| format!("output: {e}"))?;
                let (tx, rx) = crossbeam_channel::bounded(1);
                *self.output.lock().unwrap() = Some((spec.clone(), tx));
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(Ok(())) => Ok(format!("output is now {spec}")),
                    Ok(Err(e)) => Err(format!("output {spec}: {e}; the old output is kept")),
                    Err(_) => Err("the output thread did not answer".into()),
                }
            }
            _ => Err(format!(
                "unknown config key {key:?}: use disable, enable, exclude_exe, include_exe, \
                 exclude_comm, include_comm, exclude_path, include_path or output"
            )),
        }
    }
}

/// Scans for rootkits on the server's command, sending findings through
/// `tx`; returns the summary.
fn run_rootkit_scan(tx: &Sender<Event>) -> Result<String> {
    let report = kestrel_scan::rootkit::scan(&kestrel_scan::rootkit::Options::default())
        .map_err(|e| anyhow!("the rootkit scan could not run: {e}"))?;
    for w in &report.warnings {
        tracing::warn!("rootkit scan: {w}");
    }
    let findings = report.events.len();
    for ev in report.events {
        tx.send(ev)
            .map_err(|_| anyhow!("the agent is stopping: findings not sent"))?;
    }
    tracing::info!(findings, "{}", report.summary);
    Ok(report.summary)
}

/// Re-executes the agent (`/proc/self/exe`, same arguments); returns only
/// on failure.
pub fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    tracing::info!("restarting on the server's command");
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .exec();
    anyhow!("restart: cannot re-execute the agent: {err}")
}

struct Handle {
    rt: Arc<Runtime>,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    probes: Vec<ProbeStatus>,
    agent_id: String,
    hostname: String,
    heartbeat_secs: u64,
    started: Instant,
    prev: Mutex<(Instant, u64, u64)>,
    os: String,
    kernel: String,
}

impl AgentHandle for Handle {
    fn heartbeat(&self) -> Heartbeat {
        let mut s = *self.rt.stats.lock().unwrap();
        if let Some(f) = self.rt.output_counters.get() {
            (s.emitted, s.write_errors) = f();
        }
        let (cpu_ms, rss) = self_usage();
        let now = Instant::now();
        let (eps, cpu_pct) = {
            let mut p = self.prev.lock().unwrap();
            let secs = now.duration_since(p.0).as_secs_f64().max(0.001);
            let r = (
                s.emitted.saturating_sub(p.1) as f64 / secs,
                cpu_ms.saturating_sub(p.2) as f64 / 10.0 / secs,
            );
            *p = (now, s.emitted, cpu_ms);
            r
        };
        let (spool_bytes, spool_dropped) = (s.spool_bytes, s.spool_dropped);
        Heartbeat {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            ips: local_ips(),
            os: self.os.clone(),
            kernel: self.kernel.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            cpu_percent: cpu_pct,
            cpu_millis: cpu_ms,
            rss_bytes: rss,
            events_per_sec: eps,
            events_total: s.emitted,
            drops: s.kernel_lost + s.write_errors + s.spool_dropped,
            kernel_lost: s.kernel_lost,
            write_errors: s.write_errors,
            filtered: self.rt.filtered.load(Ordering::Relaxed),
            spool_bytes,
            spool_dropped,
            probes: self.probes.clone(),
            last_error: self.rt.last_error.lock().unwrap().clone(),
            heartbeat_secs: self.heartbeat_secs,
        }
    }

    fn execute(&self, cmd: &Command) -> Outcome {
        let out = match cmd.kind.as_str() {
            "config" => match self.rt.apply_config(&cmd.arg) {
                Ok(m) => Outcome::ok(m),
                Err(e) => Outcome::failed(e),
            },
            "inventory" => self.inventory(),
            "scan-rootkit" => match run_rootkit_scan(&self.tx) {
                Ok(m) => Outcome::ok(m),
                Err(e) => Outcome::failed(format!("{e:#}")),
            },
            "restart" => {
                let (rt, stop) = (self.rt.clone(), self.stop.clone());
                Outcome {
                    ok: true,
                    message: format!(
                        "restarting (pid {}, up {} s): draining, then re-executing",
                        std::process::id(),
                        self.started.elapsed().as_secs()
                    ),
                    after_ack: Some(Box::new(move || {
                        rt.restart.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    })),
                }
            }
            other => Outcome::failed(format!(
                "unknown command {other:?}: this agent knows inventory, scan-rootkit, restart and config"
            )),
        };
        if !out.ok {
            self.rt
                .set_error(format!("command {} failed: {}", cmd.kind, out.message));
        }
        out
    }

    fn connection(&self, connected: bool, error: Option<&str>) {
        if let (false, Some(e)) = (connected, error) {
            self.rt.set_error(format!("control: {e}"));
        }
    }
}

impl Handle {
    fn inventory(&self) -> Outcome {
        let host = kestrel_event::Host::new();
        let started = Instant::now();
        let (events, warnings) = crate::inventory::collect(crate::inventory::What::All, &host);
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        let n = events.len();
        for ev in events {
            *counts
                .entry(ev.get("data_type").unwrap_or("?").to_string())
                .or_default() += 1;
            if self.tx.send(ev).is_err() {
                return Outcome::failed("the agent is stopping: inventory not sent");
            }
        }
        for w in &warnings {
            tracing::warn!("inventory: {w}");
        }
        let by_type: Vec<String> = counts.iter().map(|(t, c)| format!("{t}={c}")).collect();
        Outcome::ok(format!(
            "sent {n} inventory events ({}) with {} warnings in {:.1} s",
            by_type.join(" "),
            warnings.len(),
            started.elapsed().as_secs_f64()
        ))
    }
}

/// Starts the control client thread.
pub fn start(
    cfg: &ControlConfig,
    rt: Arc<Runtime>,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    probes: &[ProbeReport],
) -> Result<()> {
    let ca_pem = std::fs::read(&cfg.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", cfg.ca_file.display()))?;
    let agent_id = kestrel_control::agent_id(&cfg.state_dir).with_context(|| {
        format!(
            "agent id in the state directory {}",
            cfg.state_dir.display()
        )
    })?;
    let secret_file = cfg.state_dir.join(kestrel_control::SECRET_FILE);
    let enroll_token = match &cfg.enroll_token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read --enroll-token-file {}", p.display()))?
            .trim()
            .to_string(),
        None if secret_file.exists() => String::new(),
        None => anyhow::bail!(
            "--server needs --enroll-token-file until the agent is enrolled ({} is missing)",
            secret_file.display()
        ),
    };
    let hostname = cfg
        .hostname
        .clone()
        .unwrap_or_else(|| kestrel_event::Host::new().hostname.clone());
    let client = ClientConfig {
        server: cfg.server.clone(),
        ca_pem,
        enroll_token,
        agent_id: agent_id.clone(),
        hostname: hostname.clone(),
        secret_file: Some(secret_file),
        heartbeat: cfg.heartbeat,
        backoff_max: Duration::from_secs(30),
    };
    kestrel_control::client::endpoint(&client).map_err(|e| anyhow!("--server: {e}"))?;
    let handle = Arc::new(Handle {
        rt,
        tx,
        stop,
        probes: probes
            .iter()
            .map(|p| {
                let (state, reason) = match &p.state {
                    ProbeState::Attached => ("attached", String::new()),
                    ProbeState::NotApplicable(why) => ("not_applicable", why.clone()),
                };
                ProbeStatus {
                    program: p.program.into(),
                    hook: p.target.into(),
                    state: state.into(),
                    reason,
                }
            })
            .collect(),
        agent_id: agent_id.clone(),
        hostname,
        heartbeat_secs: cfg.heartbeat.as_secs(),
        started: Instant::now(),
        prev: Mutex::new((Instant::now(), 0, self_usage().0)),
        os: os_name(),
        kernel: kernel_release(),
    });
    tracing::info!(server = %cfg.server, agent_id = %agent_id, "control: connecting to the server");
    std::thread::Builder::new()
        .name("kestrel-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(4)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "control: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(kestrel_control::client::run(client, handle));
        })
        .context("starting the control thread")?;
    Ok(())
}

/// This process's CPU time in ms and RSS in bytes.
fn self_usage() -> (u64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some(ticks * 1000 / hz)
        })
        .unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

fn os_name() -> String {
    os_pretty_name().unwrap_or_else(|| "Linux".into())
}

/// PRETTY_NAME from /etc/os-release.
pub(crate) fn os_pretty_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// The host's addresses, loopback left out.
fn local_ips() -> Vec<String> {
    let mut out: Vec<String> = kestrel_event::host::interface_addrs()
        .into_iter()
        .filter(|a| !a.ip.is_loopback())
        .map(|a| a.ip.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pairs: &[(&'static str, &str)]) -> Event {
        let mut e = Event::with_capacity(4);
        for (k, v) in pairs {
            e.push(k, *v);
        }
        e
    }

    #[test]
    fn config_commands_change_the_filter() {
        let rt = Runtime::new();
        let exec = ev(&[
            ("data_type", "59"),
            ("exe", "/usr/bin/true"),
            ("comm", "true"),
        ]);
        let conn = ev(&[
            ("data_type", "42"),
            ("exe", "/usr/bin/curl"),
            ("comm", "curl"),
        ]);
        assert!(!rt.filter().drops(&exec));
        rt.apply_config("disable=59").unwrap();
        assert!(rt.filter().drops(&exec) && !rt.filter().drops(&conn));
        rt.apply_config("enable=59").unwrap();
        assert!(!rt.filter().drops(&exec));
        rt.apply_config("exclude_comm=curl").unwrap();
        assert!(rt.filter().drops(&conn) && !rt.filter().drops(&exec));
        rt.apply_config("include_comm=curl").unwrap();
        rt.apply_config("exclude_exe=/usr/bin/true").unwrap();
        assert!(rt.filter().drops(&exec) && !rt.filter().drops(&conn));
    }

    #[test]
    fn bad_config_commands_fail_clearly() {
        let rt = Runtime::new();
        assert!(rt
            .apply_config("nonsense")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(rt
            .apply_config("colour=blue")
            .unwrap_err()
            .contains("unknown config key"));
        assert!(rt
            .apply_config("disable=exec")
            .unwrap_err()
            .contains("data_type codes"));
        assert!(rt
            .apply_config("exclude_path=relative")
            .unwrap_err()
            .contains("absolute"));
        assert!(rt
            .apply_config("output=kafka:x")
            .unwrap_err()
            .contains("output"));
        assert_eq!(*rt.filter(), Filter::default());
    }
}
