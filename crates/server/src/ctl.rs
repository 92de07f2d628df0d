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
        /// inventory, scan-rootkit, reload-rules, restart or config.
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
    /// Let an enrolled agent id enroll again (an agent that lost its
    /// secret): its next enrollment within the time given replaces its
    /// secret. Without this, enrolling an enrolled id is refused.
    Approve {
        /// Agent id.
        id: String,
        /// Minutes the approval holds.
        #[arg(long, default_value_t = 60)]
        valid_mins: u64,
    },
    /// Per-host enrollment tokens: each enrolls one agent.
    #[command(subcommand)]
    Token(TokenCmd),
}

/// `kestrel ctl token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Make a token for one host; the token is printed on stdout, once
    /// (the server keeps only its hash).
    Create {
        /// The host it is for (a label).
        host: String,
        /// Hours it stays valid unused (0: until used or revoked).
        #[arg(long, default_value_t = 168)]
        valid_hours: u64,
    },
    /// List the tokens: id, host, state, the agent each enrolled.
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an unused token.
    Revoke {
        /// Token id, as `create` or `list` printed it.
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
            CtlCmd::Approve { id, valid_mins } => {
                let body = json!({"valid_secs": valid_mins.max(1) * 60});
                client.ok("POST", &format!("/api/agents/{id}/approve"), Some(&body)).await?;
                println!("agent {id} may enroll again within {valid_mins} min; its next enrollment replaces its secret");
            }
            CtlCmd::Token(TokenCmd::Create { host, valid_hours }) => {
                let body = json!({"host": host, "valid_hours": valid_hours});
                let v = client.ok("POST", "/api/tokens", Some(&body)).await?;
                eprintln!(
                    "token {} for {}: enrolls one agent{}",
                    v["id"].as_str().unwrap_or_default(),
                    term_safe(&host),
                    if valid_hours > 0 { format!(", within {valid_hours} h") } else { String::new() }
                );
                println!("{}", v["token"].as_str().unwrap_or_default());
            }
            CtlCmd::Token(TokenCmd::List { json }) => {
                let v = client.ok("GET", "/api/tokens", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_tokens(&v);
                }
            }
            CtlCmd::Token(TokenCmd::Revoke { id }) => {
                client.ok("POST", &format!("/api/tokens/{id}/revoke"), None).await?;
                println!("token {id} revoked");
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

/// `s` safe to print on a terminal: control characters (ESC, CR, LF...),
/// bidirectional overrides and backslashes escaped, so that what an agent
/// reports cannot move the cursor, forge a row or reorder text.
pub fn term_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_tokens(v: &Value) {
    println!(
        "{:<16}  {:<24}  {:<8}  {:<36}",
        "ID", "HOST", "STATE", "ENROLLED"
    );
    let now = crate::fleet::now_ms();
    for t in v.as_array().cloned().unwrap_or_default() {
        let state = if t["revoked"] == true {
            "revoked"
        } else if !t["used_by"].is_null() {
            "used"
        } else if t["expires_at"].as_i64().is_some_and(|e| e <= now) {
            "expired"
        } else {
            "valid"
        };
        println!(
            "{:<16}  {:<24}  {:<8}  {:<36}",
            term_safe(t["id"].as_str().unwrap_or("")),
            term_safe(t["host"].as_str().unwrap_or("")),
            state,
            term_safe(t["used_by"].as_str().unwrap_or("-")),
        );
    }
}

fn print_table(v: &Value) {
    let rows = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<20}  {:<8}  {:>9}  {:<8}  {:<24}  {:>9}  {:>7}",
        "ID", "HOSTNAME", "STATE", "LAST HB", "VERSION", "KERNEL", "EVENTS/S", "DROPS"
    );
    for a in rows {
        let s = |k: &str| term_safe(a[k].as_str().unwrap_or(""));
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

#[cfg(test)]
mod tests {
    use super::term_safe;

    #[test]
    fn terminal_output_escapes_what_could_forge_a_row() {
        assert_eq!(term_safe("web-1.example"), "web-1.example");
        assert_eq!(
            term_safe("a\r\x1b[2K\nb\u{202e}c\\"),
            "a\\u{d}\\u{1b}[2K\\u{a}b\\u{202e}c\\\\"
        );
        assert_eq!(term_safe("h\u{85}\u{7f}"), "h\\u{85}\\u{7f}");
        assert_eq!(term_safe("hôte"), "hôte");
    }
}
