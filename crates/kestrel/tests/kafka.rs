//! The Kafka output against a real Kafka-protocol broker (tansu, in-memory
//! storage, started and killed by each test on its own port), read back by
//! librdkafka's consumer: a different code path than the agent's producer.
//!
//! Completeness is checked on `event_id`: AGENT-RUN-SEQ, SEQ counting every
//! event the agent wrote in a run from 0. "Nothing missing" means every SEQ
//! the spool took is consumed at least once.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::kafka::*;
use crate::support::{kestrel, marker, serial};

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn hundred_thousand_events_exactly_once_after_dedup() {
    let _serial = serial();
    let broker = Broker::start(19092);
    let topic = "kestrel-100k";
    broker.create_topic(topic);
    let state = scratch("100k");
    let url = format!(
        "kafka://{}/{topic}?compression=zstd&drain_timeout_ms=60000",
        broker.addr()
    );
    let agent = start_agent(&url, &state.join("state"));
    let (id, run) = identity(&state.join("state"));
    let mark = marker("kafka100k");
    let load = Load::start(&mark);
    let listen_port = load.port;
    let started = Instant::now();
    let cpu0 = cpu_ticks(agent.pid());
    wait_metric("kestrel_emitted_total", "load", 110, |v| v >= 100_000);
    let secs = started.elapsed().as_secs_f64();
    // Figures for docs/performance.md, not assertions.
    let cpu = (cpu_ticks(agent.pid()) - cpu0) as f64 / 100.0 / secs * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let mem: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect();
    eprintln!("kafka: agent CPU {cpu:.0}% of one core, {mem:?}");
    let execs = load.stop();
    let counters = agent.stop();
    assert_eq!(counters["spool_pending"], 0, "{counters:?}");
    assert_eq!(counters["dropped"], 0);
    let written = counters["spooled"];
    assert!(written >= 100_000);
    eprintln!(
        "kafka: {written} events in {secs:.1}s ({:.0}/s), acknowledged {}",
        written as f64 / secs,
        counters["acknowledged"]
    );

    let reader = Reader::start(&broker.addr(), topic);
    reader.catch_up();
    let seen = reader.finish();
    assert_complete(&seen.ids, &id, run, written);
    let dups = seen.ids.values().filter(|&&n| n > 1).count();
    eprintln!(
        "kafka: {} distinct events consumed, {dups} seen more than once",
        seen.ids.len()
    );
    // The load is in there: execs with the marker and connects to the
    // listener, not only background noise.
    let marked = seen
        .events
        .iter()
        .filter(|e| e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark)))
        .count() as u64;
    let connects = seen
        .events
        .iter()
        .filter(|e| e["data_type"] == "42" && e["dport"] == listen_port.to_string().as_str())
        .count();
    assert!(
        marked > 0 && marked <= execs,
        "marked {marked}, execs {execs}"
    );
    assert!(connects > 10_000, "only {connects} connect events");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn broker_killed_then_back_after_20s_loses_nothing() {
    let _serial = serial();
    let mut broker = Broker::start(19093);
    let topic = "kestrel-restart";
    broker.create_topic(topic);
    let state = scratch("restart");
    let url = format!(
        "kafka://{}/{topic}?compression=lz4&message_timeout_ms=10000&drain_timeout_ms=60000",
        broker.addr()
    );
    let agent = start_agent(&url, &state.join("state"));
    let (id, run) = identity(&state.join("state"));
    let before = Reader::start(&broker.addr(), topic);
    let load = Load::start(&marker("kafkarestart"));
    wait_metric(
        "kestrel_kafka_acknowledged_total",
        "first deliveries",
        60,
        |v| v >= 5_000,
    );

    // The broker keeps its log in memory: what it acknowledged must be
    // read before it dies. Freeze the agent so no acknowledgement races
    // the kill, read to the end, kill, thaw.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    before.catch_up();
    broker.kill();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    let first = before.finish();

    let outage = Instant::now();
    let mut peak_pending = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        peak_pending = peak_pending.max(metric("kestrel_kafka_spool_pending_events"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let spool_bytes = metric("kestrel_kafka_spool_bytes");
    assert!(
        peak_pending > 1000,
        "the spool did not fill: {peak_pending}"
    );
    assert!(spool_bytes > 0);
    broker.restart();
    broker.create_topic(topic);
    let after = Reader::start(&broker.addr(), topic);
    std::thread::sleep(Duration::from_secs(3));
    load.stop();
    wait_metric("kestrel_kafka_spool_pending_events", "drain", 90, |v| {
        v == 0
    });
    let counters = agent.stop();
    assert_eq!(counters["spool_pending"], 0, "{counters:?}");
    // What was in flight at the kill timed out and was sent again.
    assert!(counters["retried"] > 0, "{counters:?}");
    assert!(counters["replayed"] > 0, "{counters:?}");
    after.catch_up();
    let second = after.finish();
    let mut all = first.ids.clone();
    for (k, v) in &second.ids {
        *all.entry(k.clone()).or_default() += v;
    }
    assert_complete(&all, &id, run, counters["spooled"]);
    eprintln!(
        "kafka restart: {} before the kill, {} after, peak spool {peak_pending} events, {} written",
        first.ids.len(),
        second.ids.len(),
        counters["spooled"]
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn sigkill_with_a_full_spool_then_restart_loses_nothing() {
    let _serial = serial();
    let port = 19094;
    let topic = "kestrel-sigkill";
    let state = scratch("sigkill");
    let st = state.join("state");
    let url = format!("kafka://127.0.0.1:{port}/{topic}?drain_timeout_ms=60000");
    // No broker yet: everything stays in the spool.
    let agent = start_agent(&url, &st);
    let (id, run1) = identity(&st);
    let load = Load::start(&marker("kafkakill"));
    wait_metric("kestrel_kafka_spool_pending_events", "spooling", 60, |v| {
        v >= 5_000
    });
    load.stop();
    std::thread::sleep(Duration::from_millis(500));
    // Flushed records only: what the agent wrote before the kill.
    let durable = metric("kestrel_kafka_spool_pending_events");
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    drop(agent);
    // A write torn by the crash: a header announcing more than follows.
    let mut segs: Vec<PathBuf> = std::fs::read_dir(st.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
        .unwrap();
    drop(f);

    let broker = Broker::start(port);
    broker.create_topic(topic);
    let agent = start_agent(&url, &st);
    let (_, run2) = identity(&st);
    assert_eq!(run2, run1 + 1);
    wait_metric("kestrel_kafka_spool_pending_events", "replay", 90, |v| {
        v == 0
    });
    assert_eq!(metric("kestrel_kafka_spool_corrupt_total"), 1);
    assert!(metric("kestrel_kafka_replayed_total") >= durable);
    let counters = agent.stop();
    let reader = Reader::start(&broker.addr(), topic);
    reader.catch_up();
    let seen = reader.finish();
    let got = seqs(&seen.ids, &id, run1);
    let n = got.len() as u64;
    assert!(
        n >= durable,
        "{n} events of the killed run delivered, {durable} were spooled"
    );
    assert_complete(&seen.ids, &id, run1, n);
    assert_complete(&seen.ids, &id, run2, counters["spooled"]);
    let _ = std::fs::remove_dir_all(&state);
}

/// What the agent logs when its spool is full and events are dropped.
const SPOOL_FULL_LOG: &str = "the spool is full; events dropped";

/// Runs the agent against a dead broker with a small spool, then brings
/// the broker up; returns (delivered seqs, events written to the sink,
/// dropped, stderr).
fn fill_the_spool(port: u16, policy: &str) -> (BTreeSet<u64>, u64, u64, String) {
    let topic = format!("kestrel-full-{policy}");
    let state = scratch(policy);
    let st = state.join("state");
    let url = format!(
        "kafka://127.0.0.1:{port}/{topic}?spool_max_bytes=262144&spool_segment_bytes=65536&spool_full={policy}&drain_timeout_ms=60000"
    );
    let agent = start_agent(&url, &st);
    let (id, run) = identity(&st);
    let load = Load::start(&marker("kafkafull"));
    wait_metric("kestrel_kafka_dropped_total", "drops", 60, |v| v >= 2_000);
    load.stop();
    assert!(metric("kestrel_kafka_spool_bytes") <= 262_144);
    let broker = Broker::start(port);
    broker.create_topic(&topic);
    wait_metric("kestrel_kafka_spool_pending_events", "drain", 60, |v| {
        v == 0
    });
    // The warning is written by the agent's output thread and read by
    // ours: on a loaded host the reader may lag, so wait for it a while
    // instead of looking once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.stderr().contains(SPOOL_FULL_LOG) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stderr = agent.stderr();
    let counters = agent.stop();
    eprintln!("kafka {policy}: {counters:?}");
    let reader = Reader::start(&broker.addr(), &topic);
    reader.catch_up();
    let seen = reader.finish();
    let _ = std::fs::remove_dir_all(&state);
    // drop_newest refuses events (never spooled); drop_oldest spools every
    // event and deletes some later.
    let total = match policy {
        "drop_newest" => counters["spooled"] + counters["dropped"],
        _ => counters["spooled"],
    };
    let got = seqs(&seen.ids, &id, run);
    eprintln!(
        "kafka {policy}: {} delivered, highest seq {:?}, {total} written",
        got.len(),
        got.last()
    );
    (got, total, counters["dropped"], stderr)
}

/// `missing` as "a-b c-d ...", for failure messages.
fn ranges(missing: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < missing.len() {
        let mut j = i;
        while j + 1 < missing.len() && missing[j + 1] == missing[j] + 1 {
            j += 1;
        }
        out += &format!("{}-{} ", missing[i], missing[j]);
        i = j + 1;
    }
    out
}

/// Fills a capped spool under `policy` and checks what both policies
/// promise: exactly the counted events are missing, and the log says so.
/// Returns the missing sequence numbers.
fn spool_drops_are_counted(port: u16, policy: &str) -> Vec<u64> {
    let (got, total, dropped, stderr) = fill_the_spool(port, policy);
    let missing: Vec<u64> = (0..total).filter(|s| !got.contains(s)).collect();
    assert_eq!(
        missing.len() as u64,
        dropped,
        "total {total}, missing {}",
        ranges(&missing)
    );
    assert_eq!(got.len() as u64, total - dropped);
    assert!(stderr.contains(SPOOL_FULL_LOG), "{stderr}");
    missing
}

#[test]
fn full_spool_drop_newest_counts_exactly() {
    let _serial = serial();
    let missing = spool_drops_are_counted(19095, "drop_newest");
    // The newest were refused: the first events are all there. (The host's
    // own activity goes on while the spool drains, so later drops come in
    // several runs.)
    assert!(missing[0] > 0);
}

#[test]
fn full_spool_drop_oldest_counts_exactly() {
    let _serial = serial();
    let missing = spool_drops_are_counted(19096, "drop_oldest");
    // The oldest went: the very first events first.
    assert_eq!(missing[0], 0, "missing {}", ranges(&missing));
}

#[test]
fn wrong_address_or_topic_is_a_clear_error_and_events_wait() {
    let _serial = serial();
    // Nothing listens on 19098.
    let state = scratch("wrongaddr");
    let st = state.join("state");
    let agent = start_agent("kafka://127.0.0.1:19098/kestrel-nowhere", &st);
    let mark = marker("kafkawrong");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.stderr().contains("cannot reach the Kafka brokers") {
        assert!(Instant::now() < deadline, "no error:\n{}", agent.stderr());
        Command::new("/bin/true").arg(&mark).status().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stderr().contains("events are kept in the spool"));
    assert_eq!(metric("kestrel_kafka_broker_up"), 0);
    wait_metric("kestrel_kafka_spool_pending_events", "spooled", 20, |v| {
        v > 0
    });
    let counters = agent.stop();
    assert!(counters["spool_pending"] > 0);
    assert!(std::fs::read_dir(st.join("spool")).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|e| e == "seg")));
    let _ = std::fs::remove_dir_all(&state);

    // A broker, but not the topic: the error names it; creating the topic
    // lets the spool drain.
    let broker = Broker::start(19097);
    let state = scratch("wrongtopic");
    let st = state.join("state");
    let agent = start_agent(&format!("kafka://{}/kestrel-later", broker.addr()), &st);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.stderr().contains("Kestrel does not create topics") {
        assert!(Instant::now() < deadline, "no error:\n{}", agent.stderr());
        Command::new("/bin/true").arg(&mark).status().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let pending = wait_metric("kestrel_kafka_spool_pending_events", "spooled", 20, |v| {
        v > 0
    });
    broker.create_topic("kestrel-later");
    wait_metric("kestrel_kafka_spool_pending_events", "drain", 60, |v| {
        v == 0
    });
    assert!(metric("kestrel_kafka_acknowledged_total") >= pending);
    agent.stop();
    let _ = std::fs::remove_dir_all(&state);

    // A URL that does not parse stops the agent at once, naming the problem.
    let out = kestrel()
        .args(["agent", "--output", "kafka://127.0.0.1/t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad broker address"), "{err}");
}
