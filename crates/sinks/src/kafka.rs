//! Kafka output: `kafka://HOST:PORT[,HOST:PORT...]/TOPIC[?OPTION=VALUE&...]`.
//!
//! Write-ahead: `write_line` appends the event to the on-disk spool
//! ([`crate::spool`]) and returns; a sender thread reads the spool in order,
//! hands records to librdkafka and advances the spool's committed index as
//! delivery reports come back. The delivery report is the only proof of
//! delivery. A failed delivery rewinds the reader to the first record not
//! acknowledged and sends again from there, so order is kept and nothing is
//! skipped; a consumer may see a record twice (after a retry or a crash)
//! and de-duplicates on `event_id`.
//!
//! The output thread of the agent never waits for the broker: only for the
//! disk. The sender keeps at most [`MAX_INFLIGHT`] records in librdkafka's
//! memory; the rest waits on disk, under the spool's size cap.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::spool::{Cursor, FsyncPolicy, FullPolicy, Spool, SpoolConfig, SpoolStats};

/// Records handed to librdkafka and not yet reported on, at most.
pub const MAX_INFLIGHT: usize = 50_000;

/// Settings of the Kafka output, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Topic, or a template where `{data_type}` is replaced by the event's.
    pub topic: String,
    /// none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// "all" or "1".
    pub acks: String,
    /// Idempotent producer (needs acks=all).
    pub idempotence: bool,
    /// How long librdkafka waits to fill a batch.
    pub linger_ms: u64,
    /// Largest batch, in bytes.
    pub batch_bytes: u64,
    /// A record not delivered in this time is reported failed and sent again
    /// from the spool.
    pub message_timeout_ms: u64,
    /// TLS to the brokers.
    pub tls: bool,
    /// CA bundle (PEM) to check the brokers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    pub tls_key: Option<PathBuf>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// File holding the SASL password (a password in a URL would show in
    /// `ps` and logs).
    pub sasl_password_file: Option<PathBuf>,
    /// Spool directory; default `STATE_DIR/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Spool size cap in bytes.
    pub spool_max_bytes: u64,
    /// Spool segment size in bytes.
    pub spool_segment_bytes: u64,
    /// Full-spool policy.
    pub spool_full: FullPolicy,
    /// Fsync policy.
    pub fsync: FsyncPolicy,
    /// At stop, how long to wait for outstanding deliveries; what is not
    /// acknowledged by then stays in the spool for the next start.
    pub drain_timeout_ms: u64,
}

/// A Kafka URL that does not parse or an option out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadKafkaSpec(String);

fn bad<T>(msg: impl Into<String>) -> Result<T, BadKafkaSpec> {
    Err(BadKafkaSpec(msg.into()))
}

