//! Storage: SQLite in the data directory by default, PostgreSQL by URL
//! (`--db postgres://...`) for operators who need HA. Agents (with the hash
//! of their secret, whether they are revoked, and until when an admin
//! allows their id to be enrolled again), per-host enrollment tokens (their
//! hash), a bounded history of heartbeats, and commands with their status
//! and result. Migrations are
//! numbered SQL scripts applied in order, the applied count kept in
//! `user_version` (SQLite) or the `kestrel_schema` table (PostgreSQL).
//!
//! Every method blocks: the server calls them from tokio's blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    /// The database was written by a newer server.
    #[error("database schema version {0} is newer than this server knows ({1})")]
    TooNew(i64, usize),
}

/// Schema migrations, in order. Never edit one that shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: agents, heartbeats, commands.
    "CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        last_heartbeat INTEGER,
        last_heartbeat_json TEXT
     );
     CREATE TABLE heartbeats (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        json TEXT NOT NULL
     );
     CREATE INDEX heartbeats_agent ON heartbeats (agent_id, seq);
     CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        batch TEXT,
        kind TEXT NOT NULL,
        arg TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        sent_at INTEGER,
        done_at INTEGER
     );
     CREATE INDEX commands_agent ON commands (agent_id, status);
     CREATE INDEX commands_batch ON commands (batch);",
    // 2: re-enrollment approvals, per-host enrollment tokens.
    "ALTER TABLE agents ADD COLUMN reenroll_until INTEGER;
     CREATE TABLE enroll_tokens (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked INTEGER NOT NULL DEFAULT 0,
        used_by TEXT,
        used_at INTEGER
     );",
];

/// What an enrollment presents besides the agent's id.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// The fleet-wide token (checked by the caller).
    Fleet,
    /// A per-host token, by its SHA-256: valid once, unless revoked or
    /// expired.
    Host(&'a str),
}

/// What became of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// A new agent.
    New,
    /// An enrolled id again, as an admin approved: its secret is replaced.
    Reenrolled,
    /// The id is enrolled and no admin approved enrolling it again: the
    /// request is refused, the secret kept. Carries the host name on record.
    Taken(String),
    /// The id was revoked.
    Revoked,
    /// The per-host token is unknown, revoked, expired or spent.
    BadToken,
}

/// A per-host enrollment token as stored (the token itself only as its
/// hash, never shown again after creation).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    /// Token id, to list and revoke it.
    pub id: String,
    /// The host it was made for (a label: the host name an agent reports
    /// proves nothing).
    pub host: String,
    /// SHA-256 of the token.
    #[serde(skip)]
    pub token_sha256: String,
    /// ms since the epoch.
    pub created_at: i64,
    /// Refused from then on (ms since the epoch); null: never.
    pub expires_at: Option<i64>,
    /// Refused once revoked.
    pub revoked: bool,
    /// The agent it enrolled: a token enrolls one agent.
    pub used_by: Option<String>,
    /// ms since the epoch.
    pub used_at: Option<i64>,
}

/// Whether a per-host token no longer enrolls.
pub(crate) fn token_unusable(
    revoked: bool,
    used_by: &Option<String>,
    expires_at: Option<i64>,
    now: i64,
) -> bool {
    revoked || used_by.is_some() || expires_at.is_some_and(|e| e <= now)
}

/// An agent as stored.
#[derive(Debug, Clone)]
pub struct AgentRow {
    /// Agent id.
    pub id: String,
    /// Host name given at enrollment.
    pub hostname: String,
    /// SHA-256 of its secret.
    pub secret_sha256: String,
    /// Enrollment time, ms since the epoch.
    pub enrolled_at: i64,
    /// Revoked agents are refused.
    pub revoked: bool,
    /// Last heartbeat time, ms since the epoch.
    pub last_heartbeat: Option<i64>,
    /// Last heartbeat, as JSON.
    pub last_heartbeat_json: Option<String>,
}

/// A command and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRow {
    /// Command id.
    pub id: String,
    /// Target agent.
    pub agent_id: String,
    /// Set when sent to many agents at once.
    pub batch: Option<String>,
    /// inventory, scan-rootkit, reload-rules, restart or config.
    pub kind: String,
    /// KEY=VALUE for config.
    pub arg: String,
    /// pending (not yet delivered), sent, ok or failed.
    pub status: String,
    /// The agent's answer.
    pub result: String,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub sent_at: Option<i64>,
    /// ms since the epoch.
    pub done_at: Option<i64>,
}

