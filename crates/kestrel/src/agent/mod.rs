//! `kestrel agent`: a chain of stages, each in its own module.
//!
//! ```text
//!  ring buffer ─▶ collect ─▶ enrich ══▶ detect ══▶ output ─▶ sink
//!                 (main thread, one     (thread   (thread
//!                  callback per record)  "detect") "output")
//!                              │   ▲
//!                     file     ▼   │ after the delay
//!                 creations  file hash (thread "filehash")
//!
//!  logins, USB, inventory, rootkit scans, control ─▶ sources ──▶ (enrich's queue)
//! ```
//!
//! `══▶` are bounded queues of `--queue-events` events. When a stage falls
//! behind, the one before it waits; at the head of the chain the ring
//! buffer absorbs the burst, and past that the kernel drops and counts.
//! Nothing is lost without a counter saying so: an event a stage cannot
//! pass on while the agent is stopping is counted in `write_errors`.
//!
//! Collection and enrichment share the thread that drains the ring buffer
//! (see [`enrich`]: /proc must be read while the process still lives).
//! Detection has a thread of its own so that the rules it will run cost
//! neither collection nor output their time.

pub mod collect;
pub mod counters;
pub mod detect;
pub mod enrich;
pub mod output;
pub mod sources;

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use kestrel_event::Event;
use kestrel_probes::Probes;

use crate::config::AgentConfig;
use counters::Counters;

/// How long an output may take nothing, while events wait for it, before
/// the agent stops without it.
const OUTPUT_STALL: Duration = Duration::from_secs(10);

/// The next stage has stopped taking events (its queue is gone).
#[derive(Debug)]
pub struct Closed;

/// The sending side of the bounded queue into a stage.
#[derive(Clone)]
pub struct Link {
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    /// Set once a send timed out while stopping: the stage behind is
    /// stalled, so later events are dropped (and counted) without waiting.
    jammed: Arc<AtomicBool>,
    counters: Arc<output::OutputCounters>,
}

impl Link {
    pub fn new(
        tx: Sender<Event>,
        stop: Arc<AtomicBool>,
        counters: Arc<output::OutputCounters>,
    ) -> Self {
        Link {
            tx,
            stop,
            jammed: Arc::new(AtomicBool::new(false)),
            counters,
        }
    }

    /// Queues `ev`, waiting while the next stage is behind, but not past a
    /// stop request: an output nobody reads (a paused pipe) must not keep
    /// SIGTERM from ending the agent. What is dropped then is counted in
    /// `write_errors`.
    pub fn send(&self, mut ev: Event) -> Result<(), Closed> {
        if self.jammed.load(Ordering::Relaxed) {
            return match self.tx.try_send(ev) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(TrySendError::Disconnected(_)) => Err(Closed),
            };
        }
        loop {
            match self.tx.send_timeout(ev, Duration::from_millis(200)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        self.jammed.store(true, Ordering::Relaxed);
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    ev = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => return Err(Closed),
            }
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(cfg: AgentConfig) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let reopen = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone())
        .context("installing signal handlers")?;