impl KafkaSpec {
    /// Parses what follows `kafka://`.
    pub fn parse(rest: &str) -> Result<KafkaSpec, BadKafkaSpec> {
        const USAGE: &str = "use kafka://HOST:PORT[,HOST:PORT...]/TOPIC[?OPTION=VALUE&...]";
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let Some((brokers, topic)) = main.split_once('/') else {
            return bad(format!("no topic in kafka://{main}: {USAGE}"));
        };
        if brokers.is_empty() {
            return bad(format!("no broker in kafka://{main}: {USAGE}"));
        }
        for b in brokers.split(',') {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return bad(format!("bad broker address {b:?}: use HOST:PORT"));
            }
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || "._-{}".contains(c);
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
            return bad(format!(
                "bad topic {topic:?}: 1 to 249 of [a-zA-Z0-9._-], with {{data_type}} allowed"
            ));
        }
        if topic.replace("{data_type}", "").contains(['{', '}']) {
            return bad(format!(
                "bad topic template {topic:?}: the only placeholder is {{data_type}}"
            ));
        }
        let mut s = KafkaSpec {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            compression: "lz4".into(),
            acks: "all".into(),
            idempotence: true,
            linger_ms: 20,
            batch_bytes: 1 << 20,
            message_timeout_ms: 30_000,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 16 << 20,
            spool_full: FullPolicy::DropOldest,
            fsync: FsyncPolicy::Interval(Duration::from_millis(1000)),
            drain_timeout_ms: 5000,
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let num = |lo: u64, hi: u64| -> Result<u64, BadKafkaSpec> {
                match v.parse::<u64>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => bad(format!(
                        "kafka option {k}={v:?}: must be between {lo} and {hi}"
                    )),
                }
            };
            let flag = || match v {
                "true" | "on" | "1" => Ok(true),
                "false" | "off" | "0" => Ok(false),
                _ => bad(format!("kafka option {k}={v:?}: use true or false")),
            };
            match k {
                "compression" => {
                    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&v) {
                        return bad(format!(
                            "kafka option compression={v:?}: use none, gzip, snappy, lz4 or zstd"
                        ));
                    }
                    s.compression = v.into();
                }
                "acks" => {
                    if !["all", "1"].contains(&v) {
                        return bad(format!("kafka option acks={v:?}: use all or 1 (acks=0 would leave nothing to confirm delivery)"));
                    }
                    s.acks = v.into();
                }
                "idempotence" => s.idempotence = flag()?,
                "linger_ms" => s.linger_ms = num(0, 60_000)?,
                "batch_bytes" => s.batch_bytes = num(1, 1 << 30)?,
                "message_timeout_ms" => s.message_timeout_ms = num(1000, 3_600_000)?,
                "tls" => s.tls = flag()?,
                "tls_ca" => s.tls_ca = Some(v.into()),
                "tls_cert" => s.tls_cert = Some(v.into()),
                "tls_key" => s.tls_key = Some(v.into()),
                "sasl_mechanism" => {
                    if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&v) {
                        return bad(format!(
                            "kafka option sasl_mechanism={v:?}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ));
                    }
                    s.sasl_mechanism = Some(v.into());
                }
                "sasl_username" => s.sasl_username = Some(v.into()),
                "sasl_password_file" => s.sasl_password_file = Some(v.into()),
                "spool_dir" => s.spool_dir = Some(v.into()),
                "spool_max_bytes" => s.spool_max_bytes = num(64 << 10, 1 << 44)?,
                "spool_segment_bytes" => s.spool_segment_bytes = num(4096, 1 << 30)?,
                "spool_full" => {
                    s.spool_full = match v {
                        "drop_oldest" => FullPolicy::DropOldest,
                        "drop_newest" => FullPolicy::DropNewest,
                        _ => {
                            return bad(format!(
                                "kafka option spool_full={v:?}: use drop_oldest or drop_newest"
                            ))
                        }
                    }
                }
                "fsync" => {
                    s.fsync = match v {
                        "always" => FsyncPolicy::Always,
                        "never" => FsyncPolicy::Never,
                        _ => match v.strip_suffix("ms").map(str::parse::<u64>) {
                            Some(Ok(ms)) if ms > 0 => {
                                FsyncPolicy::Interval(Duration::from_millis(ms))
                            }
                            _ => {
                                return bad(format!(
                                    "kafka option fsync={v:?}: use always, never or an interval such as 1000ms"
                                ))
                            }
                        },
                    }
                }
                "drain_timeout_ms" => s.drain_timeout_ms = num(0, 600_000)?,
                _ => {
                    return bad(format!(
                        "unknown kafka option {k:?} (see docs/kafka.md for the list)"
                    ))
                }
            }
        }
        if s.idempotence && s.acks != "all" {
            return bad("kafka option idempotence=true needs acks=all");
        }
        if s.spool_segment_bytes * 4 > s.spool_max_bytes {
            return bad(format!(
                "kafka option spool_segment_bytes={}: must be at most a quarter of spool_max_bytes ({})",
                s.spool_segment_bytes, s.spool_max_bytes
            ));
        }
        if s.sasl_mechanism.is_some()
            && (s.sasl_username.is_none() || s.sasl_password_file.is_none())
        {
            return bad("kafka option sasl_mechanism needs sasl_username and sasl_password_file");
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return bad("kafka options tls_cert and tls_key go together");
        }
        Ok(s)
    }

    fn client_config(&self, client_id: &str) -> io::Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("compression.type", &self.compression)
            .set("acks", &self.acks)
            .set("enable.idempotence", self.idempotence.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set(
                "batch.size",
                self.batch_bytes.min(i32::MAX as u64).to_string(),
            )
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                (MAX_INFLIGHT * 2).to_string(),
            )
            .set("queue.buffering.max.kbytes", "262144")
            .set("reconnect.backoff.max.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        let sasl = self.sasl_mechanism.is_some();
        let proto = match (self.tls, sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", proto);
        for (key, v) in [
            ("ssl.ca.location", &self.tls_ca),
            ("ssl.certificate.location", &self.tls_cert),
            ("ssl.key.location", &self.tls_key),
        ] {
            if let Some(p) = v {
                if !p.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("kafka: {key} {}: no such file", p.display()),
                    ));
                }
                c.set(key, p.to_string_lossy());
            }
        }
        if let (Some(m), Some(u), Some(pf)) = (
            &self.sasl_mechanism,
            &self.sasl_username,
            &self.sasl_password_file,
        ) {
            let pw = std::fs::read_to_string(pf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "kafka: cannot read sasl_password_file {}: {e}",
                        pf.display()
                    ),
                )
            })?;
            c.set("sasl.mechanisms", m)
                .set("sasl.username", u)
                .set("sasl.password", pw.trim_end_matches(['\n', '\r']));
        }
        Ok(c)
    }
}

