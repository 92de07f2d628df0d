//! `kestrel agent`: probes → decode → enrich → sink, with counters.
//!
//! Two threads. The collecting thread drains the ring buffer, decodes and
//! enriches (procfs must be read while the process still lives), and
//! queues finished events. The output thread encodes and writes them in
//! batches. The queue is bounded: when output stalls, collection waits, the
//! ring buffer absorbs the burst, and past that the kernel drops and counts.
//! Nothing is lost without a counter saying so.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kestrel_decode::decode;
use kestrel_enrich::{EnrichConfig, EnrichCounters, Enricher};
use kestrel_event::Event;
use kestrel_probes::{Kind, ProbeConfig, Probes};
use kestrel_sinks::Sink;

use crate::config::AgentConfig;

/// Counters shared by the two threads.
#[derive(Default)]
struct Shared {
    received: AtomicU64,
    decode_errors: AtomicU64,
    emitted: AtomicU64,
    write_errors: AtomicU64,
    /// Events made in user space (inventory, logins), not read from the
    /// ring buffer.
    userspace: AtomicU64,
    /// Anti-rootkit scans that could not run (the reason is logged).
    rootkit_scan_failures: AtomicU64,
    /// Kernel counters per probe (name, submitted, lost), refreshed by the
    /// collecting thread about every second for the metrics endpoint.
    kernel: std::sync::Mutex<Vec<(&'static str, u64, u64)>>,
    /// The collecting thread has drained the ring buffer and stopped: the
    /// output thread writes what is queued and ends, without waiting for
    /// user-space sources (one may be blocked reading journalctl).
    collector_done: AtomicBool,
}

struct Collector {
    enricher: Enricher,
    tx: Sender<Event>,
    /// File creations wait here for their content to be hashed.
    to_hash: Sender<(Instant, Event)>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    max_delay_ns: u64,
    last_decode_warning: Option<Instant>,
    /// `--record-raw`: every record, length-prefixed, for replay by
    /// `kestrel bench pipeline`. Dropped (and logged) at the first error.
    record_raw: Option<std::io::BufWriter<std::fs::File>>,
}

impl Collector {
    /// Ring buffer callback. A non-zero return stops the current drain:
    /// used only when the output thread is gone.
    fn on_record(&mut self, data: &[u8]) -> i32 {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = &mut self.record_raw {
            use std::io::Write;
            let r = w
                .write_all(&(data.len() as u32).to_le_bytes())
                .and_then(|()| w.write_all(data));
            if let Err(e) = r {
                tracing::error!(error = %e, "recording raw records failed; recording stopped");
                self.record_raw = None;
            }
        }
        let rec = match decode(data) {
            Ok(r) => r,
            Err(e) => {
                self.shared.decode_errors.fetch_add(1, Ordering::Relaxed);
                if self
                    .last_decode_warning
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    tracing::warn!(error = %e, "dropping a record that does not decode (counted in decode_errors)");
                    self.last_decode_warning = Some(Instant::now());
                }
                return 0;
            }
        };
        let ktime = rec.ktime_ns();
        let now = kestrel_enrich::clock_ns(libc::CLOCK_BOOTTIME) as u64;
        self.max_delay_ns = self.max_delay_ns.max(now.saturating_sub(ktime));
        let Some(mut ev) = self.enricher.enrich(&rec) else {
            return 0;
        };
        if matches!(rec, kestrel_decode::Record::File(_)) {
            return match self.to_hash.send((Instant::now(), ev)) {
                Ok(()) => 0,
                Err(_) => -1,
            };
        }
        // Blocks while the output is behind (the ring buffer absorbs the
        // burst), but not past a stop request: an output nobody reads (a
        // paused pipe) must not keep SIGTERM from ending the agent.
        loop {
            match self.tx.send_timeout(ev, Duration::from_millis(200)) {
                Ok(()) => return 0,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                        return -1;
                    }
                    ev = back;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return -1,
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
    let identity = crate::identity::load(&cfg.state_dir)?;
    let kafka_id = kestrel_sinks::KafkaIdentity {
        agent_id: identity.agent_id.clone(),
        state_dir: cfg.state_dir.clone(),
    };
    let sink = cfg
        .output
        .open(&kafka_id)
        .with_context(|| format!("opening output {}", cfg.output))?;
    let kafka = sink.kafka_stats();

    let mut probes = Probes::load(&ProbeConfig {
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        wakeup_bytes: cfg.wakeup_bytes,
        btf: cfg.btf.clone(),
    })?;
    for p in probes.status() {
        match &p.state {
            kestrel_probes::ProbeState::Attached => {
                tracing::info!(program = p.program, hook = p.target, "probe attached")
            }
            kestrel_probes::ProbeState::NotApplicable(why) => {
                tracing::info!(program = p.program, hook = p.target, reason = %why, "probe not applicable")
            }
        }
    }

    let shared = Arc::new(Shared::default());
    // What the control server's commands change (filter, output, file
    // exclusions); inert without --server.
    let ctl = crate::control::Runtime::new();
    {
        let shared = shared.clone();
        ctl.set_output_counters(Box::new(move || {
            (
                shared.emitted.load(Ordering::Relaxed),
                shared.write_errors.load(Ordering::Relaxed),
            )
        }));
    }
    if let Some(addr) = cfg.metrics {
        crate::metrics::serve(addr, metrics_page(shared.clone(), kafka.clone()))?;
    }
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue_events);
    let output = {
        let shared = shared.clone();
        let stop = stop.clone();
        let ctl = ctl.clone();
        let ids = format!("{}-{}", identity.agent_id, identity.run);
        let kafka_id = kafka_id.clone();
        std::thread::Builder::new()
            .name("kestrel-output".into())
            .spawn(move || {
                output_loop(
                    sink,
                    rx,
                    reopen,
                    stop,
                    shared,
                    ctl,
                    OutputIdentity { ids, kafka_id },
                )
            })
            .context("starting the output thread")?
    };