/// Counts of a batch of commands by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchCounts {
    /// Commands in the batch.
    pub total: u64,
    /// Not delivered yet.
    pub pending: u64,
    /// Delivered, no answer yet.
    pub sent: u64,
    /// Succeeded.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
}

/// What the server stores, whatever the database.
pub trait Storage: Send + Sync {
    /// Enrolls `id` with a new secret, in one transaction: a new id is
    /// recorded; an enrolled one only if an admin approved it (the approval
    /// is used up); a per-host token is spent by it.
    fn enroll(
        &self,
        id: &str,
        hostname: &str,
        secret_sha256: &str,
        cred: Credential<'_>,
        now: i64,
    ) -> Result<Enrolled, StoreError>;
    /// Lets the next enrollment of `id` before `until` (ms since the
    /// epoch) replace its secret. `None` when unknown, `Some(false)` when
    /// revoked.
    fn approve_reenroll(&self, id: &str, until: i64) -> Result<Option<bool>, StoreError>;
    /// Stores a new per-host token.
    fn add_token(&self, t: &TokenRow) -> Result<(), StoreError>;
    /// Every per-host token, newest first.
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    /// Revokes a per-host token; false when unknown.
    fn revoke_token(&self, id: &str) -> Result<bool, StoreError>;
    /// Marks an agent revoked; false when unknown.
    fn revoke(&self, id: &str) -> Result<bool, StoreError>;
    /// Every agent.
    fn agents(&self) -> Result<Vec<AgentRow>, StoreError>;
    /// Stores heartbeats (agent id, time, JSON) in one transaction and
    /// trims each agent's history to its bound.
    fn save_heartbeats(&self, hbs: &[(String, i64, String)]) -> Result<(), StoreError>;
    /// The agent's last `limit` heartbeats, newest first: (time, JSON).
    fn heartbeats(&self, id: &str, limit: u32) -> Result<Vec<(i64, String)>, StoreError>;
    /// Stores new commands.
    fn add_commands(&self, cmds: &[CommandRow]) -> Result<(), StoreError>;
    /// Marks commands delivered.
    fn mark_sent(&self, ids: &[String], now: i64) -> Result<(), StoreError>;
    /// Records an agent's answer; false when the command is unknown or
    /// not this agent's.
    fn finish(
        &self,
        id: &str,
        agent: &str,
        ok: bool,
        result: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Commands not yet answered by `agent`, oldest first.
    fn undone(&self, agent: &str) -> Result<Vec<CommandRow>, StoreError>;
    /// One command.
    fn command(&self, id: &str) -> Result<Option<CommandRow>, StoreError>;
    /// An agent's last `limit` commands, newest first.
    fn commands_of(&self, agent: &str, limit: u32) -> Result<Vec<CommandRow>, StoreError>;
    /// Counts of a batch's commands by status.
    fn batch(&self, batch: &str) -> Result<BatchCounts, StoreError>;
}

/// The store the server uses.
pub type Store = dyn Storage;

/// Opens `db`: a `postgres://` or `postgresql://` URL, else a SQLite file.
pub fn open(db: &str, history: u32) -> Result<Box<Store>, StoreError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Ok(Box::new(crate::pg::PgStore::open(db, history)?))
    } else {
        Ok(Box::new(SqliteStore::open(Path::new(db), history)?))
    }
}

/// Adds a status count to a batch.
pub(crate) fn count_status(out: &mut BatchCounts, status: &str, n: u64) {
    out.total += n;
    match status {
        "pending" => out.pending += n,
        "sent" => out.sent += n,
        "ok" => out.ok += n,
        _ => out.failed += n,
    }
}

/// The SQLite database.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    history: u32,
}

fn cmd_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        batch: r.get(2)?,
        kind: r.get(3)?,
        arg: r.get(4)?,
        status: r.get(5)?,
        result: r.get(6)?,
        created_at: r.get(7)?,
        sent_at: r.get(8)?,
        done_at: r.get(9)?,
    })
}

/// The commands table's columns in the order `CommandRow` is read and
/// written, for both databases.
pub(crate) const CMD_COLS: &str =
    "id, agent_id, batch, kind, arg, status, result, created_at, sent_at, done_at";

impl SqliteStore {
    /// Opens (creating) the database at `path` and migrates it; keeps
    /// `history` heartbeats per agent.
    pub fn open(path: &Path, history: u32) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers (the API) do not wait for the heartbeat writer;
        // NORMAL sync: a crash may lose the last second of heartbeats,
        // never corrupt the file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            history: history.max(1),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn.lock().unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if v as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew(v, MIGRATIONS.len()));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            let tx = c.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "database migrated");
        }
        Ok(())
    }
}

