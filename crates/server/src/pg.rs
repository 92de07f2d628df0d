//! PostgreSQL storage, for operators who run the server with a replicated
//! database (`--db postgres://USER@HOST:PORT/DB`). Same tables and
//! semantics as SQLite; migrations counted in `kestrel_schema`.

use std::sync::Mutex;

use postgres::{Client, NoTls, Row};

use crate::store::{
    count_status, token_unusable, AgentRow, BatchCounts, CommandRow, Credential, Enrolled, Storage,
    StoreError, TokenRow, CMD_COLS,
};

/// Schema migrations, in order. Never edit one that shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: agents, heartbeats, commands.
    "CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        enrolled_at BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        last_heartbeat BIGINT,
        last_heartbeat_json TEXT
     );
     CREATE TABLE heartbeats (
        seq BIGSERIAL PRIMARY KEY,
        agent_id TEXT NOT NULL,
        at BIGINT NOT NULL,
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
        created_at BIGINT NOT NULL,
        sent_at BIGINT,
        done_at BIGINT
     );
     CREATE INDEX commands_agent ON commands (agent_id, status);
     CREATE INDEX commands_batch ON commands (batch);",
    // 2: re-enrollment approvals, per-host enrollment tokens.
    "ALTER TABLE agents ADD COLUMN reenroll_until BIGINT;
     CREATE TABLE enroll_tokens (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        used_by TEXT,
        used_at BIGINT
     );",
];

fn cmd_row(r: &Row) -> CommandRow {
    CommandRow {
        id: r.get(0),
        agent_id: r.get(1),
        batch: r.get(2),
        kind: r.get(3),
        arg: r.get(4),
        status: r.get(5),
        result: r.get(6),
        created_at: r.get(7),
        sent_at: r.get(8),
        done_at: r.get(9),
    }
}

/// A PostgreSQL database.
pub struct PgStore {
    /// `None` only while dropping.
    client: Mutex<Option<Client>>,
    history: i64,
}

/// The locked client.
struct Conn<'a>(std::sync::MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("client present until drop")
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The blocking client closes its connection with its own runtime,
        // which must not run inside the server's: close it on a plain
        // thread.
        if let Some(c) = self.client.get_mut().ok().and_then(Option::take) {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

impl PgStore {
    /// Connects to `url` and migrates the schema; keeps `history`
    /// heartbeats per agent.
    pub fn open(url: &str, history: u32) -> Result<PgStore, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS kestrel_schema (version INTEGER NOT NULL)",
        )?;
        let mut tx = client.transaction()?;
        // One server migrates at a time.
        tx.batch_execute("LOCK TABLE kestrel_schema IN EXCLUSIVE MODE")?;
        let v: i32 = tx
            .query_opt("SELECT version FROM kestrel_schema", &[])?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if v as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew(v as i64, MIGRATIONS.len()));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            tx.batch_execute(sql)?;
            tracing::info!(version = i + 1, "database migrated");
        }
        tx.execute("DELETE FROM kestrel_schema", &[])?;
        tx.execute(
            "INSERT INTO kestrel_schema (version) VALUES ($1)",
            &[&(MIGRATIONS.len().max(v as usize) as i32)],
        )?;
        tx.commit()?;
        Ok(PgStore {
            client: Mutex::new(Some(client)),
            history: history.max(1) as i64,
        })
    }
}

