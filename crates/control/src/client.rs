//! The agent side of the control protocol: enroll once, then keep one
//! bidirectional stream open to the server, sending heartbeats and command
//! results, and executing the commands that come down. Connection failures
//! are retried for ever with exponential backoff and jitter; nothing here
//! blocks the agent's collection, which runs on other threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::pb::{
    agent_message, control_client::ControlClient, server_message, AgentMessage, Command,
    CommandResult, EnrollRequest, Heartbeat,
};

/// Where and how to reach the server.
#[derive(Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of the server's gRPC listener.
    pub server: String,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    /// The fleet's enrollment token, exchanged once for a secret.
    pub enroll_token: String,
    /// This agent's stable id.
    pub agent_id: String,
    /// Host name reported at enrollment.
    pub hostname: String,
    /// Where the per-agent secret is kept; `None` keeps it in memory only
    /// (simulated agents).
    pub secret_file: Option<PathBuf>,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// Longest wait between two connection attempts.
    pub backoff_max: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("agent_id", &self.agent_id)
            .field("hostname", &self.hostname)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// What the agent does with a command.
pub struct Outcome {
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result shown to the operator (counts, error message, ...).
    pub message: String,
    /// Run once the result has been handed to the stream (a restart must
    /// be acknowledged before the process goes).
    pub after_ack: Option<Box<dyn FnOnce() + Send>>,
}

impl Outcome {
    /// A success with `message`.
    pub fn ok(message: impl Into<String>) -> Self {
        Outcome {
            ok: true,
            message: message.into(),
            after_ack: None,
        }
    }

    /// A failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            message: message.into(),
            after_ack: None,
        }
    }
}

/// The agent as the client sees it. Both methods may block: they run on
/// tokio's blocking pool.
pub trait AgentHandle: Send + Sync + 'static {
    /// The current heartbeat.
    fn heartbeat(&self) -> Heartbeat;
    /// Executes one command.
    fn execute(&self, cmd: &Command) -> Outcome;
    /// Told about connection state changes, for logs and heartbeats.
    fn connection(&self, _connected: bool, _error: Option<&str>) {}
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server address or CA is unusable.
    #[error("bad control configuration: {0}")]
    Config(String),
    /// The server's certificate is not signed by the CA the agent was
    /// given, or does not name the server.
    #[error("the server's certificate did not verify against the CA file given (--ca-file): {0}")]
    Certificate(String),
    /// The server could not be reached or the TLS handshake failed.
    #[error("cannot reach the server: {}", causes(.0))]
    Transport(tonic::transport::Error),
    /// The server answered with an error.
    #[error("server said: {} ({:?})", .0.message(), .0.code())]
    Status(#[from] tonic::Status),
    /// The secret file could not be written or read.
    #[error("agent secret: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the stream.
    #[error("the server closed the stream")]
    Closed,
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Error {
        match rejected_certificate(&e) {
            Some(why) => Error::Certificate(why),
            None => Error::Transport(e),
        }
    }
}

/// What rustls said of the server's certificate, if that is why the
/// connection failed (it travels inside an `io::Error` in the chain).
fn rejected_certificate(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t @ rustls::Error::InvalidCertificate(_)) = tls {
            return Some(t.to_string());
        }
        cur = err.source();
    }
    None
}

