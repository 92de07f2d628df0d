//! Who this agent is, across restarts: `STATE_DIR/agent-id` (generated
//! once, 32 hex digits from the kernel's random source) and
//! `STATE_DIR/run` (a counter bumped at every start). Every event gets
//! `event_id = AGENT_ID-RUN-SEQ`, SEQ counting from 0 in each run, so an id
//! never repeats even though the sequence itself is not persisted.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The agent's identity for this run.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub run: u64,
}

/// Writes `text` to `path` through a temporary file, fsync and rename:
/// after a crash the file holds the old or the new text, never a mix.
fn replace(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads (or creates) the agent id and bumps the run counter.
pub fn load(state_dir: &Path) -> Result<Identity> {
    std::fs::create_dir_all(state_dir).with_context(|| {
        format!(
            "cannot create the state directory {} (state_dir)",
            state_dir.display()
        )
    })?;
    let id_path = state_dir.join("agent-id");
    let agent_id = match std::fs::read_to_string(&id_path) {
        Ok(s) => {
            let s = s.trim().to_string();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                bail!(
                    "{}: not an agent id ({s:?}); delete the file to get a new one",
                    id_path.display()
                );
            }
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 16];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut raw))
                .context("reading /dev/urandom")?;
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            replace(&id_path, &format!("{id}\n"))?;
            tracing::info!(agent_id = %id, file = %id_path.display(), "new agent id");
            id
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", id_path.display())),
    };
    let run_path = state_dir.join("run");
    let run = match std::fs::read_to_string(&run_path) {
        Ok(s) => {
            s.trim().parse::<u64>().with_context(|| {
                format!(
                    "{}: not a number; delete the file to start again",
                    run_path.display()
                )
            })? + 1
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", run_path.display())),
    };
    replace(&run_path, &format!("{run}\n"))?;
    Ok(Identity { agent_id, run })
}
