//! The Kafka output against a real Kafka-protocol broker (tansu, in-memory
//! storage, started and killed by each test on its own port), read back by
//! librdkafka's consumer: a different code path than the agent's producer.
//!
//! Completeness is checked on `event_id`: AGENT-RUN-SEQ, SEQ counting every
//! event the agent wrote in a run from 0. "Nothing missing" means every SEQ
//! the spool took is consumed at least once.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{marker, Agent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:19099";

fn tansu() -> PathBuf {
    let p = std::env::var_os("KESTREL_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kestrel-tansu/bin/tansu"));
    assert!(
        p.is_file(),
        "no Kafka broker at {}: run scripts/kafka-broker install (or set KESTREL_TANSU)",
        p.display()
    );
    p
}

/// A tansu broker with in-memory storage on 127.0.0.1:port.
struct Broker {
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(port: u16) -> Broker {
        let mut b = Broker { port, child: None };
        b.restart();
        b
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        std::fs::create_dir_all("/tmp/kafka-brokers").unwrap();
        let log = std::fs::File::create(format!("/tmp/kafka-brokers/{}.log", self.port)).unwrap();
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(tansu())
                .args(["topic", "create", "--broker"])
                .arg(format!("tcp://127.0.0.1:{}", self.port))
                .args([name, "--partitions", "1"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cannot create topic {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a consumer read: event_id → times seen, and every payload.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, u32>,
    events: Vec<Value>,
    next_offset: i64,
}

/// Reads partition 0 of `topic` from the beginning, on a thread, until
/// stopped.
struct Reader {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(broker: &str, topic: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", marker("reader"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let Ok(m) = m else { continue };
                    let payload = m.payload().unwrap_or_default();
                    // A corrupt record would not parse: fail loudly.
                    let v: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
                        panic!("bad payload {:?}: {e}", String::from_utf8_lossy(payload))
                    });
                    let id = v["event_id"].as_str().expect("event_id").to_string();
                    let mut s = seen.lock().unwrap();
                    *s.ids.entry(id).or_default() += 1;
                    s.events.push(v);
                    s.next_offset = m.offset() + 1;
                }
            })
        };
        Reader {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the reader has consumed up to the partition's end, and
    /// the end has stopped moving: a produce request sent just before the
    /// caller froze the agent may still be appended after a first look.
    fn catch_up(&self, broker: &str, topic: &str) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", marker("wm"))
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            let (_, high) = c
                .fetch_watermarks(topic, 0, Duration::from_secs(10))
                .unwrap();
            if last == Some(high) {
                return;
            }
            while self.seen.lock().unwrap().next_offset < high {
                assert!(
                    Instant::now() < deadline,
                    "consumer did not reach offset {high}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            last = Some(high);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Sequence numbers of run `run` of agent `agent` among `ids`.
fn seqs(ids: &HashMap<String, u32>, agent: &str, run: u64) -> BTreeSet<u64> {
    let prefix = format!("{agent}-{run}-");
    ids.keys()
        .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

fn identity(state: &Path) -> (String, u64) {
    let id = std::fs::read_to_string(state.join("agent-id")).unwrap();
    let run = std::fs::read_to_string(state.join("run")).unwrap();
    (id.trim().to_string(), run.trim().parse().unwrap())
}

/// One scrape of the agent's /metrics.
fn metrics() -> HashMap<String, f64> {
    let mut c = TcpStream::connect(METRICS).expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric(name: &str) -> u64 {
    *metrics()
        .get(name)
        .unwrap_or_else(|| panic!("no metric {name}")) as u64
}

fn wait_metric(name: &str, what: &str, secs: u64, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {name} = {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Exec and connect load: /bin/true with a marker, and TCP connects to a
/// local listener, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    execs: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    port: u16,
}

impl Load {
    fn start(mark: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let execs = Arc::new(AtomicU64::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        {
            let (stop, execs, mark) = (stop.clone(), execs.clone(), mark.to_string());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    Command::new("/bin/true")
                        .arg(&mark)
                        .stdin(Stdio::null())
                        .status()
                        .unwrap();
                    execs.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..50 {
                        let _ = TcpStream::connect(("127.0.0.1", port));
                    }
                    // Leave the agent room: this is load, not a flood.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        Load {
            stop,
            execs,
            threads,
            port,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.execs.load(Ordering::Relaxed)
    }
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/kafka-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_agent(url: &str, state: &Path) -> Agent {
    Agent::start(&[
        "--output",
        url,
        "--state-dir",
        state.to_str().unwrap(),
        "--metrics",
        METRICS,
        "--stats-interval-secs",
        "5",
    ])
}

/// Asserts that run `run` delivered every sequence number below `n`, and
/// no other.
fn assert_complete(ids: &HashMap<String, u32>, agent: &str, run: u64, n: u64) {
    let got = seqs(ids, agent, run);
    let missing: Vec<u64> = (0..n).filter(|s| !got.contains(s)).take(20).collect();
    assert!(
        missing.is_empty(),
        "run {run}: {} of {n} events missing, first {missing:?}",
        n - got.range(..n).count() as u64
    );
    assert!(
        got.range(n..).next().is_none(),
        "run {run}: events beyond the {n} written: {:?}",
        got.range(n..).take(5).collect::<Vec<_>>()
    );
}

#[test]
fn hundred_thousand_events_exactly_once_after_dedup() {
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
    reader.catch_up(&broker.addr(), topic);
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
    before.catch_up(&broker.addr(), topic);
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
    after.catch_up(&broker.addr(), topic);
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
    reader.catch_up(&broker.addr(), topic);
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
    let stderr = agent.stderr();
    let counters = agent.stop();
    eprintln!("kafka {policy}: {counters:?}");
    let reader = Reader::start(&broker.addr(), &topic);
    reader.catch_up(&broker.addr(), &topic);
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
    assert!(
        stderr.contains("the spool is full; events dropped"),
        "{stderr}"
    );
    missing
}

#[test]
fn full_spool_drop_newest_counts_exactly() {
    let missing = spool_drops_are_counted(19095, "drop_newest");
    // The newest were refused: the first events are all there. (The host's
    // own activity goes on while the spool drains, so later drops come in
    // several runs.)
    assert!(missing[0] > 0);
}

#[test]
fn full_spool_drop_oldest_counts_exactly() {
    let missing = spool_drops_are_counted(19096, "drop_oldest");
    // The oldest went: the very first events first.
    assert_eq!(missing[0], 0, "missing {}", ranges(&missing));
}

#[test]
fn wrong_address_or_topic_is_a_clear_error_and_events_wait() {
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
    let out = common::kestrel()
        .args(["agent", "--output", "kafka://127.0.0.1/t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad broker address"), "{err}");
}
