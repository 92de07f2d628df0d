//! `--metrics ADDR`: a Prometheus text-format endpoint, `GET /metrics`.
//!
//! A plain HTTP/1.1 server on one thread: a scrape every few seconds needs
//! nothing more. Each connection gets one response and is closed.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kestrel_sinks::KafkaStats;

/// Renders the whole metrics page.
pub type Render = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Appends one metric with its HELP and TYPE lines.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// `s` as a label value of the text format: backslash, double quote and
/// newline escaped, so that a reason the kernel wrote cannot end the label.
pub fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends a metric with one label, one sample per value.
pub fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
    }
}

/// The Kafka output's metrics.
pub fn kafka(out: &mut String, k: &KafkaStats) {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let s = &k.spool;
    metric(
        out,
        "kestrel_kafka_produced_total",
        "counter",
        "Events handed to the Kafka producer, re-sends included.",
        g(&k.produced),
    );
    metric(
        out,
        "kestrel_kafka_acknowledged_total",
        "counter",
        "Events the brokers acknowledged.",
        g(&k.acknowledged),
    );
    metric(
        out,
        "kestrel_kafka_retried_total",
        "counter",
        "Deliveries that failed or were cancelled; the events are sent again from the spool.",
        g(&k.retried),
    );
    metric(
        out,
        "kestrel_kafka_replayed_total",
        "counter",
        "Events sent again from the spool (left by an earlier run or re-read after a failure).",
        g(&k.replayed),
    );
    metric(
        out,
        "kestrel_kafka_spooled_total",
        "counter",
        "Events written to the on-disk spool (every event is, before delivery).",
        g(&s.spooled),
    );
    metric(
        out,
        "kestrel_kafka_dropped_total",
        "counter",
        "Events lost for good: dropped by the full-spool policy or refused by the producer.",
        k.dropped(),
    );
    metric(
        out,
        "kestrel_kafka_spool_dropped_total",
        "counter",
        "Events dropped by the full-spool policy.",
        g(&s.dropped),
    );
    metric(
        out,
        "kestrel_kafka_rejected_total",
        "counter",
        "Events the producer refused (e.g. too large).",
        g(&k.rejected),
    );
    metric(
        out,
        "kestrel_kafka_spool_bytes",
        "gauge",
        "Bytes of the spool's segment files.",
        g(&s.bytes),
    );
    metric(
        out,
        "kestrel_kafka_spool_pending_events",
        "gauge",
        "Events in the spool not yet acknowledged.",
        g(&s.pending),
    );
    metric(
        out,
        "kestrel_kafka_spool_recovered_events",
        "gauge",
        "Undelivered events found in the spool at start.",
        g(&s.recovered),
    );
    metric(
        out,
        "kestrel_kafka_spool_corrupt_total",
        "counter",
        "Torn or corrupt spool records found (each cut its segment short).",
        g(&s.corrupt),
    );
    metric(
        out,
        "kestrel_kafka_broker_up",
        "gauge",
        "1 when the brokers answered and the topic exists, 0 otherwise.",
        g(&k.broker_up),
    );
    metric(
        out,
        "kestrel_kafka_ack_latency_seconds_sum",
        "counter",
        "Sum of produce-to-acknowledgement times (linger included).",
        g(&k.ack_latency_us_sum) as f64 / 1e6,
    );
    metric(
        out,
        "kestrel_kafka_ack_latency_seconds_count",
        "counter",
        "Acknowledgements timed.",
        g(&k.acknowledged),
    );
    metric(
        out,
        "kestrel_kafka_ack_latency_seconds_max",
        "gauge",
        "Longest produce-to-acknowledgement time since start.",
        g(&k.ack_latency_us_max) as f64 / 1e6,
    );
}

/// Binds `addr` (so a bad address fails the start) and serves on a thread.
pub fn serve(addr: SocketAddr, render: Render) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (metrics)"))?;
    tracing::info!(%addr, "metrics served at /metrics");
    std::thread::Builder::new()
        .name("kestrel-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &render) {
                            tracing::debug!(error = %e, "metrics request");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics: accept failed"),
                }
            }
        })
        .context("starting the metrics thread")?;
    Ok(())
}

fn answer(mut c: TcpStream, render: &Render) -> std::io::Result<()> {
    // A client that sends nothing must not hold the only thread.
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, body) = if method != b"GET" {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else if path == b"/metrics" {
        let mut body = String::with_capacity(8192);
        render(&mut body);
        ("200 OK", body)
    } else {
        ("404 Not Found", "see /metrics\n".to_string())
    };
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()
}