    // Root first: the state directory and the probes both need it, and
    // "run as root" says what to do where "permission denied" on a state
    // file would not.
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(kestrel_probes::ProbeError::NotRoot(euid).into());
    }
    let state_dir = &cfg.general.state_dir;
    let identity = crate::identity::load(state_dir)?;
    let kafka_id = kestrel_sinks::KafkaIdentity {
        agent_id: identity.agent_id.clone(),
        state_dir: state_dir.clone(),
    };
    let sink = cfg
        .output
        .spec
        .open(&kafka_id, &cfg.output.limits)
        .with_context(|| format!("opening output {}", cfg.output.spec))?;
    let counters = Arc::new(Counters::new(
        sink.kafka_stats(),
        cfg.output.limits.stats.clone(),
    ));

    let mut probes = collect::load_probes(&cfg.collect)?;
    counters.set_probes(probes.status());

    // Back to front: each stage exists before the one that feeds it.
    let queue = cfg.general.queue_events;
    let (to_output, output_rx) = crossbeam_channel::bounded(queue);
    let (to_detect, detect_rx) = crossbeam_channel::bounded(queue);
    let output_switch = Arc::new(output::OutputSwitch::default());
    // What the control server's commands change (filter, output, file
    // exclusions); inert without --server.
    let detect = detect::Detect::new(
        &cfg.detect,
        counters.detect.clone(),
        format!("{}-{}", identity.agent_id, identity.run),
    );
    // SIGHUP also reloads the rules (beside re-opening the output).
    signal_hook::flag::register(signal_hook::consts::SIGHUP, detect.reload_flag())
        .context("installing signal handlers")?;
    let ctl = crate::control::Runtime::new(
        detect.filter(),
        output_switch.clone(),
        cfg.output.policy.clone(),
        Some(detect.reloader()),
    );
    // Kept to count what a stalled output leaves in its queue at exit.
    let output_queue = output_rx.clone();
    let output = output::start(
        output::OutputStage {
            sink,
            switch: output_switch,
            reopen,
            stop: stop.clone(),
            counters: counters.output.clone(),
            kafka_id,
            limits: cfg.output.limits.clone(),
            on_error: {
                let ctl = ctl.clone();
                Box::new(move |e| ctl.set_error(e))
            },
        },
        output_rx,
    )?;
    let upstream_done = Arc::new(AtomicBool::new(false));
    let detector = detect::start(
        detect,
        detect_rx,
        Link::new(to_output, stop.clone(), counters.output.clone()),
        upstream_done.clone(),
    )?;
    let into_detect = Link::new(to_detect, stop.clone(), counters.output.clone());

    if let Some(addr) = cfg.general.metrics {
        crate::metrics::serve(addr, counters.clone().metrics_page())?;
    }
    let inject = sources::Inject::new(into_detect.clone(), counters.sources.clone());
    sources::start(&cfg.sources, &inject, &stop)?;
    if let Some(lc) = cfg.logins.clone() {
        crate::logins::start(lc, inject.clone(), counters.logins.clone(), stop.clone())?;
    }
    if cfg.sources.usb {
        crate::usb::start(inject.clone(), counters.usb.clone(), stop.clone())?;
    }
    if let Some(cc) = &cfg.control {
        crate::control::start(
            cc,
            ctl.clone(),
            inject,
            counters.clone(),
            stop.clone(),
            probes.status(),
        )?;
    }

    let seeded = probes.seed_processes(crate::seed::running_processes());
    tracing::debug!(processes = seeded, "running processes recorded");
    let mut excludes =
        crate::excludes::FileExcludes::start(&cfg.collect.file_excludes, &probes, stop.clone())?;
    let mut watched = crate::watched::Watched::start(&cfg.collect.watched, &probes)?;
    // Lean mode has no syscall tracepoint to see file creations with.
    let fan = if cfg.collect.syscall_tracepoints {
        None
    } else {
        Some(
            crate::fancreate::FanCreate::start(
                &cfg.collect.file_excludes,
                counters.fanotify.clone(),
            )?
            .spawn(queue, stop.clone())?,
        )
    };
    let enrich = enrich::EnrichStage::start(
        &cfg.enrich,
        into_detect,
        stop.clone(),
        counters.file_hash.clone(),
    )?;
    let collector = std::cell::RefCell::new(collect::Collector::new(
        &cfg.collect,
        enrich,
        counters.collect.clone(),
    )?);
    let ring = probes.ring_buffer(|data: &[u8]| collector.borrow_mut().on_record(data))?;

    tracing::info!(
        mode = if cfg.collect.syscall_tracepoints { "default" } else { "lean" },
        output = %cfg.output.spec,
        ring_buffer_bytes = cfg.collect.ring_buffer_bytes,
        wakeup_bytes = cfg.collect.wakeup_bytes,
        max_latency_ms = cfg.collect.max_latency.as_millis() as u64,
        "kestrel agent started"
    );

    let mut last_stats = Instant::now();
    let mut last_kernel = Instant::now() - Duration::from_secs(1);
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        // Records submitted without a wakeup are collected here at the
        // latest: poll returns after max_latency even when nothing woke it.
        if let Err(e) = ring.poll(cfg.collect.max_latency) {
            // EINTR from a signal lands here; the loop checks `stop` again.
            tracing::debug!(error = %e, "ring buffer poll");
        }
        if let Err(e) = ring.consume() {
            tracing::debug!(error = %e, "ring buffer consume");
        }
        if let Some(f) = &fan {
            take_created(&f.records, &excludes, &mut collector.borrow_mut());
        }
        if output.is_finished() || detector.is_finished() {
            result = Err(anyhow::anyhow!(
                "the {} thread stopped; see the error above",
                if output.is_finished() {
                    "output"
                } else {
                    "detection"
                }
            ));
            stop.store(true, Ordering::Relaxed);
            break;
        }
        ctl.serve_probes(&probes, &mut excludes, &mut watched);
        excludes.refresh(&probes);
        if last_kernel.elapsed() >= Duration::from_secs(1) {
            counters.refresh_kernel(&probes);
            last_kernel = Instant::now();
        }
        if last_stats.elapsed() >= cfg.general.stats_interval {
            counters.log(&probes, &collector.borrow().enrich_counters(), "periodic");
            last_stats = Instant::now();
        }
    }

    // In chain order: detach so no new records arrive, drain what the
    // kernel already wrote, let the file hashes finish, then each stage
    // writes out its queue and ends, down to the output.
    tracing::info!("stopping: detaching probes and draining");
    probes.detach();
    let _ = ring.consume();
    drop(ring);
    if let Some(f) = fan {
        let stats = f.finish(|r| take_created(r, &excludes, &mut collector.borrow_mut()));
        tracing::info!(
            target: "kestrel::stats",
            fanotify_records = stats.made.load(Ordering::Relaxed),
            fanotify_overflows = stats.overflows.load(Ordering::Relaxed),
            fanotify_unresolved = stats.unresolved.load(Ordering::Relaxed),
            "lean mode's file creations"
        );
    }
    let enrich_counters = collector.into_inner().finish();
    // User-space sources may still hold the queue into detection (one may
    // be blocked reading journalctl): detection ends on this flag once the
    // queue is empty, not when every sender is gone.
    upstream_done.store(true, Ordering::Relaxed);
    if detector.join().is_err() {
        result = Err(anyhow::anyhow!("the detection thread panicked"));
    }
    if let Err(e) = wait_output(output, &output_queue, &counters.output) {
        result = Err(e);
    }
    finish(&counters, &probes, &enrich_counters);
    if result.is_ok() && ctl.restart_requested() {
        return Err(crate::control::reexec());
    }
    result
}