/// Counters of the Kafka output, shared with the agent (metrics, heartbeat).
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Records handed to the producer (re-sends included).
    pub produced: AtomicU64,
    /// Records the broker acknowledged.
    pub acknowledged: AtomicU64,
    /// Deliveries that failed and will be sent again from the spool.
    pub retried: AtomicU64,
    /// Records sent again from the spool: left by an earlier run, or re-read
    /// after a failed delivery.
    pub replayed: AtomicU64,
    /// Records that cannot be produced at all (e.g. larger than the broker
    /// takes), dropped and logged.
    pub rejected: AtomicU64,
    /// Sum of produce-to-acknowledgement times, in microseconds.
    pub ack_latency_us_sum: AtomicU64,
    /// Largest produce-to-acknowledgement time since start, in microseconds.
    pub ack_latency_us_max: AtomicU64,
    /// 1 while the brokers answer and the topics exist, else 0.
    pub broker_up: AtomicU64,
    /// Spool counters: spooled, dropped, bytes, pending, recovered, corrupt.
    pub spool: Arc<SpoolStats>,
}

impl KafkaStats {
    /// Events lost for good: dropped by the full spool or refused by Kafka.
    pub fn dropped(&self) -> u64 {
        self.spool.dropped.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed)
    }
}

/// What the Kafka sink needs from the agent.
#[derive(Debug, Clone)]
pub struct KafkaIdentity {
    /// Message key: keeps one host's events in one partition, in order.
    pub agent_id: String,
    /// Directory for the default spool.
    pub state_dir: PathBuf,
}

/// The Kafka sink: a spool plus its sender thread.
pub struct KafkaSink {
    spool: Arc<Mutex<Spool>>,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
    last_drop_log: Option<Instant>,
    dropped_seen: u64,
}