    if let Some(every) = cfg.inventory_interval {
        let tx = tx.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("kestrel-inventory".into())
            .spawn({
                let shared = shared.clone();
                move || inventory_loop(every, tx, stop, shared)
            })
            .context("starting the inventory thread")?;
    }

    if let Some(every) = cfg.rootkit_scan_interval {
        let tx = tx.clone();
        let stop = stop.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("kestrel-rootkit".into())
            .spawn(move || rootkit_loop(every, tx, stop, shared))
            .context("starting the rootkit scan thread")?;
    }

    if let Some(lc) = cfg.logins.clone() {
        let counted = shared.clone();
        crate::logins::start(
            lc,
            tx.clone(),
            stop.clone(),
            Arc::new(move || {
                counted.userspace.fetch_add(1, Ordering::Relaxed);
            }),
        )?;
    }

    if let Some(cc) = &cfg.control {
        crate::control::start(cc, ctl.clone(), tx.clone(), stop.clone(), probes.status())?;
    }

    let seeded = probes.seed_processes(crate::seed::running_processes());
    tracing::debug!(processes = seeded, "running processes recorded");
    let mut excludes =
        crate::excludes::FileExcludes::start(&cfg.file_excludes, &probes, stop.clone())?;
    let (to_hash, hash_rx) = crossbeam_channel::bounded::<(Instant, Event)>(cfg.queue_events);
    let hasher = {
        let tx = tx.clone();
        let (delay, max, stop) = (cfg.file_md5_delay, cfg.file_md5_max_bytes, stop.clone());
        std::thread::Builder::new()
            .name("kestrel-filehash".into())
            .spawn(move || hash_loop(hash_rx, tx, delay, max, stop))
            .context("starting the file hashing thread")?
    };

