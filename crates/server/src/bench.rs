//! `kestrel bench server`: N simulated agents, each with its own enrolled
//! TLS gRPC connection and heartbeats, against a server (its own, started
//! as a child process, unless --server is given). Checks that all are
//! online and that a command sent to all is delivered and acknowledged by
//! all; prints the timings and the server's CPU and memory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kestrel_control::client::{AgentHandle, ClientConfig, Outcome};
use kestrel_control::pb::{Command as Cmd, Heartbeat};
use serde_json::json;

use crate::api_client::{read_token, ApiClient};

/// `kestrel bench server` flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// gRPC address of a running server; without it the bench starts its
    /// own in a temporary directory.
    #[arg(long, value_name = "ADDR", requires_all = ["api", "data"])]
    pub server: Option<String>,
    /// HTTP API of the running server (with --server).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Data directory of the running server, for its CA and tokens (with
    /// --server).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// gRPC address for the bench's own server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18480")]
    pub listen: String,
    /// HTTP address for the bench's own server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18481")]
    pub http: String,
    /// Seconds between two heartbeats of each simulated agent.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Seconds the server's CPU is measured with every agent online.
    #[arg(long, default_value_t = 10)]
    pub measure_secs: u64,
    /// Give up after this many seconds for each phase.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

struct SimAgent {
    id: String,
    hostname: String,
    started: Instant,
    heartbeat_secs: u64,
    executed: Arc<AtomicU64>,
}

impl AgentHandle for SimAgent {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            agent_id: self.id.clone(),
            hostname: self.hostname.clone(),
            ips: vec!["127.0.0.1".into()],
            os: "bench".into(),
            kernel: "simulated".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            heartbeat_secs: self.heartbeat_secs,
            ..Default::default()
        }
    }

    fn execute(&self, cmd: &Cmd) -> Outcome {
        self.executed.fetch_add(1, Ordering::Relaxed);
        Outcome::ok(format!("simulated {} {}", cmd.kind, cmd.arg))
    }
}

/// Process CPU time (user + system) in seconds, and RSS in bytes.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?
        * 1024;
    Some((cpu, rss))
}