impl KafkaSink {
    /// Opens the spool (recovering a previous run's) and starts sending.
    /// Broker problems are not errors here: they are logged, and events
    /// wait in the spool.
    pub fn open(spec: &KafkaSpec, id: &KafkaIdentity) -> io::Result<KafkaSink> {
        let config = spec.client_config(&format!("kestrel-{}", id.agent_id))?;
        let spool = Spool::open(SpoolConfig {
            dir: spec
                .spool_dir
                .clone()
                .unwrap_or_else(|| id.state_dir.join("spool")),
            max_bytes: spec.spool_max_bytes,
            segment_bytes: spec.spool_segment_bytes,
            full: spec.spool_full,
            fsync: spec.fsync,
        })?;
        let recovered = spool.pending();
        if recovered > 0 {
            tracing::info!(dir = %spool.dir().display(), events = recovered, "kafka: events left in the spool by an earlier run will be sent first");
        }
        let stats = Arc::new(KafkaStats {
            spool: spool.stats(),
            ..KafkaStats::default()
        });
        let spool = Arc::new(Mutex::new(spool));
        let stop = Arc::new(AtomicBool::new(false));
        // A bad setting (e.g. an unknown compression) fails here, at start.
        let producer = new_producer(&config)?;
        let sender = Sender {
            config,
            producer,
            spec: spec.clone(),
            key: id.agent_id.clone(),
            spool: spool.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            first_new: spool.lock().unwrap().next_index(),
        };
        let handle = std::thread::Builder::new()
            .name("kestrel-kafka".into())
            .spawn(move || sender.run())?;
        Ok(KafkaSink {
            spool,
            stats,
            stop,
            sender: Some(handle),
            last_drop_log: None,
            dropped_seen: 0,
        })
    }

    /// The counters, to read from another thread.
    pub fn stats(&self) -> Arc<KafkaStats> {
        self.stats.clone()
    }
}

impl crate::Sink for KafkaSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        self.spool.lock().unwrap().append(line)?;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.lock().unwrap().flush()?;
        let dropped = self.stats.spool.dropped.load(Ordering::Relaxed);
        if dropped != self.dropped_seen
            && self
                .last_drop_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                dropped_total = dropped,
                dropped_since_last_report = dropped - self.dropped_seen,
                "kafka: the spool is full; events dropped (spool_full policy)"
            );
            self.dropped_seen = dropped;
            self.last_drop_log = Some(Instant::now());
        }
        Ok(())
    }

    fn kafka_stats(&self) -> Option<Arc<KafkaStats>> {
        Some(self.stats.clone())
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if let Ok(mut s) = self.spool.lock() {
            if let Err(e) = s.flush() {
                tracing::error!(error = %e, "kafka: final spool flush failed");
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        let pending = self.stats.spool.pending.load(Ordering::Relaxed);
        if pending > 0 {
            tracing::warn!(
                events = pending,
                "kafka: stopping with undelivered events in the spool; they are sent at the next start"
            );
        }
    }
}

/// Delivery reports, collected by the callback for the sender loop.
struct Ctx {
    reports: Mutex<Vec<(u64, Result<(), KafkaError>)>>,
    last_error_log: Mutex<Option<Instant>>,
    /// The last failure librdkafka reported on a broker connection, by its
    /// error callback (not the "all brokers down" that follows) or its
    /// "FAIL" log lines (a dropped connection is only logged): what
    /// `check_topic` explains when the brokers cannot be reached.
    last_cause: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if fac == "FAIL" {
            *self.last_cause.lock().unwrap() =
                Some((RDKafkaErrorCode::BrokerTransportFailure, msg.to_string()));
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            if code != RDKafkaErrorCode::AllBrokersDown {
                *self.last_cause.lock().unwrap() = Some((code, reason.to_string()));
            }
        }
        // A dead broker repeats this every reconnect: once per 10 s.
        let mut last = self.last_error_log.lock().unwrap();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %error, "kafka: {reason}");
            *last = Some(Instant::now());
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, index: usize) {
        let r = match r {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.lock().unwrap().push((index as u64, r));
    }
}

fn new_producer(config: &ClientConfig) -> io::Result<BaseProducer<Ctx>> {
    config
        .create_with_context(Ctx {
            reports: Mutex::new(Vec::new()),
            last_error_log: Mutex::new(None),
            last_cause: Mutex::new(None),
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("kafka: {e}")))
}

struct InFlight {
    index: u64,
    sent: Instant,
    acked: bool,
    failed: bool,
}

