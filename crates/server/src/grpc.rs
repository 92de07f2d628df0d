//! The agents' gRPC service: enrollment and the per-agent stream.

use std::sync::Arc;
use std::time::Duration;

use kestrel_control::pb::{
    agent_message, control_server::Control, server_message, AgentMessage, Command, EnrollRequest,
    EnrollResponse, ServerMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::conn::{ConnInfo, Throttle};
use crate::fleet::{now_ms, Fleet};
use crate::store::{Credential, Enrolled};

/// Implements `kestrel.control.v1.Control`.
pub struct Service {
    /// The fleet.
    pub fleet: Arc<Fleet>,
    /// SHA-256 of the fleet-wide enrollment token; `None`: only per-host
    /// tokens enroll.
    pub enroll_sha256: Option<String>,
    /// Refusals, logged at most once a second each.
    pub refusals: Throttle,
}

fn meta<'a>(req: &'a Request<Streaming<AgentMessage>>, key: &str) -> Option<&'a str> {
    req.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// The connection a request came on (our listener puts it there).
fn conn<T>(req: &Request<T>) -> Option<ConnInfo> {
    req.extensions().get::<ConnInfo>().cloned()
}

#[tonic::async_trait]
impl Control for Service {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let conn = conn(&req);
        let peer = conn.as_ref().map(|c| c.peer);
        let r = req.into_inner();
        // What an agent sends is logged with `?`: quoted and escaped, so
        // that a control character cannot forge or split a log line.
        let token_sha = kestrel_control::sha256_hex(&r.token);
        let host_token = self.enroll_sha256.as_deref() != Some(token_sha.as_str());
        if !kestrel_control::valid_id(&r.agent_id) {
            if let Some(left_out) = self.refusals.allow("enroll-bad-id") {
                tracing::warn!(?peer, left_out, agent_id = ?r.agent_id, "enrollment refused: bad agent id");
            }
            return Err(Status::invalid_argument(
                "agent id must be 1-128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let secret = kestrel_control::random_hex(32);
        let hash = kestrel_control::sha256_hex(&secret);
        let hostname: String = r.hostname.chars().take(255).collect();
        let store = self.fleet.store.clone();
        let (id, h, s) = (r.agent_id.clone(), hostname.clone(), hash.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let cred = if host_token {
                Credential::Host(&token_sha)
            } else {
                Credential::Fleet
            };
            store.enroll(&id, &h, &s, cred, now_ms())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "enrollment not saved");
            Status::internal("enrollment not saved")
        })?;
        let id = &r.agent_id;
        match outcome {
            Enrolled::BadToken => {
                if let Some(left_out) = self.refusals.allow("enroll-bad-token") {
                    tracing::warn!(?peer, left_out, agent_id = %id, hostname = ?hostname,
                        "enrollment refused: bad, revoked, expired or spent enrollment token");
                }
                return Err(Status::unauthenticated("bad enrollment token"));
            }
            Enrolled::Revoked => {
                if let Some(left_out) = self.refusals.allow("enroll-revoked") {
                    tracing::warn!(?peer, left_out, agent_id = %id, hostname = ?hostname,
                        "enrollment refused: agent revoked");
                }
                return Err(Status::permission_denied("this agent was revoked"));
            }
            Enrolled::Taken(enrolled_as) => {
                if let Some(left_out) = self.refusals.allow("enroll-taken") {
                    tracing::warn!(?peer, left_out, agent_id = %id, hostname = ?hostname,
                        enrolled_hostname = ?enrolled_as,
                        "enrollment refused: this agent id is already enrolled (an attempt to take over its identity, or an agent that lost its secret: `kestrel ctl approve ID` lets it enroll again)");
                }
                return Err(Status::already_exists(
                    "this agent id is already enrolled: an admin must approve its re-enrollment (kestrel ctl approve ID)",
                ));
            }
            Enrolled::New => {
                tracing::info!(?peer, agent_id = %id, hostname = ?hostname,
                    token = if host_token { "per-host" } else { "fleet" }, "agent enrolled");
            }
            Enrolled::Reenrolled => {
                tracing::warn!(?peer, agent_id = %id, hostname = ?hostname,
                    "agent enrolled again, as an admin approved: its old secret no longer works");
            }
        }
        self.fleet.enrolled(id, &hostname, &hash);
        if let Some(c) = conn {
            c.authenticated();
        }
        Ok(Response::new(EnrollResponse { secret }))
    }