impl PgStore {
    fn conn(&self) -> Conn<'_> {
        Conn(self.client.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Storage for PgStore {
    fn enroll(
        &self,
        id: &str,
        hostname: &str,
        secret_sha256: &str,
        cred: Credential<'_>,
        now: i64,
    ) -> Result<Enrolled, StoreError> {
        let mut c = self.conn();
        let mut tx = c.transaction()?;
        // Row locks: a token or an id is decided by one enrollment at a
        // time, even with two servers on the database.
        if let Credential::Host(sha) = cred {
            let t = tx.query_opt(
                "SELECT revoked, used_by, expires_at FROM enroll_tokens WHERE token_sha256 = $1 FOR UPDATE",
                &[&sha],
            )?;
            match t {
                Some(r) if !token_unusable(r.get(0), &r.get(1), r.get(2), now) => {}
                _ => return Ok(Enrolled::BadToken),
            }
        }
        let known = tx.query_opt(
            "SELECT hostname, revoked, reenroll_until FROM agents WHERE id = $1 FOR UPDATE",
            &[&id],
        )?;
        let out = match known {
            None => {
                let n = tx.execute(
                    "INSERT INTO agents (id, hostname, secret_sha256, enrolled_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO NOTHING",
                    &[&id, &hostname, &secret_sha256, &now],
                )?;
                if n == 0 {
                    // Enrolled by another server in between.
                    return Ok(Enrolled::Taken(String::new()));
                }
                Enrolled::New
            }
            Some(r) if r.get::<_, bool>(1) => return Ok(Enrolled::Revoked),
            Some(r) if r.get::<_, Option<i64>>(2).is_some_and(|u| u > now) => {
                tx.execute(
                    "UPDATE agents SET hostname = $2, secret_sha256 = $3, enrolled_at = $4, reenroll_until = NULL WHERE id = $1",
                    &[&id, &hostname, &secret_sha256, &now],
                )?;
                Enrolled::Reenrolled
            }
            Some(r) => return Ok(Enrolled::Taken(r.get(0))),
        };
        if let Credential::Host(sha) = cred {
            tx.execute(
                "UPDATE enroll_tokens SET used_by = $2, used_at = $3 WHERE token_sha256 = $1",
                &[&sha, &id, &now],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    fn approve_reenroll(&self, id: &str, until: i64) -> Result<Option<bool>, StoreError> {
        let mut c = self.conn();
        let r = c.query_opt("SELECT revoked FROM agents WHERE id = $1", &[&id])?;
        match r {
            None => Ok(None),
            Some(r) if r.get::<_, bool>(0) => Ok(Some(false)),
            Some(_) => {
                c.execute(
                    "UPDATE agents SET reenroll_until = $2 WHERE id = $1",
                    &[&id, &until],
                )?;
                Ok(Some(true))
            }
        }
    }

    fn add_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO enroll_tokens (id, host, token_sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&t.id, &t.host, &t.token_sha256, &t.created_at, &t.expires_at],
        )?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self.conn().query(
            "SELECT id, host, token_sha256, created_at, expires_at, revoked, used_by, used_at
             FROM enroll_tokens ORDER BY created_at DESC",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| TokenRow {
                id: r.get(0),
                host: r.get(1),
                token_sha256: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
                revoked: r.get(5),
                used_by: r.get(6),
                used_at: r.get(7),
            })
            .collect())
    }

    fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE enroll_tokens SET revoked = TRUE WHERE id = $1",
            &[&id],
        )?;
        Ok(n > 0)
    }

    fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("UPDATE agents SET revoked = TRUE WHERE id = $1", &[&id])?;
        Ok(n > 0)
    }

    fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let rows = self.conn().query(
            "SELECT id, hostname, secret_sha256, enrolled_at, revoked, last_heartbeat, last_heartbeat_json FROM agents",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| AgentRow {
                id: r.get(0),
                hostname: r.get(1),
                secret_sha256: r.get(2),
                enrolled_at: r.get(3),
                revoked: r.get(4),
                last_heartbeat: r.get(5),
                last_heartbeat_json: r.get(6),
            })
            .collect())
    }

    fn save_heartbeats(&self, hbs: &[(String, i64, String)]) -> Result<(), StoreError> {
        let mut c = self.conn();
        let mut tx = c.transaction()?;
        let ins = tx.prepare("INSERT INTO heartbeats (agent_id, at, json) VALUES ($1, $2, $3)")?;
        let upd = tx.prepare(
            "UPDATE agents SET last_heartbeat = $2, last_heartbeat_json = $3 WHERE id = $1",
        )?;
        let trim = tx.prepare(
            "DELETE FROM heartbeats WHERE agent_id = $1 AND seq <= (
                SELECT seq FROM heartbeats WHERE agent_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
        )?;
        for (id, at, json) in hbs {
            tx.execute(&ins, &[id, at, json])?;
            tx.execute(&upd, &[id, at, json])?;
            tx.execute(&trim, &[id, &self.history])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn heartbeats(&self, id: &str, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self.conn().query(
            "SELECT at, json FROM heartbeats WHERE agent_id = $1 ORDER BY seq DESC LIMIT $2",
            &[&id, &(limit as i64)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn add_commands(&self, cmds: &[CommandRow]) -> Result<(), StoreError> {
        let mut c = self.conn();
        let mut tx = c.transaction()?;
        let st = tx.prepare(&format!(
            "INSERT INTO commands ({CMD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))?;
        for m in cmds {
            tx.execute(
                &st,
                &[
                    &m.id,
                    &m.agent_id,
                    &m.batch,
                    &m.kind,
                    &m.arg,
                    &m.status,
                    &m.result,
                    &m.created_at,
                    &m.sent_at,
                    &m.done_at,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn mark_sent(&self, ids: &[String], now: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE commands SET status = 'sent', sent_at = $2 WHERE id = ANY($1) AND status = 'pending'",
            &[&ids, &now],
        )?;
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
        let status = if ok { "ok" } else { "failed" };
        let n = self.conn().execute(
            "UPDATE commands SET status = $3, result = $4, done_at = $5 WHERE id = $1 AND agent_id = $2",
            &[&id, &agent, &status, &result, &now],
        )?;
        Ok(n > 0)
    }

    fn undone(&self, agent: &str) -> Result<Vec<CommandRow>, StoreError> {
        let rows = self.conn().query(
            &format!(
                "SELECT {CMD_COLS} FROM commands WHERE agent_id = $1 AND status IN ('pending', 'sent') ORDER BY created_at"
            ),
            &[&agent],
        )?;
        Ok(rows.iter().map(cmd_row).collect())
    }

    fn command(&self, id: &str) -> Result<Option<CommandRow>, StoreError> {
        let row = self.conn().query_opt(
            &format!("SELECT {CMD_COLS} FROM commands WHERE id = $1"),
            &[&id],
        )?;
        Ok(row.as_ref().map(cmd_row))
    }

    fn commands_of(&self, agent: &str, limit: u32) -> Result<Vec<CommandRow>, StoreError> {
        let rows = self.conn().query(
            &format!(
                "SELECT {CMD_COLS} FROM commands WHERE agent_id = $1 ORDER BY created_at DESC LIMIT $2"
            ),
            &[&agent, &(limit as i64)],
        )?;
        Ok(rows.iter().map(cmd_row).collect())
    }

    fn batch(&self, batch: &str) -> Result<BatchCounts, StoreError> {
        let rows = self.conn().query(
            "SELECT status, COUNT(*) FROM commands WHERE batch = $1 GROUP BY status",
            &[&batch],
        )?;
        let mut out = BatchCounts::default();
        for r in rows {
            let (s, n): (String, i64) = (r.get(0), r.get(1));
            count_status(&mut out, &s, n as u64);
        }
        Ok(out)
    }
}
