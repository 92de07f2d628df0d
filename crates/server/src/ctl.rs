//! `kestrel ctl`: the server's API from the command line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::api_client::{read_token, ApiClient};

/// `kestrel ctl` flags.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The server's HTTP API, e.g. https://127.0.0.1:8444.
    #[arg(long, value_name = "URL")]
    pub api: String,
    /// File holding the admin token (the server's DATA/admin.token).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// CA certificate of the server [default: ca.pem beside --token-file].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCmd {
    /// List the agents: a table, or JSON with --json.
    Agents {
        /// One JSON array of agents.
        #[arg(long)]
        json: bool,
    },
    /// One agent: its last heartbeat and recent commands (JSON).
    Agent {
        /// Agent id.
        id: String,
    },
    /// Send a command to an agent and wait for its result.
    Command {
        /// Agent id.
        id: String,
        /// inventory, scan-rootkit, restart or config.
        kind: String,
        /// For config: KEY=VALUE.
        arg: Option<String>,
        /// Seconds to wait for the result (0: do not wait).
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// One command's status and result (JSON), e.g. one sent with
    /// --timeout-secs 0.
    Status {
        /// Command id, as `command` printed it.
        id: String,
    },
    /// Revoke an agent: its stream is cut and it can no longer connect.
    Revoke {
        /// Agent id.
        id: String,
    },
}

/// Runs `kestrel ctl`.
pub fn run(args: CtlArgs) -> Result<()> {
    let ca = args.ca_file.clone().unwrap_or_else(|| {
        args.token_file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("ca.pem")
    });
    let ca_pem =
        std::fs::read(&ca).with_context(|| format!("cannot read CA file {}", ca.display()))?;
    let client = ApiClient::new(&args.api, &ca_pem, read_token(&args.token_file)?)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.cmd {
            CtlCmd::Agents { json } => {
                let v = client.ok("GET", "/api/agents", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_table(&v);
                }
            }
            CtlCmd::Agent { id } => {
                let v = client.ok("GET", &format!("/api/agents/{id}"), None).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            CtlCmd::Status { id } => {
                let v = client.ok("GET", &format!("/api/commands/{id}"), None).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            CtlCmd::Revoke { id } => {
                client.ok("POST", &format!("/api/agents/{id}/revoke"), None).await?;
                println!("agent {id} revoked");
            }
            CtlCmd::Command { id, kind, arg, timeout_secs } => {
                let body = json!({"kind": kind, "arg": arg.unwrap_or_default()});
                let v = client
                    .ok("POST", &format!("/api/agents/{id}/commands"), Some(&body))
                    .await?;
                let cid = v["id"].as_str().unwrap_or_default().to_string();
                if timeout_secs == 0 {
                    println!("command {cid} queued");
                    return Ok(());
                }
                let deadline = Instant::now() + Duration::from_secs(timeout_secs);
                loop {
                    let c = client.ok("GET", &format!("/api/commands/{cid}"), None).await?;
                    let status = c["status"].as_str().unwrap_or_default();
                    if status == "ok" || status == "failed" {
                        println!("{}", serde_json::to_string_pretty(&c)?);
                        if status == "failed" {
                            bail!("command failed: {}", c["result"].as_str().unwrap_or_default());
                        }
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("no result for command {cid} after {timeout_secs} s (status {status}); it stays queued");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    })
}

fn print_table(v: &Value) {
    let rows = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<8}  {:>9}  {:<8}  {:<24}  {:>9}  {:>7}",
        "ID", "HOSTNAME", "STATE", "LAST HB", "VERSION", "KERNEL", "EVENTS/S", "DROPS"
    );
    for a in rows {
        let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
        let age = a["last_heartbeat_age_secs"]
            .as_f64()
            .map(|x| format!("{x:.0}s ago"))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<36}  {:<20}  {:<8}  {:>9}  {:<8}  {:<24}  {:>9.1}  {:>7}",
            s("id"),
            s("hostname"),
            s("state"),
            age,
            s("version"),
            s("kernel"),
            a["events_per_sec"].as_f64().unwrap_or(0.0),
            a["drops"].as_u64().unwrap_or(0)
        );
    }
}
