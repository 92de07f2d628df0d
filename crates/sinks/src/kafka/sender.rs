//! The sender thread: reads the spool in order, hands records to
//! librdkafka, moves the spool's committed index over what the brokers
//! acknowledged, and rewinds to the first unacknowledged record when a
//! delivery fails or the producer has to be replaced.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::client::{advice, new_producer, Ctx};
use super::{KafkaSpec, KafkaStats};
use crate::spool::{Cursor, Spool};

/// Records handed to librdkafka and not yet reported on, at most.
pub const MAX_INFLIGHT: usize = 50_000;

struct InFlight {
    index: u64,
    sent: Instant,
    acked: bool,
    failed: bool,
}

pub(super) struct Sender {
    pub(super) config: ClientConfig,
    pub(super) producer: BaseProducer<Ctx>,
    pub(super) spec: KafkaSpec,
    pub(super) key: String,
    pub(super) spool: Arc<Mutex<Spool>>,
    pub(super) stats: Arc<KafkaStats>,
    pub(super) stop: Arc<AtomicBool>,
    /// Records from this index on were written by this run.
    pub(super) first_new: u64,
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
    pub(super) fn run(mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_template_takes_the_data_type() {
        let p = br#"{"uid":"0","data_type":"59","exe":"/bin/x"}"#;
        assert_eq!(topic_of("k-{data_type}", p), "k-59");
        assert_eq!(topic_of("plain", p), "plain");
        assert_eq!(topic_of("k-{data_type}", b"{}"), "k-unknown");
    }
}
