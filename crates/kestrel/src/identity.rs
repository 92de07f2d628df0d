//! Who this agent is, across restarts: `STATE_DIR/agent-id` (generated
//! once by `kestrel_control::agent_id`, shared with the control server) and
//! `STATE_DIR/run` (a counter bumped at every start). Every event gets
//! `event_id = AGENT_ID-RUN-SEQ`, SEQ counting from 0 in each run, so an id
//! never repeats even though the sequence itself is not persisted.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

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
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the state directory 0700 (or takes an existing one to 0700),
/// walked as the output files are (no directory or link of another user on
/// the way), and narrows the files an older agent left in it to 0600: they
/// hold the agent's secret, read positions and spool.
pub fn secure_state_dir(state_dir: &Path) -> Result<()> {
    let dir = kestrel_sinks::safe::open_dir(state_dir, Some(0o700)).with_context(|| {
        format!(
            "cannot create the state directory {} (state_dir)",
            state_dir.display()
        )
    })?;
    dir.chmod(0o700)
        .and_then(|()| dir.narrow_files(0o600))
        .with_context(|| {
            format!(
                "cannot restrict the state directory {} to root (state_dir)",
                state_dir.display()
            )
        })
}

/// Reads (or creates) the agent id and bumps the run counter.
pub fn load(state_dir: &Path) -> Result<Identity> {
    secure_state_dir(state_dir)?;
    // One generator for the id the control server and Kafka both use.
    let agent_id = kestrel_control::agent_id(state_dir).with_context(|| {
        format!(
            "cannot read or create the agent id in {}; delete a damaged agent-id file to get a new one",
            state_dir.display()
        )
    })?;
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