    type SessionStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let conn = conn(&req);
        let peer = conn.as_ref().map(|c| c.peer);
        let (Some(id), Some(secret)) = (
            meta(&req, kestrel_control::AGENT_ID_HEADER),
            meta(&req, kestrel_control::SECRET_HEADER),
        ) else {
            return Err(Status::unauthenticated("agent id and secret required"));
        };
        if !kestrel_control::valid_id(id) {
            if let Some(left_out) = self.refusals.allow("stream-bad-id") {
                tracing::warn!(?peer, left_out, agent_id = ?id, "stream refused: bad agent id");
            }
            return Err(Status::unauthenticated("unknown agent: enroll first"));
        }
        let id = id.to_string();
        match self.fleet.auth(&id) {
            None => {
                if let Some(left_out) = self.refusals.allow("stream-unknown") {
                    tracing::warn!(?peer, left_out, agent_id = %id, "stream refused: unknown agent");
                }
                return Err(Status::unauthenticated("unknown agent: enroll first"));
            }
            Some((_, true)) => {
                if let Some(left_out) = self.refusals.allow("stream-revoked") {
                    tracing::warn!(?peer, left_out, agent_id = %id, "stream refused: agent revoked");
                }
                return Err(Status::permission_denied("this agent was revoked"));
            }
            Some((hash, false)) if hash != kestrel_control::sha256_hex(secret) => {
                if let Some(left_out) = self.refusals.allow("stream-bad-secret") {
                    tracing::warn!(?peer, left_out, agent_id = %id, "stream refused: bad secret");
                }
                return Err(Status::unauthenticated("bad agent secret"));
            }
            Some(_) => {}
        }
        if let Some(c) = conn {
            c.authenticated();
        }
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (n, wake) = self.fleet.open_session(&id, tx);
        tracing::info!(agent_id = %id, "agent connected");
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            // Commands queued while the agent was away, and those sent on
            // an earlier stream without a result.
            let mut backlog = !send_undone(&fleet, &id, n, false).await;
            loop {
                let msg = tokio::select! {
                    _ = wake.notified() => None,
                    // A full queue with a silent agent: try again soon.
                    _ = tokio::time::sleep(BACKLOG_RETRY), if backlog => None,
                    m = inbound.next() => match m {
                        Some(Ok(m)) => Some(m),
                        None => break,
                        Some(Err(e)) => {
                            tracing::debug!(agent_id = %id, error = %e, "agent stream error");
                            break;
                        }
                    },
                };
                if let Some(msg) = msg {
                    // A revoked agent's heartbeats end its stream.
                    let accepted = match msg.msg {
                        Some(agent_message::Msg::Heartbeat(hb)) => fleet.heartbeat(&id, hb),
                        Some(agent_message::Msg::Result(r)) => {
                            let store = fleet.store.clone();
                            let who = id.clone();
                            let now = now_ms();
                            match tokio::task::spawn_blocking(move || {
                                store.finish(&r.id, &who, r.ok, &r.message, now)
                            })
                            .await
                            {
                                Ok(Ok(true)) => {}
                                Ok(Ok(false)) => {
                                    tracing::warn!(agent_id = %id, "result for an unknown command")
                                }
                                Ok(Err(e)) => {
                                    tracing::error!(error = %e, "command result not saved")
                                }
                                Err(e) => tracing::error!(error = %e, "command result not saved"),
                            }
                            true
                        }
                        None => true,
                    };
                    if !accepted {
                        break;
                    }
                    // The agent drains its queue as it reads: a message
                    // from it is the moment to send what did not fit.
                    if !backlog {
                        continue;
                    }
                }
                backlog = !send_undone(&fleet, &id, n, true).await;
            }
            fleet.close_session(&id, n);
            tracing::info!(agent_id = %id, "agent disconnected");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// How soon a session retries commands that found its queue full when the
/// agent sends nothing in between.
const BACKLOG_RETRY: Duration = Duration::from_secs(1);

/// Sends `id`'s unfinished commands on session `n`, oldest first, and
/// marks them sent. `pending_only` leaves out those already sent. False
/// when the queue filled up and some are still pending.
async fn send_undone(fleet: &Arc<Fleet>, id: &str, n: u64, pending_only: bool) -> bool {
    let Some(tx) = fleet.session_tx(id, n) else {
        return true;
    };
    let store = fleet.store.clone();
    let who = id.to_string();
    let undone = match tokio::task::spawn_blocking(move || store.undone(&who)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::error!(agent_id = %id, error = %e, "cannot read the agent's commands; retrying");
            return false;
        }
        Err(e) => {
            tracing::error!(agent_id = %id, error = %e, "cannot read the agent's commands; retrying");
            return false;
        }
    };
    let mut sent = Vec::new();
    let mut fit = true;
    for c in undone {
        if pending_only && c.status != "pending" {
            continue;
        }
        let msg = ServerMessage {
            msg: Some(server_message::Msg::Command(Command {
                id: c.id.clone(),
                kind: c.kind,
                arg: c.arg,
            })),
        };
        match tx.try_send(Ok(msg)) {
            Ok(()) => sent.push(c.id),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(agent_id = %id, sent = sent.len(),
                    "agent's command queue is full: the rest follow as it drains");
                fit = false;
                break;
            }
            // The stream is gone: its next one gets them.
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    if !sent.is_empty() {
        let store = fleet.store.clone();
        match tokio::task::spawn_blocking(move || store.mark_sent(&sent, now_ms())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(agent_id = %id, error = %e, "commands not marked sent"),
            Err(e) => tracing::error!(agent_id = %id, error = %e, "commands not marked sent"),
        }
    }
    fit
}
