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

mod client;
mod sender;
mod spec;
mod stats;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::spool::{Spool, SpoolConfig};
use client::new_producer;
use sender::Sender;

pub use sender::MAX_INFLIGHT;
pub use spec::{BadKafkaSpec, KafkaSpec};
pub use stats::KafkaStats;

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
