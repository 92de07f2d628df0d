//! Output: events get their `event_id`, are encoded as JSON lines and
//! written to the sink in batches, on a thread of their own.
//!
//! The sink is flushed whenever the queue runs dry, so a quiet host sees
//! its events at once and a busy one in batches. SIGHUP re-opens it (log
//! rotation); the control server's `config output=...` replaces it between
//! two batches, after flushing the old one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kestrel_event::Event;
use kestrel_sinks::{KafkaIdentity, OutputSpec, Sink};
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
}

/// The output stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub spec: OutputSpec,
}

impl OutputSettings {
    pub fn resolve(self) -> Result<OutputConfig> {
        let spec = self
            .output
            .unwrap_or_else(|| "stdout".into())
            .parse::<OutputSpec>()
            .map_err(|e| anyhow::anyhow!("bad config value: output: {e}"))?;
        Ok(OutputConfig { spec })
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
    /// The `event_id` prefix: agent id and run (see identity.rs).
    pub ids: String,
    /// For an output opened on the server's command.
    pub kafka_id: KafkaIdentity,
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

/// The JSON line of `ev` into `buf`, with `event_id` = `ids`-`seq`.
pub fn encode(ev: &mut Event, ids: &str, seq: u64, buf: &mut Vec<u8>) {
    ev.push("event_id", format!("{ids}-{seq}"));
    buf.clear();
    ev.write_json_line(buf);
}

impl OutputStage {
    fn run(mut self, rx: Receiver<Event>) {
        let mut seq = 0u64;
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
                match self.sink.reopen() {
                    Ok(()) => tracing::info!("output re-opened (SIGHUP)"),
                    Err(e) => tracing::error!(error = %e, "re-opening the output failed"),
                }
            }
            if let Some((spec, reply)) = self.switch.take() {
                // The old sink is flushed before the new one takes over, so
                // no event is lost or written twice.
                self.flush(&mut pending, &mut last_error);
                match spec.open(&self.kafka_id) {
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
            for mut ev in std::iter::once(first).chain(rx.try_iter().take(4096)) {
                encode(&mut ev, &self.ids, seq, &mut buf);
                seq += 1;
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
            Err(e) => self.fail(*pending, &e, last_error),
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
