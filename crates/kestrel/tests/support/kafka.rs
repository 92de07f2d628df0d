//! What the Kafka tests (kafka.rs, kafka_auth.rs) share: a real
//! Kafka-protocol broker (tansu), librdkafka's consumer to read it back, exec
//! and connect load, the agent's metrics.
//!
//! Every Kafka test holds [`super::serial`] for its whole body (its brokers
//! and load outlive single agents): one metrics address serves them all.
//! Brokers: kafka.rs on 127.0.0.1:19092-19098, kafka_auth.rs on
//! 19100-19106.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{marker, Agent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

pub const METRICS: &str = "127.0.0.1:19099";

/// The broker binary: `$KESTREL_TANSU`, else where `scripts/kafka-broker
/// install` puts it.
pub fn tansu() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = match std::env::var_os("KESTREL_TANSU") {
            Some(p) => PathBuf::from(p),
            None => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker");
                let out = Command::new("bash")
                    .arg(&script)
                    .arg("path")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{} path failed", script.display());
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        assert!(
            p.is_file(),
            "no Kafka broker at {}: run scripts/kafka-broker install (or set KESTREL_TANSU)",
            p.display()
        );
        p
    })
    .clone()
}

/// How a test broker runs, beyond the defaults (in-memory storage, no
/// authentication, clients sent back to the port it listens on).
#[derive(Clone, Default)]
pub struct BrokerOpts {
    /// The port metadata sends clients to: a TLS front's.
    pub advertised: Option<u16>,
    /// `--authentication`: SASL before any other request.
    pub authentication: bool,
    /// SQLite storage in this directory instead of memory: the in-memory
    /// engine of tansu 0.6 drops SCRAM credentials.
    pub sqlite_dir: Option<PathBuf>,
}

/// A tansu broker on 127.0.0.1:port.
pub struct Broker {
    port: u16,
    opts: BrokerOpts,
    child: Option<Child>,
}

impl Broker {
    /// In-memory storage, no authentication.
    pub fn start(port: u16) -> Broker {
        Broker::start_with(port, BrokerOpts::default())
    }

    pub fn start_with(port: u16, opts: BrokerOpts) -> Broker {
        let mut b = Broker {
            port,
            opts,
            child: None,
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!(
            "tcp://127.0.0.1:{}",
            self.opts.advertised.unwrap_or(self.port)
        );
        std::fs::create_dir_all("/tmp/kafka-brokers").unwrap();
        let log = std::fs::File::create(format!("/tmp/kafka-brokers/{}.log", self.port)).unwrap();
        let mut cmd = Command::new(tansu());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ]);
        match &self.opts.sqlite_dir {
            // tansu opens sqlite://NAME relative to its working directory.
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                cmd.current_dir(dir)
                    .args(["--storage-engine", "sqlite://tansu.db"])
            }
            None => cmd.args(["--storage-engine", "memory://tansu/"]),
        };
        if self.opts.authentication {
            cmd.arg("--authentication");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_listening(self.port, "tansu");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// With `tansu topic create`, which speaks neither TLS nor SASL: on a
    /// broker without `--authentication`, through its own port.
    pub fn create_topic(&self, name: &str) {
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

/// Waits until something accepts connections on 127.0.0.1:port.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A librdkafka client configuration for `broker`, plus `extra` settings
/// (TLS, SASL).
pub fn client(broker: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// What a consumer read: event_id → times seen, and every payload.
#[derive(Default)]
pub struct Seen {
    pub ids: HashMap<String, u32>,
    pub events: Vec<Value>,
    pub next_offset: i64,
}

/// Reads partition 0 of `topic` from the beginning, on a thread, until
/// stopped.
pub struct Reader {
    config: ClientConfig,
    topic: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    pub fn start(broker: &str, topic: &str) -> Reader {
        Reader::start_with(client(broker, &[]), topic)
    }

    /// With `config` from [`client`]: a TLS or SASL broker.
    pub fn start_with(config: ClientConfig, topic: &str) -> Reader {
        let consumer: BaseConsumer = config
            .clone()
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
            config,
            topic: topic.to_string(),
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the reader has consumed up to the partition's end, and
    /// the end has stopped moving: a produce request sent just before the
    /// caller froze the agent may still be appended after a first look.
    pub fn catch_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            let high = high_watermark(&self.config, &self.topic);
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

    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Reader {
    /// A test that failed midway must not leave its consumer polling under
    /// the tests that follow it in this process.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The end of partition 0 of `topic`: how many records it ever took.
pub fn high_watermark(config: &ClientConfig, topic: &str) -> i64 {
    let c: BaseConsumer = config
        .clone()
        .set("group.id", marker("wm"))
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}

/// Sequence numbers of run `run` of agent `agent` among `ids`.
pub fn seqs(ids: &HashMap<String, u32>, agent: &str, run: u64) -> BTreeSet<u64> {
    let prefix = format!("{agent}-{run}-");
    ids.keys()
        .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

pub fn identity(state: &Path) -> (String, u64) {
    let id = std::fs::read_to_string(state.join("agent-id")).unwrap();
    let run = std::fs::read_to_string(state.join("run")).unwrap();
    (id.trim().to_string(), run.trim().parse().unwrap())
}

/// One scrape of the agent's /metrics.
pub fn metrics() -> HashMap<String, f64> {
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

pub fn metric(name: &str) -> u64 {
    *metrics()
        .get(name)
        .unwrap_or_else(|| panic!("no metric {name}")) as u64
}

pub fn wait_metric(name: &str, what: &str, secs: u64, ok: impl Fn(u64) -> bool) -> u64 {
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
pub struct Load {
    stop: Arc<AtomicBool>,
    execs: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub port: u16,
}

impl Load {
    pub fn start(mark: &str) -> Load {
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

    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
        self.execs.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    /// A test that failed midway must not leave its execs and connects
    /// running under the tests that follow it in this process.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/kafka-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn start_agent(url: &str, state: &Path) -> Agent {
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
pub fn assert_complete(ids: &HashMap<String, u32>, agent: &str, run: u64, n: u64) {
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
