//! Output: events (which got their `event_id` in detect) are encoded as
//! JSON lines and written to the sink in batches, on a thread of their
//! own.
//!
//! The sink is flushed whenever the queue runs dry, so a quiet host sees
//! its events at once and a busy one in batches. SIGHUP re-opens it (log
//! rotation); the control server's `config output=...` replaces it between
//! two batches, after flushing the old one.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kestrel_event::Event;
use kestrel_sinks::{FileLimits, KafkaIdentity, KafkaSpec, OutputSpec, Sink};

use crate::config::range;
use serde::Deserialize;

/// Settings of the output stage.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct OutputSettings {
    /// Where events go: "stdout", "file:PATH" to append JSON lines to
    /// PATH (re-opened on SIGHUP, for log rotation), or
    /// "kafka://HOST:PORT[,HOST:PORT...]/TOPIC[?OPTION=VALUE&...]" (options
    /// and the on-disk spool: docs/kafka.md). [default: stdout]
    #[arg(long, value_name = "OUTPUT")]
    pub output: Option<String>,

    /// A directory in which the control server's `config output=file:PATH`
    /// may put the event file (PATH directly in DIR); repeat the flag for
    /// several. Without it the server can switch to stdout, to this host's
    /// own --output, or to Kafka without file options, never to a file of
    /// its choosing. [default: none]
    #[arg(long = "output-allow", value_name = "DIR")]
    pub output_allow: Option<Vec<PathBuf>>,

    /// Size cap of a file output, in bytes: at the cap the file is rotated
    /// (see --output-keep). Off unless given.
    #[arg(long, value_name = "BYTES")]
    pub output_max_bytes: Option<u64>,

    /// Rotated files kept at the size cap (PATH.1 the newest); 0 stops
    /// writing at the cap instead (events dropped and counted in
    /// output_capped until a SIGHUP re-opens a smaller file). [default: 5]
    #[arg(long, value_name = "N")]
    pub output_keep: Option<u32>,
}

/// The output stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub spec: OutputSpec,
    /// What the control server may switch to.
    pub policy: OutputPolicy,
    pub limits: FileLimits,
}

impl OutputSettings {
    pub fn resolve(self) -> Result<OutputConfig> {
        let spec = self
            .output
            .unwrap_or_else(|| "stdout".into())
            .parse::<OutputSpec>()
            .map_err(|e| anyhow::anyhow!("bad config value: output: {e}"))?;
        let allow = self.output_allow.unwrap_or_default();
        for d in &allow {
            if !d.is_absolute()
                || d.components()
                    .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
            {
                bail!(
                    "bad config value: output_allow: {}: use an absolute directory without . or ..",
                    d.display()
                );
            }
        }
        let max_bytes = match self.output_max_bytes {
            None => None,
            Some(b) => Some(range("output_max_bytes", b, 4096, 1 << 50)?),
        };
        let keep = range(
            "output_keep",
            u64::from(self.output_keep.unwrap_or(5)),
            0,
            1000,
        )? as u32;
        if self.output_keep.is_some() && max_bytes.is_none() {
            bail!("bad config value: output_keep is given without output_max_bytes: set the size cap too");
        }
        Ok(OutputConfig {
            policy: OutputPolicy {
                host: spec.clone(),
                allow,
            },
            spec,
            limits: FileLimits {
                max_bytes,
                keep,
                stats: Arc::default(),
            },
        })
    }
}

/// The options of a Kafka output that name files.
fn kafka_paths(k: &KafkaSpec) -> [(&'static str, Option<&PathBuf>); 5] {
    [
        ("tls_ca", k.tls_ca.as_ref()),
        ("tls_cert", k.tls_cert.as_ref()),
        ("tls_key", k.tls_key.as_ref()),
        ("sasl_password_file", k.sasl_password_file.as_ref()),
        ("spool_dir", k.spool_dir.as_ref()),
    ]
}

/// What the control server's `config output=...` may choose. The server
/// must not pick where a root process writes (an event line in
/// /etc/profile.d would run as root at the next login) nor which files it
/// reads (a Kafka "password file" would send its text to the server's
/// broker): any path in a server's output must be this host's own
/// configured one, or lie directly in a directory the host allowed.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    /// The output this host was started with.
    pub host: OutputSpec,
    /// `--output-allow` directories.
    pub allow: Vec<PathBuf>,
}