struct OwnServer {
    child: Child,
    dir: PathBuf,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the bench.
pub fn run(args: BenchArgs) -> Result<()> {
    let nofile = crate::raise_nofile();
    if (nofile as usize) < args.agents + 64 {
        bail!(
            "the open-file limit ({nofile}) is too low for {} agents: raise `ulimit -Hn`",
            args.agents
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut own = None;
    let r = rt.block_on(bench(args, &mut own));
    // The simulated agents go first, so they do not see the server stop.
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(own);
    r
}

async fn bench(args: BenchArgs, own: &mut Option<OwnServer>) -> Result<()> {
    let (server, api_url, data) = match (&args.server, &args.api, &args.data) {
        (Some(s), Some(a), Some(d)) => (s.clone(), a.clone(), d.clone()),
        _ => {
            let dir = std::env::temp_dir().join(format!("kserver-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let child = Command::new(std::env::current_exe()?)
                .args([
                    "server",
                    "--listen",
                    &args.listen,
                    "--http",
                    &args.http,
                    "--data",
                ])
                .arg(&dir)
                .args([
                    // Every simulated agent connects from this host at once.
                    "--max-pending-per-ip",
                    &args.agents.max(64).to_string(),
                    "--offline-after-secs",
                    &(args.heartbeat_secs * 3).to_string(),
                    "--log-level",
                    "warn",
                ])
                .stdout(Stdio::null())
                .spawn()
                .context("starting the server")?;
            *own = Some(OwnServer {
                child,
                dir: dir.clone(),
            });
            (args.listen.clone(), format!("https://{}", args.http), dir)
        }
    };
    let token_path = data.join("admin.token");
    let wait_start = Instant::now();
    while !token_path.exists() || !data.join("enroll.token").exists() {
        if wait_start.elapsed() > Duration::from_secs(30) {
            bail!("the server made no tokens in {}", data.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca_pem = std::fs::read(data.join("ca.pem")).context("reading the server's ca.pem")?;
    let api = ApiClient::new(&api_url, &ca_pem, read_token(&token_path)?)?;
    while api.ok("GET", "/api/summary", None).await.is_err() {
        if wait_start.elapsed() > Duration::from_secs(30) {
            bail!("the server's API at {api_url} does not answer");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enroll_token = read_token(&data.join("enroll.token"))?;
    let run_id = kestrel_control::random_hex(4);
    let executed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for i in 0..args.agents {
        let cfg = ClientConfig {
            server: server.clone(),
            ca_pem: ca_pem.clone(),
            enroll_token: enroll_token.clone(),
            agent_id: format!("bench-{run_id}-{i:06}"),
            hostname: format!("bench-{i:06}"),
            secret_file: None,
            heartbeat: Duration::from_secs(args.heartbeat_secs),
            backoff_max: Duration::from_secs(10),
        };
        let agent = Arc::new(SimAgent {
            id: cfg.agent_id.clone(),
            hostname: cfg.hostname.clone(),
            started: Instant::now(),
            heartbeat_secs: args.heartbeat_secs,
            executed: executed.clone(),
        });
        tokio::spawn(kestrel_control::client::run(cfg, agent));
    }
    let n = args.agents as u64;
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut last = json!({});
    loop {
        let s = api.ok("GET", "/api/summary", None).await?;
        if s["online"].as_u64().unwrap_or(0) >= n && s["connected"].as_u64().unwrap_or(0) >= n {
            last = s;
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "only {} of {n} agents online after {} s: {s}",
                s["online"],
                args.timeout_secs
            );
        }
        if s != last {
            tracing::info!(online = %s["online"], connected = %s["connected"], "waiting for the agents");
            last = s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let online_secs = started.elapsed().as_secs_f64();
    println!("bench: {n} agents online in {online_secs:.1} s ({last})");

    let sent = Instant::now();
    let b = api
        .ok(
            "POST",
            "/api/commands",
            Some(&json!({"kind": "config", "arg": "bench=1"})),
        )
        .await?;
    let batch = b["batch"].as_str().unwrap_or_default().to_string();
    let counts = loop {
        let c = api
            .ok("GET", &format!("/api/batches/{batch}"), None)
            .await?;
        if c["ok"].as_u64().unwrap_or(0) >= n {
            break c;
        }
        if sent.elapsed() > timeout {
            bail!(
                "command acknowledged by {} of {n} agents after {} s: {c}",
                c["ok"],
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cmd_secs = sent.elapsed().as_secs_f64();
    let done = executed.load(Ordering::Relaxed);
    println!(
        "bench: command delivered to {done} agents and acknowledged by {} in {cmd_secs:.2} s ({counts})",
        counts["ok"]
    );
    if done < n {
        bail!("only {done} of {n} simulated agents executed the command");
    }
    if let Some(own) = own.as_ref() {
        let pid = own.child.id();
        let me = std::process::id();
        let (c0, _) = proc_usage(pid).unwrap_or_default();
        let (b0, _) = proc_usage(me).unwrap_or_default();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.measure_secs)).await;
        let (c1, rss) = proc_usage(pid).unwrap_or_default();
        let (b1, brss) = proc_usage(me).unwrap_or_default();
        let secs = t0.elapsed().as_secs_f64();
        let s = api.ok("GET", "/api/summary", None).await?;
        println!(
            "bench: server with {n} agents heartbeating every {} s: cpu {:.1}% of one core, rss {:.1} MiB; bench process cpu {:.1}%, rss {:.1} MiB; still online {}",
            args.heartbeat_secs,
            (c1 - c0) / secs * 100.0,
            rss as f64 / 1048576.0,
            (b1 - b0) / secs * 100.0,
            brss as f64 / 1048576.0,
            s["online"],
        );
        if s["online"].as_u64().unwrap_or(0) < n {
            bail!("agents went offline during the measurement: {s}");
        }
    }
    println!("bench: ok");
    Ok(())
}
