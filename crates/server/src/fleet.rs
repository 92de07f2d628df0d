//! The fleet in memory: every agent's last heartbeat and live session. The
//! database is written behind it (heartbeats in one transaction a second),
//! so thousands of agents heartbeating cost one write a second, not one
//! each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kestrel_control::pb::{Heartbeat, ServerMessage};
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::store::Store;

/// Outbound half of an agent's stream.
pub type SessionTx = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Live {
    hostname: String,
    secret_sha256: String,
    revoked: bool,
    last_heartbeat: Option<i64>,
    heartbeat: Option<Heartbeat>,
    /// The open stream: its number, its sender, and what wakes its task
    /// when the agent has new commands (the task alone sends them, so no
    /// command goes out twice on one stream).
    session: Option<(u64, SessionTx, Arc<Notify>)>,
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// Agent id.
    pub id: String,
    /// Host name (from the last heartbeat, else from enrollment).
    pub hostname: String,
    /// online, offline or revoked.
    pub state: &'static str,
    /// Whether a stream is open now.
    pub connected: bool,
    /// Time of the last heartbeat, ms since the epoch (null: never).
    pub last_heartbeat: Option<i64>,
    /// Seconds since the last heartbeat.
    pub last_heartbeat_age_secs: Option<f64>,
    /// Agent version.
    pub version: String,
    /// OS name.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// Addresses.
    pub ips: Vec<String>,
    /// Events written per second.
    pub events_per_sec: f64,
    /// Kernel drops plus write errors.
    pub drops: u64,
    /// Spooled bytes.
    pub spool_bytes: u64,
    /// Agent CPU, percent of one core.
    pub cpu_percent: f64,
    /// Agent RSS in bytes.
    pub rss_bytes: u64,
    /// Agent uptime.
    pub uptime_secs: u64,
    /// Probes attached.
    pub probes_active: Vec<String>,
    /// Probes not attached, with the reason.
    pub probes_inactive: Vec<String>,
    /// The agent's last error.
    pub last_error: String,
}

/// Counts of agents by state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Every enrolled agent.
    pub total: u64,
    /// Heartbeat within the offline timeout.
    pub online: u64,
    /// No heartbeat within the offline timeout.
    pub offline: u64,
    /// Refused.
    pub revoked: u64,
    /// Streams open now.
    pub connected: u64,
}

/// The fleet.
pub struct Fleet {
    agents: RwLock<HashMap<String, Live>>,
    dirty: Mutex<Vec<(String, i64, String)>>,
    next_session: AtomicU64,
    /// Agents with no heartbeat for this long are offline.
    pub offline_after: Duration,
    /// The database.
    pub store: Arc<Store>,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Heartbeats dropped because the write-behind buffer was full.
    pub heartbeats_unsaved: AtomicU64,
}

/// Most heartbeats held for the next database write; past this they are
/// counted in `heartbeats_unsaved` and only the live view keeps them.
const MAX_DIRTY: usize = 100_000;

impl Fleet {
    /// The fleet as stored.
    pub fn load(
        store: Arc<Store>,
        offline_after: Duration,
    ) -> Result<Fleet, crate::store::StoreError> {
        let mut agents = HashMap::new();
        for a in store.agents()? {
            let heartbeat = a
                .last_heartbeat_json
                .as_deref()
                .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                .map(|v| crate::json::heartbeat_from_json(&v));
            agents.insert(
                a.id,
                Live {
                    hostname: a.hostname,
                    secret_sha256: a.secret_sha256,
                    revoked: a.revoked,
                    last_heartbeat: a.last_heartbeat,
                    heartbeat,
                    session: None,
                },
            );
        }
        Ok(Fleet {
            agents: RwLock::new(agents),
            dirty: Mutex::new(Vec::new()),
            next_session: AtomicU64::new(1),
            offline_after,
            store,
            heartbeats: AtomicU64::new(0),
            heartbeats_unsaved: AtomicU64::new(0),
        })
    }

    /// Secret hash and revocation of an agent.
    pub fn auth(&self, id: &str) -> Option<(String, bool)> {
        self.agents
            .read()
            .unwrap()
            .get(id)
            .map(|a| (a.secret_sha256.clone(), a.revoked))
    }

    /// Records an enrollment. A stream open with the old secret (an id
    /// enrolled again) is cut.
    pub fn enrolled(&self, id: &str, hostname: &str, secret_sha256: &str) {
        let session = {
            let mut m = self.agents.write().unwrap();
            let e = m.entry(id.to_string()).or_insert_with(|| Live {
                hostname: hostname.to_string(),
                secret_sha256: String::new(),
                revoked: false,
                last_heartbeat: None,
                heartbeat: None,
                session: None,
            });
            e.hostname = hostname.to_string();
            e.secret_sha256 = secret_sha256.to_string();
            e.session.take()
        };
        if let Some((_, tx, _)) = session {
            let _ = tx.try_send(Err(tonic::Status::unauthenticated(
                "this agent id was enrolled again",
            )));
        }
    }

    /// Registers a new stream for `id`, replacing (and so closing) any
    /// older one. Returns the session number and what wakes its task
    /// (see `wake`).
    pub fn open_session(&self, id: &str, tx: SessionTx) -> (u64, Arc<Notify>) {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        if let Some(a) = self.agents.write().unwrap().get_mut(id) {
            a.session = Some((n, tx, wake.clone()));
        }
        (n, wake)
    }