    let record_raw = match &cfg.record_raw {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("creating the raw record file {}", p.display()))?,
        )),
        None => None,
    };
    let collector = RefCell::new(Collector {
        enricher: Enricher::new(EnrichConfig {
            exe_md5_max_bytes: cfg.exe_md5_max_bytes,
            process_cache_entries: cfg.process_cache_entries,
            hash_cache_entries: cfg.hash_cache_entries,
            runtime_sockets: cfg.runtime_sockets.clone(),
            cred_allowlist: cfg.cred_allowlist.clone(),
            ..EnrichConfig::default()
        }),
        tx,
        to_hash,
        shared: shared.clone(),
        stop: stop.clone(),
        max_delay_ns: 0,
        last_decode_warning: None,
        record_raw,
    });
    let ring = probes.ring_buffer(|data: &[u8]| collector.borrow_mut().on_record(data))?;

    tracing::info!(
        output = %cfg.output,
        ring_buffer_bytes = cfg.ring_buffer_bytes,
        wakeup_bytes = cfg.wakeup_bytes,
        max_latency_ms = cfg.max_latency.as_millis() as u64,
        "kestrel agent started"
    );

    let mut last_stats = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_kernel = Instant::now() - Duration::from_secs(1);
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        // Records submitted without a wakeup are collected here at the
        // latest: poll returns after max_latency even when nothing woke it.
        if let Err(e) = ring.poll(cfg.max_latency) {
            // EINTR from a signal lands here; the loop checks `stop` again.
            tracing::debug!(error = %e, "ring buffer poll");
        }
        if let Err(e) = ring.consume() {
            tracing::debug!(error = %e, "ring buffer consume");
        }
        if output.is_finished() {
            result = Err(anyhow::anyhow!(
                "the output thread stopped; see the error above"
            ));
            break;
        }
        ctl.serve_probes(&probes, &mut excludes);
        excludes.refresh(&probes);
        if last_publish.elapsed() >= Duration::from_secs(1) {
            publish(&ctl, &probes, &shared, kafka.as_deref());
            last_publish = Instant::now();
        }
        if cfg.metrics.is_some() && last_kernel.elapsed() >= Duration::from_secs(1) {
            *shared.kernel.lock().unwrap() = kernel_counts(&probes);
            last_kernel = Instant::now();
        }
        if last_stats.elapsed() >= cfg.stats_interval {
            let c = collector.borrow();
            let rt = runtime_counts(c.enricher.runtime_counters());
            log_counters(
                &probes,
                &shared,
                c.enricher.counters(),
                rt,
                c.max_delay_ns,
                "periodic",
            );
            if let Some(k) = &kafka {
                log_kafka(k, "periodic");
            }
            last_stats = Instant::now();
        }
    }

    // Detach first so no new records arrive, then drain what the kernel
    // already wrote, then let the output thread write out the queue.
    tracing::info!("stopping: detaching probes and draining");
    probes.detach();
    let _ = ring.consume();
    drop(ring);
    let mut collector = collector.into_inner();
    if let Some(mut w) = collector.record_raw.take() {
        use std::io::Write;
        if let Err(e) = w.flush() {
            tracing::error!(error = %e, "writing the raw record file failed");
        }
    }
    let (enrich_counters, max_delay_ns) = (collector.enricher.counters(), collector.max_delay_ns);
    let rt = runtime_counts(collector.enricher.runtime_counters());
    // Closing the queue ends the output thread once it has written it all.
    drop(collector);
    // Files waiting for their hash are hashed now rather than later.
    let _ = hasher.join();
    shared.collector_done.store(true, Ordering::Relaxed);
    if output.join().is_err() {
        result = Err(anyhow::anyhow!("the output thread panicked"));
    }
    log_counters(&probes, &shared, enrich_counters, rt, max_delay_ns, "final");
    if let Some(k) = &kafka {
        log_kafka(k, "final");
    }
    tracing::info!(
        target: "kestrel::stats",
        filtered = ctl.filtered.load(Ordering::Relaxed),
        "events dropped by the server's filter"
    );
    if result.is_ok() && ctl.restart_requested() {
        return Err(crate::control::reexec());
    }
    result
}

