//! The agent's link to `kestrel server` (`--server`): heartbeats with the
//! agent's state (heartbeat.rs), and the server's commands, executed here
//! (`config` ones in commands.rs).
//!
//! The control client runs on its own thread with its own tokio runtime;
//! the chain's threads never wait for it, so the agent keeps collecting
//! and writing events while the server is down.

mod commands;
mod heartbeat;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kestrel_control::client::{AgentHandle, ClientConfig, Outcome};
use kestrel_control::pb::{Command, Heartbeat, ProbeStatus};
use kestrel_probes::ProbeReport;
use serde::Deserialize;

pub use commands::Runtime;

use crate::agent::counters::Counters;
use crate::agent::sources::{self, Inject};
use crate::config::{range, General};

/// Settings of the link to the control server.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct ControlSettings {
    /// Control server, HOST:PORT: send heartbeats and take commands.
    /// Events still go to --output; the agent works on without the server.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,

    /// CA certificate of the control server (its DATA/ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// File with the server's enrollment token, exchanged at first
    /// connection for this agent's own secret (kept in --state-dir).
    #[arg(long, value_name = "FILE")]
    pub enroll_token_file: Option<PathBuf>,

    /// Seconds between two heartbeats to the control server (1-3600).
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    pub heartbeat_secs: Option<u64>,

    /// Host name reported to the control server instead of the system's.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

/// `--server` and friends, resolved.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// HOST:PORT of the server's gRPC listener.
    pub server: String,
    /// The server's CA certificate.
    pub ca_file: PathBuf,
    /// The enrollment token, needed until the agent has its secret.
    pub enroll_token_file: Option<PathBuf>,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// Host name to report instead of the system's.
    pub hostname: Option<String>,
    /// Where the agent id and secret are kept.
    pub state_dir: PathBuf,
}

impl ControlSettings {
    /// None without `server`.
    pub fn resolve(self, general: &General) -> Result<Option<ControlConfig>> {
        let Some(server) = self.server else {
            return Ok(None);
        };
        if kestrel_control::client::server_host(&server).is_none() {
            bail!("bad config value: server = {server:?}: use HOST:PORT");
        }
        let ca_file = self
            .ca_file
            .context("server is set: ca_file (--ca-file) is required")?;
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > 255 {
                bail!("bad config value: hostname = {h:?}: 1 to 255 characters");
            }
        }
        Ok(Some(ControlConfig {
            server,
            ca_file,
            enroll_token_file: self.enroll_token_file,
            heartbeat: Duration::from_secs(range(
                "heartbeat_secs",
                self.heartbeat_secs.unwrap_or(30),
                1,
                3600,
            )?),
            hostname: self.hostname,
            state_dir: general.state_dir.clone(),
        }))
    }
}

/// Re-executes the agent (`/proc/self/exe`, same arguments); returns only
/// on failure.
pub fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    tracing::info!("restarting on the server's command");
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .exec();
    anyhow!("restart: cannot re-execute the agent: {err}")
}

/// The agent as the control client sees it.
struct Handle {
    beat: heartbeat::Beat,
    /// Where commanded inventories and scans send their events.
    inject: Inject,
    stop: Arc<AtomicBool>,
}

impl AgentHandle for Handle {
    fn heartbeat(&self) -> Heartbeat {
        self.beat.heartbeat()
    }