impl OutputPolicy {
    /// Ok, or why the server may not switch to `spec`.
    pub fn check(&self, spec: &OutputSpec) -> std::result::Result<(), String> {
        let allowed = |p: &Path| {
            p.is_absolute()
                && p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
                && p.parent()
                    .is_some_and(|d| self.allow.iter().any(|a| a == d))
        };
        let refuse = |what: &str, p: &Path| {
            Err(format!(
                "{what} {} is not this host's to choose from the server: it must be the \
                 agent's own configured one or lie directly in a directory the host allowed \
                 with --output-allow ({})",
                p.display(),
                if self.allow.is_empty() {
                    "none allowed".to_string()
                } else {
                    self.allow
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        };
        match (spec, &self.host) {
            (OutputSpec::Stdout, _) => Ok(()),
            (OutputSpec::File(p), OutputSpec::File(h)) if p == h => Ok(()),
            (OutputSpec::File(p), _) if allowed(p) => Ok(()),
            (OutputSpec::File(p), _) => refuse("the output file", p),
            (OutputSpec::Kafka(k), host) => {
                let host = match host {
                    OutputSpec::Kafka(h) => kafka_paths(h),
                    _ => Default::default(),
                };
                for ((name, p), (_, h)) in kafka_paths(k).into_iter().zip(host) {
                    let Some(p) = p else { continue };
                    if h == Some(p) || allowed(p) {
                        continue;
                    }
                    return refuse(&format!("the Kafka option {name}:"), p);
                }
                Ok(())
            }
        }
    }
}

/// What the output stage counts.
#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Events written.
    pub emitted: AtomicU64,
    /// Events the output failed to take: write errors, and events dropped
    /// because the output stalled while the agent was stopping.
    pub write_errors: AtomicU64,
}

/// The answer to an output change: Ok, or why the new output was refused.
pub type Reply = Sender<std::result::Result<(), String>>;

/// An output change the control server asked for, waiting for the output
/// thread.
#[derive(Default)]
pub struct OutputSwitch(Mutex<Option<(OutputSpec, Reply)>>);

impl OutputSwitch {
    /// Asks for `spec`; the answer comes on `reply`.
    pub fn request(&self, spec: OutputSpec, reply: Reply) {
        *self.0.lock().unwrap() = Some((spec, reply));
    }

    fn take(&self) -> Option<(OutputSpec, Reply)> {
        self.0.lock().unwrap().take()
    }
}

/// Everything the output thread owns.
pub struct OutputStage {
    pub sink: Box<dyn Sink>,
    pub switch: Arc<OutputSwitch>,
    /// Set by SIGHUP.
    pub reopen: Arc<AtomicBool>,
    /// Set by the output when nobody reads it any more (broken pipe).
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<OutputCounters>,
    /// For an output opened on the server's command.
    pub kafka_id: KafkaIdentity,
    pub limits: FileLimits,
    /// Reports a failure to the control server's heartbeats.
    pub on_error: Box<dyn Fn(String) + Send>,
}

/// Starts the output thread; it ends once its queue is closed and written.
pub fn start(stage: OutputStage, rx: Receiver<Event>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kestrel-output".into())
        .spawn(move || stage.run(rx))
        .context("starting the output thread")
}

/// The JSON line of `ev` into `buf`.
pub fn encode(ev: &Event, buf: &mut Vec<u8>) {
    buf.clear();
    ev.write_json_line(buf);
}

impl OutputStage {
    fn run(mut self, rx: Receiver<Event>) {
        let mut buf = Vec::with_capacity(4096);
        let mut pending = 0u64;
        let mut last_error: Option<Instant> = None;
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.reopen.swap(false, Ordering::Relaxed) {
                // Whatever the old file could not take is dropped, not
                // kept: a full disk must not keep the agent on the old
                // (maybe deleted) file.
                let r = self.sink.reopen();
                let lost = self.sink.lost(0);
                if lost > 0 {
                    self.counters
                        .write_errors
                        .fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(events = lost, "events the old output could not take were dropped at the re-open (counted in write_errors)");
                }
                match r {
                    Ok(()) => tracing::info!("output re-opened (SIGHUP)"),
                    Err(e) => {
                        (self.on_error)(format!("re-opening the output failed: {e}"));
                        tracing::error!(error = %e, "re-opening the output failed; still writing to the old one")
                    }
                }
            }
            if let Some((spec, reply)) = self.switch.take() {
                // The old sink is flushed before the new one takes over, so
                // no event is lost or written twice.
                self.flush(&mut pending, &mut last_error);
                match spec.open(&self.kafka_id, &self.limits) {
                    Ok(new) => {
                        self.sink = new;
                        tracing::info!(output = %spec, "output changed on the server's command");
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(output = %spec, error = %e, "output change refused");
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            let Some(first) = first else { continue };
            for ev in std::iter::once(first).chain(rx.try_iter().take(4096)) {
                encode(&ev, &mut buf);
                match self.sink.write_line(&buf) {
                    Ok(()) => pending += 1,
                    Err(e) => self.fail(1, &e, &mut last_error),
                }
            }
            self.flush(&mut pending, &mut last_error);
            if self.stop.load(Ordering::Relaxed)
                && self.counters.write_errors.load(Ordering::Relaxed) > 0
            {
                // Broken output: drain the queue so the stages before it
                // are not stuck.
                let dropped = rx.try_iter().count() as u64;
                self.counters
                    .write_errors
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
        self.flush(&mut pending, &mut last_error);
    }

    fn flush(&mut self, pending: &mut u64, last_error: &mut Option<Instant>) {
        match self.sink.flush() {
            Ok(()) => {
                self.counters.emitted.fetch_add(*pending, Ordering::Relaxed);
            }
            Err(e) => {
                // The sink may have written some of them before failing.
                let lost = self.sink.lost(*pending).min(*pending);
                self.counters
                    .emitted
                    .fetch_add(*pending - lost, Ordering::Relaxed);
                self.fail(lost, &e, last_error)
            }
        }
        *pending = 0;
    }

    fn fail(&self, n: u64, e: &std::io::Error, last_error: &mut Option<Instant>) {
        self.counters.write_errors.fetch_add(n, Ordering::Relaxed);
        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            (self.on_error)(format!("writing events failed: {e}"));
            tracing::error!(error = %e, events = n, "writing events failed (counted in write_errors)");
            *last_error = Some(Instant::now());
        }
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Nobody reads the output any more: stop the agent.
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}