    /// Forgets session `n` of `id` if it is still the current one.
    pub fn close_session(&self, id: &str, n: u64) {
        if let Some(a) = self.agents.write().unwrap().get_mut(id) {
            if a.session.as_ref().is_some_and(|s| s.0 == n) {
                a.session = None;
            }
        }
    }

    /// Records a heartbeat; false when the agent is revoked or unknown.
    pub fn heartbeat(&self, id: &str, hb: Heartbeat) -> bool {
        let now = now_ms();
        let json = crate::json::heartbeat_json(&hb).to_string();
        {
            let mut m = self.agents.write().unwrap();
            let Some(a) = m.get_mut(id) else { return false };
            if a.revoked {
                return false;
            }
            a.last_heartbeat = Some(now);
            a.heartbeat = Some(hb);
        }
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        let mut d = self.dirty.lock().unwrap();
        if d.len() < MAX_DIRTY {
            d.push((id.to_string(), now, json));
        } else {
            self.heartbeats_unsaved.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Writes buffered heartbeats to the database.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.dirty.lock().unwrap());
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_heartbeats(&batch) {
            self.heartbeats_unsaved
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(error = %e, heartbeats = batch.len(), "saving heartbeats failed (counted in heartbeats_unsaved)");
        }
    }

    /// Revokes an agent and cuts its stream. False when unknown.
    pub fn revoke(&self, id: &str) -> bool {
        let session = {
            let mut m = self.agents.write().unwrap();
            let Some(a) = m.get_mut(id) else { return false };
            a.revoked = true;
            a.session.take()
        };
        if let Some((_, tx, _)) = session {
            let _ = tx.try_send(Err(tonic::Status::permission_denied(
                "this agent was revoked",
            )));
        }
        true
    }

    /// Tells the session tasks of these agents that they have new
    /// commands. An agent without a stream gets them when it connects.
    pub fn wake<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let m = self.agents.read().unwrap();
        for id in ids {
            if let Some((_, _, wake)) = m.get(id).and_then(|a| a.session.as_ref()) {
                // A permit is kept if the task is busy: no wakeup is lost.
                wake.notify_one();
            }
        }
    }

    /// The sender of session `n` of `id`, if it is still the current one.
    pub fn session_tx(&self, id: &str, n: u64) -> Option<SessionTx> {
        let m = self.agents.read().unwrap();
        let (cur, tx, _) = m.get(id)?.session.as_ref()?;
        (*cur == n).then(|| tx.clone())
    }

    /// Ids of every agent not revoked.
    pub fn ids(&self) -> Vec<String> {
        self.agents
            .read()
            .unwrap()
            .iter()
            .filter(|(_, a)| !a.revoked)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn view_of(&self, id: &str, a: &Live, now: i64) -> AgentView {
        let age = a.last_heartbeat.map(|t| (now - t).max(0) as f64 / 1000.0);
        let state = if a.revoked {
            "revoked"
        } else if age.is_some_and(|s| s <= self.offline_after.as_secs_f64()) {
            "online"
        } else {
            "offline"
        };
        let hb = a.heartbeat.clone().unwrap_or_default();
        AgentView {
            id: id.to_string(),
            hostname: if hb.hostname.is_empty() {
                a.hostname.clone()
            } else {
                hb.hostname.clone()
            },
            state,
            connected: a.session.is_some(),
            last_heartbeat: a.last_heartbeat,
            last_heartbeat_age_secs: age,
            version: hb.version,
            os: hb.os,
            kernel: hb.kernel,
            ips: hb.ips,
            events_per_sec: hb.events_per_sec,
            drops: hb.drops,
            spool_bytes: hb.spool_bytes,
            cpu_percent: hb.cpu_percent,
            rss_bytes: hb.rss_bytes,
            uptime_secs: hb.uptime_secs,
            probes_active: hb
                .probes
                .iter()
                .filter(|p| p.state == "attached")
                .map(|p| p.program.clone())
                .collect(),
            probes_inactive: hb
                .probes
                .iter()
                .filter(|p| p.state != "attached")
                .map(|p| format!("{} ({}: {})", p.program, p.state, p.reason))
                .collect(),
            last_error: hb.last_error,
        }
    }

    /// Every agent, sorted by host name then id.
    pub fn list(&self) -> Vec<AgentView> {
        let now = now_ms();
        let m = self.agents.read().unwrap();
        let mut v: Vec<AgentView> = m.iter().map(|(id, a)| self.view_of(id, a, now)).collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        v
    }

    /// One agent, with its full last heartbeat.
    pub fn get(&self, id: &str) -> Option<(AgentView, Option<Heartbeat>)> {
        let m = self.agents.read().unwrap();
        m.get(id)
            .map(|a| (self.view_of(id, a, now_ms()), a.heartbeat.clone()))
    }

    /// Counts by state.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for a in self.list() {
            s.total += 1;
            match a.state {
                "online" => s.online += 1,
                "revoked" => s.revoked += 1,
                _ => s.offline += 1,
            }
            s.connected += a.connected as u64;
        }
        s
    }
}