    fn execute(&self, cmd: &Command) -> Outcome {
        let rt = &self.beat.rt;
        let out = match cmd.kind.as_str() {
            "config" => match rt.apply_config(&cmd.arg) {
                Ok(m) => Outcome::ok(m),
                Err(e) => Outcome::failed(e),
            },
            "inventory" => match sources::inventory(&self.inject) {
                Ok(sent) => {
                    let by_type: Vec<String> =
                        sent.by_type.iter().map(|(t, c)| format!("{t}={c}")).collect();
                    Outcome::ok(format!(
                        "sent {} inventory events ({}) with {} warnings in {:.1} s",
                        sent.items,
                        by_type.join(" "),
                        sent.warnings,
                        sent.took.as_secs_f64()
                    ))
                }
                Err(e) => Outcome::failed(format!("{e:#}")),
            },
            "scan-rootkit" => match sources::rootkit_scan(&self.inject) {
                Ok(m) => Outcome::ok(m),
                Err(e) => Outcome::failed(format!("{e:#}")),
            },
            "reload-rules" => match rt.reload_rules() {
                Ok(m) => Outcome::ok(m),
                Err(e) => Outcome::failed(e),
            },
            "restart" => {
                let (rt, stop) = (rt.clone(), self.stop.clone());
                Outcome {
                    ok: true,
                    message: format!(
                        "restarting (pid {}, up {} s): draining, then re-executing",
                        std::process::id(),
                        self.beat.started.elapsed().as_secs()
                    ),
                    after_ack: Some(Box::new(move || {
                        rt.restart.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    })),
                }
            }
            other => Outcome::failed(format!(
                "unknown command {other:?}: this agent knows inventory, scan-rootkit, reload-rules, restart and config"
            )),
        };
        if !out.ok {
            rt.set_error(format!("command {} failed: {}", cmd.kind, out.message));
        }
        out
    }

    fn connection(&self, connected: bool, error: Option<&str>) {
        if let (false, Some(e)) = (connected, error) {
            self.beat.rt.set_error(format!("control: {e}"));
        }
    }
}

/// Starts the control client thread.
pub fn start(
    cfg: &ControlConfig,
    rt: Arc<Runtime>,
    inject: Inject,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    probes: &[ProbeReport],
) -> Result<()> {
    let ca_pem = std::fs::read(&cfg.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", cfg.ca_file.display()))?;
    let agent_id = kestrel_control::agent_id(&cfg.state_dir).with_context(|| {
        format!(
            "agent id in the state directory {}",
            cfg.state_dir.display()
        )
    })?;
    let secret_file = cfg.state_dir.join(kestrel_control::SECRET_FILE);
    let enroll_token = match &cfg.enroll_token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read --enroll-token-file {}", p.display()))?
            .trim()
            .to_string(),
        None if secret_file.exists() => String::new(),
        None => anyhow::bail!(
            "--server needs --enroll-token-file until the agent is enrolled ({} is missing)",
            secret_file.display()
        ),
    };
    let hostname = cfg
        .hostname
        .clone()
        .unwrap_or_else(|| kestrel_event::Host::new().hostname.clone());
    let client = ClientConfig {
        server: cfg.server.clone(),
        ca_pem,
        enroll_token,
        agent_id: agent_id.clone(),
        hostname: hostname.clone(),
        secret_file: Some(secret_file),
        heartbeat: cfg.heartbeat,
        backoff_max: Duration::from_secs(30),
    };
    kestrel_control::client::endpoint(&client).map_err(|e| anyhow!("--server: {e}"))?;
    let probes = probes
        .iter()
        .map(|p| ProbeStatus {
            program: p.program.into(),
            hook: p.target.into(),
            state: p.state.as_str().into(),
            reason: p.state.reason().unwrap_or_default().into(),
            backend: p.backend.into(),
            backend_reason: p.why.clone(),
        })
        .collect();
    let handle = Arc::new(Handle {
        beat: heartbeat::Beat::new(
            rt,
            counters,
            probes,
            agent_id.clone(),
            hostname,
            cfg.heartbeat.as_secs(),
        ),
        inject,
        stop,
    });
    tracing::info!(server = %cfg.server, agent_id = %agent_id, "control: connecting to the server");
    std::thread::Builder::new()
        .name("kestrel-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(4)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "control: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(kestrel_control::client::run(client, handle));
        })
        .context("starting the control thread")?;
    Ok(())
}