impl Storage for SqliteStore {
    fn enroll(
        &self,
        id: &str,
        hostname: &str,
        secret_sha256: &str,
        cred: Credential<'_>,
        now: i64,
    ) -> Result<Enrolled, StoreError> {
        let mut c = self.conn.lock().unwrap();
        // IMMEDIATE: the checks and the writes see the same rows.
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Credential::Host(sha) = cred {
            let t = tx
                .query_row(
                    "SELECT revoked, used_by, expires_at FROM enroll_tokens WHERE token_sha256 = ?1",
                    params![sha],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)? != 0,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .optional()?;
            match t {
                Some((rev, used, exp)) if !token_unusable(rev, &used, exp, now) => {}
                _ => return Ok(Enrolled::BadToken),
            }
        }
        let known = tx
            .query_row(
                "SELECT hostname, revoked, reenroll_until FROM agents WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? != 0,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        let out = match known {
            None => {
                tx.execute(
                    "INSERT INTO agents (id, hostname, secret_sha256, enrolled_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id, hostname, secret_sha256, now],
                )?;
                Enrolled::New
            }
            Some((_, true, _)) => return Ok(Enrolled::Revoked),
            Some((_, false, Some(until))) if until > now => {
                tx.execute(
                    "UPDATE agents SET hostname = ?2, secret_sha256 = ?3, enrolled_at = ?4, reenroll_until = NULL WHERE id = ?1",
                    params![id, hostname, secret_sha256, now],
                )?;
                Enrolled::Reenrolled
            }
            Some((host, false, _)) => return Ok(Enrolled::Taken(host)),
        };
        if let Credential::Host(sha) = cred {
            tx.execute(
                "UPDATE enroll_tokens SET used_by = ?2, used_at = ?3 WHERE token_sha256 = ?1",
                params![sha, id, now],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    fn approve_reenroll(&self, id: &str, until: i64) -> Result<Option<bool>, StoreError> {
        let c = self.conn.lock().unwrap();
        let revoked = c
            .query_row(
                "SELECT revoked FROM agents WHERE id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        match revoked {
            None => Ok(None),
            Some(r) if r != 0 => Ok(Some(false)),
            Some(_) => {
                c.execute(
                    "UPDATE agents SET reenroll_until = ?2 WHERE id = ?1",
                    params![id, until],
                )?;
                Ok(Some(true))
            }
        }
    }

    fn add_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        self.conn.lock().unwrap().execute(
            "INSERT INTO enroll_tokens (id, host, token_sha256, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.id, t.host, t.token_sha256, t.created_at, t.expires_at],
        )?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare(
            "SELECT id, host, token_sha256, created_at, expires_at, revoked, used_by, used_at
             FROM enroll_tokens ORDER BY created_at DESC",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                host: r.get(1)?,
                token_sha256: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                revoked: r.get::<_, i64>(5)? != 0,
                used_by: r.get(6)?,
                used_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn.lock().unwrap().execute(
            "UPDATE enroll_tokens SET revoked = 1 WHERE id = ?1",
            params![id],
        )?;
        Ok(n > 0)
    }

    fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .lock()
            .unwrap()
            .execute("UPDATE agents SET revoked = 1 WHERE id = ?1", params![id])?;
        Ok(n > 0)
    }

    fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare(
            "SELECT id, hostname, secret_sha256, enrolled_at, revoked, last_heartbeat, last_heartbeat_json FROM agents",
        )?;
        let rows = st.query_map([], |r| {
            Ok(AgentRow {
                id: r.get(0)?,
                hostname: r.get(1)?,
                secret_sha256: r.get(2)?,
                enrolled_at: r.get(3)?,
                revoked: r.get::<_, i64>(4)? != 0,
                last_heartbeat: r.get(5)?,
                last_heartbeat_json: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_heartbeats(&self, hbs: &[(String, i64, String)]) -> Result<(), StoreError> {
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO heartbeats (agent_id, at, json) VALUES (?1, ?2, ?3)",
            )?;
            let mut upd = tx.prepare_cached(
                "UPDATE agents SET last_heartbeat = ?2, last_heartbeat_json = ?3 WHERE id = ?1",
            )?;
            let mut trim = tx.prepare_cached(
                "DELETE FROM heartbeats WHERE agent_id = ?1 AND seq <= (
                    SELECT seq FROM heartbeats WHERE agent_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?;
            for (id, at, json) in hbs {
                ins.execute(params![id, at, json])?;
                upd.execute(params![id, at, json])?;
                trim.execute(params![id, self.history])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn heartbeats(&self, id: &str, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare(
            "SELECT at, json FROM heartbeats WHERE agent_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_commands(&self, cmds: &[CommandRow]) -> Result<(), StoreError> {
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO commands ({CMD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?;
            for m in cmds {
                st.execute(params![
                    m.id,
                    m.agent_id,
                    m.batch,
                    m.kind,
                    m.arg,
                    m.status,
                    m.result,
                    m.created_at,
                    m.sent_at,
                    m.done_at
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn mark_sent(&self, ids: &[String], now: i64) -> Result<(), StoreError> {
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE commands SET status = 'sent', sent_at = ?2 WHERE id = ?1 AND status = 'pending'",
            )?;
            for id in ids {
                st.execute(params![id, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn finish(
        &self,
        id: &str,
        agent: &str,
        ok: bool,
        result: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.lock().unwrap().execute(
            "UPDATE commands SET status = ?3, result = ?4, done_at = ?5 WHERE id = ?1 AND agent_id = ?2",
            params![id, agent, if ok { "ok" } else { "failed" }, result, now],
        )?;
        Ok(n > 0)
    }

    fn undone(&self, agent: &str) -> Result<Vec<CommandRow>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare(&format!(
            "SELECT {CMD_COLS} FROM commands WHERE agent_id = ?1 AND status IN ('pending', 'sent') ORDER BY created_at"
        ))?;
        let rows = st.query_map(params![agent], cmd_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn command(&self, id: &str) -> Result<Option<CommandRow>, StoreError> {
        let c = self.conn.lock().unwrap();
        Ok(c.query_row(
            &format!("SELECT {CMD_COLS} FROM commands WHERE id = ?1"),
            params![id],
            cmd_row,
        )
        .optional()?)
    }

    fn commands_of(&self, agent: &str, limit: u32) -> Result<Vec<CommandRow>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st = c.prepare(&format!(
            "SELECT {CMD_COLS} FROM commands WHERE agent_id = ?1 ORDER BY created_at DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![agent, limit], cmd_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn batch(&self, batch: &str) -> Result<BatchCounts, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut st =
            c.prepare("SELECT status, COUNT(*) FROM commands WHERE batch = ?1 GROUP BY status")?;
        let mut out = BatchCounts::default();
        let rows = st.query_map(params![batch], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (s, n) = row?;
            count_status(&mut out, &s, n as u64);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kserver-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("kestrel.db")
    }

    #[test]
    fn migrates_once_and_keeps_data() {
        let p = tmp("migrate");
        {
            let s = SqliteStore::open(&p, 3).unwrap();
            s.enroll("a1", "host1", "h", Credential::Fleet, 1).unwrap();
        }
        let s = SqliteStore::open(&p, 3).unwrap();
        let a = s.agents().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].hostname, "host1");
        assert!(!a[0].revoked);
        assert!(s.revoke("a1").unwrap());
        assert!(!s.revoke("nobody").unwrap());
        assert!(s.agents().unwrap()[0].revoked);
    }

    #[test]
    fn an_enrolled_id_needs_an_approval_to_enroll_again() {
        let s = SqliteStore::open(&tmp("reenroll"), 3).unwrap();
        assert_eq!(
            s.enroll("a1", "web", "s1", Credential::Fleet, 10).unwrap(),
            Enrolled::New
        );
        assert_eq!(
            s.enroll("a1", "evil", "s2", Credential::Fleet, 11).unwrap(),
            Enrolled::Taken("web".into())
        );
        assert_eq!(s.agents().unwrap()[0].secret_sha256, "s1");
        assert_eq!(s.approve_reenroll("nobody", 100).unwrap(), None);
        assert_eq!(s.approve_reenroll("a1", 100).unwrap(), Some(true));
        // Expired approvals do not count.
        assert_eq!(
            s.enroll("a1", "web", "s3", Credential::Fleet, 100).unwrap(),
            Enrolled::Taken("web".into())
        );
        s.approve_reenroll("a1", 200).unwrap();
        assert_eq!(
            s.enroll("a1", "web", "s3", Credential::Fleet, 150).unwrap(),
            Enrolled::Reenrolled
        );
        assert_eq!(s.agents().unwrap()[0].secret_sha256, "s3");
        // Used up.
        assert_eq!(
            s.enroll("a1", "web", "s4", Credential::Fleet, 160).unwrap(),
            Enrolled::Taken("web".into())
        );
        s.revoke("a1").unwrap();
        assert_eq!(s.approve_reenroll("a1", 1000).unwrap(), Some(false));
        assert_eq!(
            s.enroll("a1", "web", "s5", Credential::Fleet, 170).unwrap(),
            Enrolled::Revoked
        );
    }

    #[test]
    fn host_tokens_enroll_once_until_revoked_or_expired() {
        let s = SqliteStore::open(&tmp("tokens"), 3).unwrap();
        let tok = |id: &str, sha: &str, exp: Option<i64>| TokenRow {
            id: id.into(),
            host: "web".into(),
            token_sha256: sha.into(),
            created_at: 1,
            expires_at: exp,
            revoked: false,
            used_by: None,
            used_at: None,
        };
        s.add_token(&tok("t1", "h1", None)).unwrap();
        s.add_token(&tok("t2", "h2", Some(50))).unwrap();
        s.add_token(&tok("t3", "h3", None)).unwrap();
        let host = Credential::Host;
        assert_eq!(
            s.enroll("a1", "w", "x", host("nope"), 10).unwrap(),
            Enrolled::BadToken
        );
        assert_eq!(
            s.enroll("a1", "w", "x", host("h1"), 10).unwrap(),
            Enrolled::New
        );
        assert_eq!(
            s.enroll("a2", "w", "x", host("h1"), 11).unwrap(),
            Enrolled::BadToken,
            "spent"
        );
        assert_eq!(
            s.enroll("a2", "w", "x", host("h2"), 60).unwrap(),
            Enrolled::BadToken,
            "expired"
        );
        assert!(s.revoke_token("t3").unwrap());
        assert!(!s.revoke_token("t9").unwrap());
        assert_eq!(
            s.enroll("a2", "w", "x", host("h3"), 12).unwrap(),
            Enrolled::BadToken,
            "revoked"
        );
        // A refused takeover does not spend the token.
        s.add_token(&tok("t4", "h4", None)).unwrap();
        assert_eq!(
            s.enroll("a1", "w", "y", host("h4"), 13).unwrap(),
            Enrolled::Taken("w".into())
        );
        assert_eq!(
            s.enroll("a3", "w", "y", host("h4"), 14).unwrap(),
            Enrolled::New
        );
        let t = s.tokens().unwrap();
        let t1 = t.iter().find(|t| t.id == "t1").unwrap();
        assert_eq!(t1.used_by.as_deref(), Some("a1"));
        assert!(t.iter().find(|t| t.id == "t3").unwrap().revoked);
    }

    #[test]
    fn heartbeat_history_is_bounded() {
        let s = SqliteStore::open(&tmp("history"), 3).unwrap();
        s.enroll("a1", "h", "x", Credential::Fleet, 0).unwrap();
        for i in 0..10 {
            s.save_heartbeats(&[("a1".into(), i, format!("{{\"n\":{i}}}"))])
                .unwrap();
        }
        let h = s.heartbeats("a1", 100).unwrap();
        assert_eq!(h.iter().map(|x| x.0).collect::<Vec<_>>(), vec![9, 8, 7]);
        assert_eq!(s.agents().unwrap()[0].last_heartbeat, Some(9));
    }

    #[test]
    fn command_lifecycle_and_batches() {
        let s = SqliteStore::open(&tmp("commands"), 3).unwrap();
        let mk = |id: &str, agent: &str| CommandRow {
            id: id.into(),
            agent_id: agent.into(),
            batch: Some("b".into()),
            kind: "inventory".into(),
            arg: String::new(),
            status: "pending".into(),
            result: String::new(),
            created_at: 1,
            sent_at: None,
            done_at: None,
        };
        s.add_commands(&[mk("c1", "a1"), mk("c2", "a2")]).unwrap();
        assert_eq!(s.undone("a1").unwrap().len(), 1);
        s.mark_sent(&["c1".into()], 2).unwrap();
        assert_eq!(s.command("c1").unwrap().unwrap().status, "sent");
        assert!(
            !s.finish("c1", "a2", true, "x", 3).unwrap(),
            "another agent's command"
        );
        assert!(s.finish("c1", "a1", true, "42 items", 3).unwrap());
        assert!(s.undone("a1").unwrap().is_empty());
        let b = s.batch("b").unwrap();
        assert_eq!((b.total, b.ok, b.pending), (2, 1, 1));
    }
}