/// Counters for the control server's heartbeats.
fn publish(
    ctl: &crate::control::Runtime,
    probes: &Probes,
    shared: &Shared,
    kafka: Option<&kestrel_sinks::KafkaStats>,
) {
    ctl.publish(crate::control::Stats {
        emitted: shared.emitted.load(Ordering::Relaxed),
        write_errors: shared.write_errors.load(Ordering::Relaxed),
        kernel_lost: probes.counters().map(|k| k.lost()).unwrap_or(0),
        spool_bytes: kafka.map_or(0, |k| k.spool.bytes.load(Ordering::Relaxed)),
        spool_dropped: kafka.map_or(0, |k| k.dropped()),
    });
}

/// Hashes created files once their creator had `delay` to write them, then
/// sends the event on, in creation order. Once the agent is stopping, what
/// remains is hashed at once.
fn hash_loop(
    rx: Receiver<(Instant, Event)>,
    tx: Sender<Event>,
    delay: Duration,
    max: u64,
    stop: Arc<AtomicBool>,
) {
    let mut hashes = kestrel_enrich::Md5Cache::new(64, max);
    for (created, mut ev) in rx {
        let due = created + delay;
        while !stop.load(Ordering::Relaxed) && Instant::now() < due {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
        }
        let path = ev.get("file_path").unwrap_or("").to_string();
        if ev.get("create_type") != Some("tmpfile") && path.starts_with('/') {
            if let Ok(h) = hashes.md5_of(std::path::Path::new(&path)) {
                ev.set("create_file_md5", h);
            }
        }
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// Takes the host inventory at start and every `every`, through the same
/// output queue as kernel events. Warnings go to the log.
fn inventory_loop(every: Duration, tx: Sender<Event>, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    let host = kestrel_enrich::Host::new();
    loop {
        let started = Instant::now();
        let (events, warnings) = crate::inventory::collect(crate::inventory::What::All, &host);
        for w in &warnings {
            tracing::warn!("inventory: {w}");
        }
        let n = events.len();
        for ev in events {
            if tx.send(ev).is_err() {
                return;
            }
            shared.userspace.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            items = n,
            warnings = warnings.len(),
            secs = started.elapsed().as_secs_f64(),
            "inventory sent"
        );
        let next = Instant::now() + every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Scans for rootkits at start and every `every`; findings go through the
/// output queue like every other event.
fn rootkit_loop(every: Duration, tx: Sender<Event>, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    loop {
        match kestrel_scan::rootkit::scan(&kestrel_scan::rootkit::Options::default()) {
            Ok(report) => {
                for w in &report.warnings {
                    tracing::warn!("rootkit scan: {w}");
                }
                tracing::info!("{}", report.summary);
                for ev in report.events {
                    if tx.send(ev).is_err() {
                        return;
                    }
                    shared.userspace.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                shared.rootkit_scan_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("rootkit scan could not run: {e}");
            }
        }
        let next = Instant::now() + every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn runtime_counts(c: &kestrel_enrich::RuntimeCounters) -> [u64; 3] {
    [
        c.lookups.load(Ordering::Relaxed),
        c.failures.load(Ordering::Relaxed),
        c.queue_full.load(Ordering::Relaxed),
    ]
}

fn log_counters(
    probes: &Probes,
    shared: &Shared,
    en: EnrichCounters,
    rt: [u64; 3],
    max_delay_ns: u64,
    when: &'static str,
) {
    let k = probes.counters().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the kernel counters");
        Default::default()
    });
    tracing::info!(
        target: "kestrel::stats",
        when,
        received = shared.received.load(Ordering::Relaxed),
        emitted = shared.emitted.load(Ordering::Relaxed),
        decode_errors = shared.decode_errors.load(Ordering::Relaxed),
        write_errors = shared.write_errors.load(Ordering::Relaxed),
        userspace_events = shared.userspace.load(Ordering::Relaxed),
        rootkit_scan_failures = shared.rootkit_scan_failures.load(Ordering::Relaxed),
        kernel_submitted = k.submitted(),
        kernel_lost = k.lost(),
        exec_submitted = k[Kind::Exec].submitted,
        exec_lost = k[Kind::Exec].lost(),
        connect_submitted = k[Kind::Connect].submitted,
        connect_lost = k[Kind::Connect].lost(),
        ptrace_submitted = k[Kind::Ptrace].submitted,
        ptrace_lost = k[Kind::Ptrace].lost(),
        dns_submitted = k[Kind::Dns].submitted,
        dns_lost = k[Kind::Dns].lost(),
        dns_malformed = en.dns_malformed,
        cred_submitted = k[Kind::Cred].submitted,
        cred_lost = k[Kind::Cred].lost(),
        cred_allowlisted = en.cred_allowlisted,
        file_submitted = k[Kind::File].submitted,
        file_lost = k[Kind::File].lost(),
        module_submitted = k[Kind::Module].submitted,
        module_lost = k[Kind::Module].lost(),
        process_gone = en.process_gone,
        md5_too_large = en.md5_too_large,
        md5_unreadable = en.md5_unreadable,
        runtime_lookups = rt[0],
        runtime_lookup_failures = rt[1],
        runtime_queue_full = rt[2],
        max_delay_ms = max_delay_ns / 1_000_000,
        "counters"
    );
}

/// Per-probe kernel counters: (probe, submitted, lost).
fn kernel_counts(probes: &Probes) -> Vec<(&'static str, u64, u64)> {
    let Ok(k) = probes.counters() else {
        return Vec::new();
    };
    k.iter()
        .map(|(kind, c)| (kind.name(), c.submitted, c.lost()))
        .collect()
}

/// The `/metrics` page: pipeline counters, kernel counters per probe (as
/// of the last refresh), and the Kafka output's when it is the sink.
fn metrics_page(
    shared: Arc<Shared>,
    kafka: Option<Arc<kestrel_sinks::KafkaStats>>,
) -> crate::metrics::Render {
    use crate::metrics::{labelled, metric};
    Arc::new(move |out: &mut String| {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            out,
            "kestrel_received_total",
            "counter",
            "Records read from the kernel ring buffer.",
            g(&shared.received),
        );
        metric(
            out,
            "kestrel_emitted_total",
            "counter",
            "Events written to the output.",
            g(&shared.emitted),
        );
        metric(
            out,
            "kestrel_write_errors_total",
            "counter",
            "Events the output failed to take.",
            g(&shared.write_errors),
        );
        metric(
            out,
            "kestrel_decode_errors_total",
            "counter",
            "Kernel records that did not decode.",
            g(&shared.decode_errors),
        );
        metric(
            out,
            "kestrel_userspace_events_total",
            "counter",
            "Events made in user space (inventory, logins).",
            g(&shared.userspace),
        );
        let kernel = shared.kernel.lock().unwrap().clone();
        let sub: Vec<_> = kernel.iter().map(|(n, s, _)| (*n, *s)).collect();
        let lost: Vec<_> = kernel.iter().map(|(n, _, l)| (*n, *l)).collect();
        labelled(
            out,
            "kestrel_kernel_submitted_total",
            "counter",
            "Records the BPF programs submitted.",
            "probe",
            &sub,
        );
        labelled(
            out,
            "kestrel_kernel_lost_total",
            "counter",
            "Records the BPF programs could not submit (ring buffer full, errors).",
            "probe",
            &lost,
        );
        if let Some(k) = &kafka {
            crate::metrics::kafka(out, k);
        }
    })
}

fn log_kafka(k: &kestrel_sinks::KafkaStats, when: &'static str) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        target: "kestrel::stats",
        when,
        produced = g(&k.produced),
        acknowledged = g(&k.acknowledged),
        retried = g(&k.retried),
        replayed = g(&k.replayed),
        spooled = g(&k.spool.spooled),
        dropped = k.dropped(),
        spool_bytes = g(&k.spool.bytes),
        spool_pending = g(&k.spool.pending),
        spool_corrupt = g(&k.spool.corrupt),
        "kafka counters"
    );
}

/// What the output thread names events and outputs with: the `event_id`
/// prefix (agent id and run) and, for an output opened on the server's
/// command, the Kafka identity.
struct OutputIdentity {
    ids: String,
    kafka_id: kestrel_sinks::KafkaIdentity,
}

/// Encodes and writes events, flushing whenever the queue runs dry so a
/// quiet host sees its events at once and a busy one in batches. Each
/// event gets `event_id` = `ids`-SEQ (agent id, run, sequence: see
/// identity.rs).
fn output_loop(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Event>,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    ctl: Arc<crate::control::Runtime>,
    who: OutputIdentity,
) {
    let OutputIdentity { ids, kafka_id } = who;
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(4096);
    let mut pending = 0u64;
    let mut last_error: Option<Instant> = None;
    let mut fail = |shared: &Shared, n: u64, e: &std::io::Error| {
        shared.write_errors.fetch_add(n, Ordering::Relaxed);
        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            ctl.set_error(format!("writing events failed: {e}"));
            tracing::error!(error = %e, events = n, "writing events failed (counted in write_errors)");
            last_error = Some(Instant::now());
        }
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Nobody reads the output any more: stop the agent.
            stop.store(true, Ordering::Relaxed);
        }
    };
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) if shared.collector_done.load(Ordering::Relaxed) => {
                break
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if reopen.swap(false, Ordering::Relaxed) {
            match sink.reopen() {
                Ok(()) => tracing::info!("output re-opened (SIGHUP)"),
                Err(e) => tracing::error!(error = %e, "re-opening the output failed"),
            }
        }
        if let Some((spec, reply)) = ctl.take_output_change() {
            // The old sink is flushed before the new one takes over, so
            // no event is lost or written twice.
            flush(&mut *sink, &mut pending, &shared, &mut fail);
            match spec.open(&kafka_id) {
                Ok(new) => {
                    sink = new;
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
        let filter = ctl.filter();
        for mut ev in std::iter::once(first).chain(rx.try_iter().take(4096)) {
            if filter.drops(&ev) {
                ctl.filtered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            ev.push("event_id", format!("{ids}-{seq}"));
            seq += 1;
            buf.clear();
            ev.write_json_line(&mut buf);
            match sink.write_line(&buf) {
                Ok(()) => pending += 1,
                Err(e) => fail(&shared, 1, &e),
            }
        }
        flush(&mut *sink, &mut pending, &shared, &mut fail);
        if stop.load(Ordering::Relaxed) && shared.write_errors.load(Ordering::Relaxed) > 0 {
            // Broken output: drain the queue so the collector is not stuck.
            let dropped = rx.try_iter().count() as u64;
            shared.write_errors.fetch_add(dropped, Ordering::Relaxed);
        }
    }
    flush(&mut *sink, &mut pending, &shared, &mut fail);
}

fn flush(
    sink: &mut dyn Sink,
    pending: &mut u64,
    shared: &Shared,
    fail: &mut impl FnMut(&Shared, u64, &std::io::Error),
) {
    match sink.flush() {
        Ok(()) => {
            shared.emitted.fetch_add(*pending, Ordering::Relaxed);
        }
        Err(e) => fail(shared, *pending, &e),
    }
    *pending = 0;
}
