//! The Kafka output's URL: brokers, topic (or topic template) and options,
//! checked when the agent starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::spool::{FsyncPolicy, FullPolicy};

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
}