/// Passes on lean mode's file creations not under an excluded directory.
fn take_created(
    records: &Receiver<kestrel_decode::Record>,
    excludes: &crate::excludes::FileExcludes,
    collector: &mut collect::Collector,
) {
    for rec in records.try_iter() {
        if let kestrel_decode::Record::File(f) = &rec {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&f.path));
            if excludes.covers(path) {
                continue;
            }
        }
        // Err: the chain is gone, which the loop notices.
        if collector.take(&rec).is_err() {
            return;
        }
    }
}

/// Waits for the output thread to write out its queue. An output that
/// takes nothing for [`OUTPUT_STALL`] while events wait for it (a reader
/// that paused its pipe) is given up on: the events in its queue are
/// counted in `write_errors`, and the agent ends without it.
fn wait_output(
    output: std::thread::JoinHandle<()>,
    queue: &Receiver<Event>,
    counters: &output::OutputCounters,
) -> Result<()> {
    let done =
        || counters.emitted.load(Ordering::Relaxed) + counters.write_errors.load(Ordering::Relaxed);
    let (mut seen, mut since) = (done(), Instant::now());
    while !output.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if done() != seen || queue.is_empty() {
            (seen, since) = (done(), Instant::now());
        } else if since.elapsed() >= OUTPUT_STALL {
            let left = queue.try_iter().count() as u64;
            counters.write_errors.fetch_add(left, Ordering::Relaxed);
            tracing::error!(
                events = left,
                "the output has taken nothing for {} s: stopping without it (its queued events \
                 are counted in write_errors, the batch it is writing is lost)",
                OUTPUT_STALL.as_secs()
            );
            return Ok(());
        }
    }
    output
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))
}

/// The final counters.
fn finish(counters: &Counters, probes: &Probes, enrich: &enrich::EnrichStageCounters) {
    counters.log(probes, enrich, "final");
    tracing::info!(
        target: "kestrel::stats",
        filtered = counters.detect.filtered.load(Ordering::Relaxed),
        "events dropped by the server's filter"
    );
}
