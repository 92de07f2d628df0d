//! What the Kafka output counts, for the agent's metrics and heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::spool::SpoolStats;

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