struct Sender {
    config: ClientConfig,
    producer: BaseProducer<Ctx>,
    spec: KafkaSpec,
    key: String,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
    /// Records from this index on were written by this run.
    first_new: u64,
}

/// The topic of a record: the template with the event's data_type.
fn topic_of<'a>(template: &'a str, payload: &[u8]) -> std::borrow::Cow<'a, str> {
    if !template.contains("{data_type}") {
        return template.into();
    }
    const KEY: &[u8] = b"\"data_type\":\"";
    let dt = payload
        .windows(KEY.len())
        .position(|w| w == KEY)
        .and_then(|at| {
            let rest = &payload[at + KEY.len()..];
            let end = rest.iter().position(|&b| b == b'"')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("unknown");
    template.replace("{data_type}", dt).into()
}

impl Sender {
    fn run(mut self) {
        let mut cur = Cursor::at(0);
        let mut high_read = 0u64;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut pending: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut verified: HashSet<String> = HashSet::new();
        let mut next_check = Instant::now();
        // When the last check failure was logged, and its kind.
        let mut last_check_log: Option<(Instant, String)> = None;
        let mut rewind = false;
        let mut rewind_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(500);
        let mut acked_since_start = false;
        let mut epoch = self.spool.lock().unwrap().epoch();
        let mut stop_at: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) && stop_at.is_none() {
                stop_at = Some(Instant::now() + Duration::from_millis(self.spec.drain_timeout_ms));
            }
            let busy = !pending.is_empty() || inflight.len() >= MAX_INFLIGHT;
            self.producer.poll(if busy {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(50)
            });

            // Delivery reports. Acknowledged records leave the spool in
            // order: the committed index moves over the acknowledged prefix.
            let reports = std::mem::take(&mut *self.producer.context().reports.lock().unwrap());
            for (index, r) in reports {
                let Ok(at) = inflight.binary_search_by_key(&index, |f| f.index) else {
                    continue; // sent before a rewind, already forgotten
                };
                let f = &mut inflight[at];
                match r {
                    Ok(()) => {
                        f.acked = true;
                        acked_since_start = true;
                        let us = f.sent.elapsed().as_micros() as u64;
                        self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .ack_latency_us_sum
                            .fetch_add(us, Ordering::Relaxed);
                        self.stats
                            .ack_latency_us_max
                            .fetch_max(us, Ordering::Relaxed);
                    }
                    Err(e) => {
                        f.failed = true;
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        if !rewind {
                            tracing::warn!(error = %e, index, "kafka: delivery failed; sending again from the spool");
                        }
                        rewind = true;
                    }
                }
            }
            {
                let mut spool = self.spool.lock().unwrap();
                // Records below the committed index that are acknowledged
                // now were counted dropped when drop-oldest deleted their
                // segment while they were in flight: they made it after all.
                let committed = spool.committed();
                let mut upto = None;
                let mut undrop = 0;
                while inflight.front().is_some_and(|f| f.acked) {
                    let f = inflight.pop_front().unwrap();
                    if f.index < committed {
                        undrop += 1;
                    } else {
                        upto = Some(f.index + 1);
                    }
                }
                self.stats
                    .spool
                    .dropped
                    .fetch_sub(undrop, Ordering::Relaxed);
                if let Some(i) = upto {
                    spool.commit(i);
                }
                if spool.epoch() != epoch {
                    // Drop-oldest deleted records that may be in flight:
                    // start again from what is left.
                    epoch = spool.epoch();
                    rewind = true;
                }
                if self.stop.load(Ordering::Relaxed) {
                    let _ = spool.persist_commit();
                }
            }

            if let Some((code, why)) = self.producer.client().fatal_error() {
                tracing::error!(?code, "kafka: producer failed ({why}); starting a new one");
                if self.config.get("enable.idempotence") == Some("true") && !acked_since_start {
                    tracing::warn!("kafka: the brokers may not support idempotent producers; continuing without");
                    self.config.set("enable.idempotence", "false");
                }
                match new_producer(&self.config) {
                    Ok(p) => self.producer = p,
                    Err(e) => tracing::error!(error = %e, "kafka: cannot create a producer"),
                }
                inflight.clear();
                rewind = true;
                acked_since_start = false;
            }

            if rewind {
                if inflight.iter().any(|f| !f.acked && !f.failed) {
                    // Give outstanding reports a second, then start a new
                    // producer: that drops what the old one held. Purging
                    // an idempotent producer would make it bump its epoch,
                    // which some brokers (tansu) do not support, and waiting
                    // for every report can hang there as well.
                    let since = *rewind_since.get_or_insert_with(Instant::now);
                    if stop_at.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                    if since.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    match new_producer(&self.config) {
                        Ok(p) => self.producer = p,
                        Err(e) => {
                            tracing::error!(error = %e, "kafka: cannot create a producer");
                            continue;
                        }
                    }
                }
                rewind_since = None;
                let committed = self.spool.lock().unwrap().committed();
                let undrop = inflight
                    .iter()
                    .filter(|f| f.acked && f.index < committed)
                    .count() as u64;
                self.stats
                    .spool
                    .dropped
                    .fetch_sub(undrop, Ordering::Relaxed);
                inflight.clear();
                pending.clear();
                verified.clear();
                cur = Cursor::at(committed);
                rewind = false;
                self.stats.broker_up.store(0, Ordering::Relaxed);
                if stop_at.is_some() {
                    break;
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(8));
                continue;
            }

            // Read more from the spool.
            if pending.is_empty() && inflight.len() < MAX_INFLIGHT {
                let want = (MAX_INFLIGHT - inflight.len()).min(2000);
                let mut spool = self.spool.lock().unwrap();
                if let Err(e) = spool.read(&mut cur, want, &mut pending) {
                    tracing::error!(error = %e, "kafka: cannot read the spool");
                }
            }

            // Hand records to librdkafka, in order. The spool stays locked
            // meanwhile: drop-oldest must not delete a record between the
            // check below and its send, or it would be counted dropped and
            // delivered too.
            let mut blocked = false;
            let mut to_check = None;
            let spool_arc = self.spool.clone();
            let spool = spool_arc.lock().unwrap();
            if spool.epoch() != epoch {
                pending.clear();
            }
            while let Some((index, payload)) = pending.front() {
                let index = *index;
                if index < spool.committed() {
                    pending.pop_front();
                    continue;
                }
                let topic = topic_of(&self.spec.topic, payload);
                if !verified.contains(topic.as_ref()) {
                    blocked = true;
                    if Instant::now() < next_check || stop_at.is_some() {
                        break;
                    }
                    // Checked with the spool unlocked: it may take seconds.
                    next_check = Instant::now() + Duration::from_secs(2);
                    to_check = Some(topic.into_owned());
                    break;
                }
                let rec = BaseRecord::with_opaque_to(topic.as_ref(), index as usize)
                    .key(self.key.as_str())
                    .payload(payload.as_slice());
                match self.producer.send(rec) {
                    Ok(()) => {
                        self.stats.produced.fetch_add(1, Ordering::Relaxed);
                        if index < high_read.max(self.first_new) {
                            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                        }
                        high_read = high_read.max(index + 1);
                        inflight.push_back(InFlight {
                            index,
                            sent: Instant::now(),
                            acked: false,
                            failed: false,
                        });
                        pending.pop_front();
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                    Err((e, _)) => {
                        // This record can never be produced (too large for
                        // the producer, ...): count it and go on.
                        tracing::error!(error = %e, index, bytes = payload.len(), "kafka: event refused by the producer; dropped");
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        inflight.push_back(InFlight {
                            index,
                            sent: Instant::now(),
                            acked: true,
                            failed: false,
                        });
                        pending.pop_front();
                    }
                }
            }

            let next_index = spool.next_index();
            let dir = spool.dir().to_path_buf();
            drop(spool);
            if let Some(topic) = to_check {
                match self.check_topic(&topic) {
                    Ok(()) => {
                        blocked = false;
                        tracing::info!(topic = %topic, brokers = %self.spec.brokers, "kafka: topic reachable");
                        verified.insert(topic);
                        self.stats.broker_up.store(1, Ordering::Relaxed);
                        backoff = Duration::from_millis(500);
                        last_check_log = None;
                    }
                    Err(why) => {
                        self.stats.broker_up.store(0, Ordering::Relaxed);
                        // Once a minute while it lasts, and at once when
                        // the kind of failure changes (e.g. from "timed
                        // out" to what librdkafka found out meanwhile).
                        // The kind is the text before librdkafka's detail.
                        let kind = why.split('(').next().unwrap_or_default().to_string();
                        if last_check_log.as_ref().is_none_or(|(t, k)| {
                            *k != kind || t.elapsed() >= Duration::from_secs(60)
                        }) {
                            tracing::error!(
                                brokers = %self.spec.brokers, topic = %topic, spool = %dir.display(),
                                "kafka: {why}; events are kept in the spool until it can be delivered"
                            );
                            last_check_log = Some((Instant::now(), kind));
                        }
                    }
                }
            }
            if let Some(t) = stop_at {
                let caught_up =
                    pending.is_empty() && inflight.is_empty() && cur.index() >= next_index;
                // Nothing in flight and no reachable topic: waiting is vain.
                let stuck = blocked && inflight.is_empty();
                if caught_up || stuck || Instant::now() >= t {
                    break;
                }
            }
        }
        if let Ok(mut s) = self.spool.lock() {
            let _ = s.persist_commit();
        }
    }

    /// Asks the brokers for the topic's metadata: fails with a sentence
    /// when they cannot be reached or the topic does not exist.
    fn check_topic(&self, topic: &str) -> Result<(), String> {
        let cause = &self.producer.context().last_cause;
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(3))
            .map_err(|e| {
                let advice = cause
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|(code, reason)| advice(&self.spec, *code, reason));
                match advice {
                    Some(a) => format!("cannot reach the Kafka brokers: {a}"),
                    None => format!("cannot reach the Kafka brokers: {e}"),
                }
            })?;
        *cause.lock().unwrap() = None;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("the brokers did not describe topic {topic:?}"))?;
        if let Some(e) = t.error() {
            return Err(format!(
                "topic {topic:?} is not usable ({e:?}); Kestrel does not create topics"
            ));
        }
        if t.partitions().is_empty() {
            return Err(format!(
                "topic {topic:?} does not exist; Kestrel does not create topics"
            ));
        }
        Ok(())
    }
}