/// `e` and its causes, "a: b: c" ("transport error" alone says nothing).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// The endpoint for `cfg.server` with TLS checked against `cfg.ca_pem`.
pub fn endpoint(cfg: &ClientConfig) -> Result<Endpoint, Error> {
    let host = server_host(&cfg.server)
        .ok_or_else(|| Error::Config(format!("{:?} is not HOST:PORT", cfg.server)))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cfg.ca_pem))
        .domain_name(host);
    Ok(Endpoint::from_shared(format!("https://{}", cfg.server))
        .map_err(|e| Error::Config(format!("{:?}: {e}", cfg.server)))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
pub fn server_host(server: &str) -> Option<String> {
    let (host, port) = server.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// Exchanges the enrollment token for this agent's secret.
pub async fn enroll(cfg: &ClientConfig, channel: Channel) -> Result<String, Error> {
    let mut client = ControlClient::new(channel);
    let resp = client
        .enroll(EnrollRequest {
            token: cfg.enroll_token.clone(),
            agent_id: cfg.agent_id.clone(),
            hostname: cfg.hostname.clone(),
        })
        .await?;
    Ok(resp.into_inner().secret)
}

/// Runs the agent's side of the protocol for ever: enroll if needed,
/// connect, heartbeat, execute commands, reconnect after any failure.
pub async fn run(cfg: ClientConfig, agent: Arc<dyn AgentHandle>) {
    let mut secret: Option<String> = cfg
        .secret_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let err = match session(&cfg, &agent, &mut secret).await {
            Ok(()) => Error::Closed,
            Err(e) => e,
        };
        let msg = err.to_string();
        agent.connection(false, Some(&msg));
        if let Error::Status(s) = &err {
            if s.code() == Code::Unauthenticated {
                // The server does not know this secret: its database was
                // reset (enrolling again with the token works), or the id
                // was enrolled again with an admin's approval (enrolling
                // is refused until an admin approves again).
                secret = None;
                if let Some(p) = &cfg.secret_file {
                    let _ = std::fs::remove_file(p);
                }
            }
            // Revoked, or an enrolled id waiting for an admin's approval:
            // nothing changes soon.
            if matches!(s.code(), Code::PermissionDenied | Code::AlreadyExists) {
                backoff = cfg.backoff_max;
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(500);
        }
        let wait = jitter(backoff);
        tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "control: not connected to the server");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// `d` plus or minus up to half of it, so that agents cut off together do
/// not all come back in the same instant.
fn jitter(d: Duration) -> Duration {
    let r = u64::from_str_radix(&crate::random_hex(4), 16).unwrap_or(0) % 1000;
    d / 2 + d * r as u32 / 1000
}

async fn session(
    cfg: &ClientConfig,
    agent: &Arc<dyn AgentHandle>,
    secret: &mut Option<String>,
) -> Result<(), Error> {
    let channel = endpoint(cfg)?.connect().await?;
    let sec = match secret.clone() {
        Some(s) => s,
        None => {
            let s = enroll(cfg, channel.clone()).await?;
            if let Some(p) = &cfg.secret_file {
                crate::write_private(p, &s)?;
            }
            tracing::info!(agent_id = %cfg.agent_id, "control: enrolled with the server");
            *secret = Some(s.clone());
            s
        }
    };
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let hb = heartbeat(agent).await;
    let _ = tx.send(hb).await;
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    let md = req.metadata_mut();
    md.insert(
        crate::AGENT_ID_HEADER,
        MetadataValue::try_from(cfg.agent_id.as_str())
            .map_err(|_| Error::Config("agent id is not valid metadata".into()))?,
    );
    md.insert(
        crate::SECRET_HEADER,
        MetadataValue::try_from(sec.as_str())
            .map_err(|_| Error::Config("secret is not valid metadata".into()))?,
    );
    let mut inbound = ControlClient::new(channel).session(req).await?.into_inner();
    tracing::info!(server = %cfg.server, "control: connected to the server");
    agent.connection(true, None);
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hb = heartbeat(agent).await;
                if tx.send(hb).await.is_err() {
                    return Err(Error::Closed);
                }
            }
            msg = inbound.message() => {
                let Some(msg) = msg? else { return Err(Error::Closed) };
                let Some(server_message::Msg::Command(cmd)) = msg.msg else { continue };
                // Quoted and escaped: a command cannot forge a log line.
                tracing::info!(id = ?cmd.id, kind = ?cmd.kind, arg = ?cmd.arg, "control: command received");
                let (agent, tx) = (agent.clone(), tx.clone());
                tokio::spawn(async move {
                    let id = cmd.id.clone();
                    let out = tokio::task::spawn_blocking(move || {
                        let a = agent;
                        a.execute(&cmd)
                    })
                    .await
                    .unwrap_or_else(|e| Outcome::failed(format!("the command panicked: {e}")));
                    tracing::info!(id = ?id, ok = out.ok, result = ?out.message, "control: command done");
                    let res = AgentMessage {
                        msg: Some(agent_message::Msg::Result(CommandResult {
                            id,
                            ok: out.ok,
                            message: out.message,
                        })),
                    };
                    let _ = tx.send(res).await;
                    if let Some(after) = out.after_ack {
                        // Leave the result time to leave the socket.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        after();
                    }
                });
            }
        }
    }
}

async fn heartbeat(agent: &Arc<dyn AgentHandle>) -> AgentMessage {
    let a = agent.clone();
    let hb = tokio::task::spawn_blocking(move || a.heartbeat())
        .await
        .unwrap_or_default();
    AgentMessage {
        msg: Some(agent_message::Msg::Heartbeat(hb)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_server_addresses() {
        assert_eq!(server_host("127.0.0.1:18400").as_deref(), Some("127.0.0.1"));
        assert_eq!(server_host("[::1]:18400").as_deref(), Some("::1"));
        assert_eq!(server_host("srv.example:1").as_deref(), Some("srv.example"));
        assert_eq!(server_host("nope"), None);
        assert_eq!(server_host("a:b"), None);
    }

    #[test]
    fn jitter_stays_within_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(1) && j <= Duration::from_secs(3));
        }
    }
}