/// What to do about `reason`, the last error librdkafka reported on a
/// broker connection, when the configuration can cause it (TLS, SASL);
/// `None` for the rest (a broker down, a wrong address), which the
/// metadata error already says.
fn advice(spec: &KafkaSpec, code: RDKafkaErrorCode, reason: &str) -> Option<String> {
    let reason = reason.trim();
    if code == RDKafkaErrorCode::Authentication || reason.contains("SASL") {
        return Some(format!(
            "SASL authentication failed ({reason}); check sasl_mechanism (the brokers must offer it), sasl_username and the password in sasl_password_file"
        ));
    }
    // A refused client certificate shows as a transport failure with the
    // TLS alert in the reason.
    if code == RDKafkaErrorCode::SSL || (spec.tls && reason.contains("SSL")) {
        let client = if spec.tls_cert.is_some() {
            "that the brokers accept the client certificate in tls_cert"
        } else {
            "if the brokers require a client certificate, set tls_cert and tls_key"
        };
        return Some(format!(
            "TLS with the brokers failed ({reason}); check that tls_ca holds the CA that signed the brokers' certificates, that those certificates name the host in the URL, and {client}"
        ));
    }
    // Connected, then dropped by the broker (librdkafka names the state
    // the connection was in).
    let dropped = ["in state UP", "in state APIVERSION_QUERY"]
        .iter()
        .any(|s| reason.contains(s));
    if !dropped {
        return None;
    }
    let missing = match (spec.tls, spec.sasl_mechanism.is_some()) {
        (false, false) => "TLS or SASL, set tls=true or sasl_mechanism (with sasl_username and sasl_password_file)",
        (true, false) => "SASL, set sasl_mechanism (with sasl_username and sasl_password_file)",
        (false, true) => "TLS, set tls=true",
        (true, true) => return None,
    };
    Some(format!(
        "the brokers close the connection ({reason}); if they require {missing}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_options() {
        let s = KafkaSpec::parse("a:9092,b:9093/events").unwrap();
        assert_eq!(s.brokers, "a:9092,b:9093");
        assert_eq!(s.topic, "events");
        assert_eq!(s.acks, "all");
        assert!(s.idempotence);
        let s = KafkaSpec::parse(
            "h:1/k-{data_type}?compression=zstd&linger_ms=5&spool_full=drop_newest&fsync=always",
        )
        .unwrap();
        assert_eq!(s.compression, "zstd");
        assert_eq!(s.spool_full, FullPolicy::DropNewest);
        assert_eq!(s.fsync, FsyncPolicy::Always);
        for bad in [
            "h:1",
            "/t",
            "h/t",
            "h:0/t",
            "h:1/",
            "h:1/a b",
            "h:1/t?compression=brotli",
            "h:1/t?nope=1",
            "h:1/t?acks=0",
            "h:1/t?acks=1",
            "h:1/{x}",
            "h:1/t?sasl_mechanism=PLAIN",
            "h:1/t?spool_max_bytes=100000&spool_segment_bytes=50000",
        ] {
            assert!(KafkaSpec::parse(bad).is_err(), "{bad} parsed");
        }
        assert!(KafkaSpec::parse("h:1/t?acks=1&idempotence=false").is_ok());
    }

    #[test]
    fn tls_and_sasl_failures_say_which_option_to_check() {
        let tls = KafkaSpec::parse("h:1/t?tls=true").unwrap();
        let plain = KafkaSpec::parse("h:1/t").unwrap();
        let a = advice(
            &tls,
            RDKafkaErrorCode::SSL,
            "ssl://h:1/bootstrap: SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        assert!(
            a.contains("certificate verify failed") && a.contains("tls_ca"),
            "{a}"
        );
        // A client certificate refused: a transport failure, a TLS alert.
        let a = advice(
            &tls,
            RDKafkaErrorCode::BrokerTransportFailure,
            "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required",
        )
        .unwrap();
        assert!(a.contains("set tls_cert and tls_key"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: Authentication failed",
        )
        .unwrap();
        assert!(a.contains("sasl_password_file"), "{a}");
        // The same from a log line, which has no error code.
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "SASL authentication error: SASL SCRAM authentication failed: broker responded with unknown-user (after 68ms in state AUTH_REQ)",
        )
        .unwrap();
        assert!(a.contains("sasl_password_file"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Disconnected (after 2ms in state UP)",
        )
        .unwrap();
        assert!(a.contains("set tls=true or sasl_mechanism"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Send failed: Broken pipe (after 0ms in state UP)",
        )
        .unwrap();
        assert!(a.contains("set tls=true or sasl_mechanism"), "{a}");
        // Only what is not set yet is suggested.
        let a = advice(
            &tls,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Disconnected (after 2ms in state UP)",
        )
        .unwrap();
        assert!(
            a.contains("if they require SASL, set sasl_mechanism"),
            "{a}"
        );
        // Nothing listening: the metadata error says it already.
        assert_eq!(
            advice(
                &plain,
                RDKafkaErrorCode::BrokerTransportFailure,
                "Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
            ),
            None
        );
    }

    #[test]
    fn topic_template_takes_the_data_type() {
        let p = br#"{"uid":"0","data_type":"59","exe":"/bin/x"}"#;
        assert_eq!(topic_of("k-{data_type}", p), "k-59");
        assert_eq!(topic_of("plain", p), "plain");
        assert_eq!(topic_of("k-{data_type}", b"{}"), "k-unknown");
    }
}
