//! Kestrel's control protocol: the messages agents and the server exchange
//! (generated from `proto/kestrel_control.proto`), the agent's stable
//! identity, and the agent-side client that keeps one TLS gRPC stream open
//! to the server.
//!
//! Security model: the server authenticates itself with a certificate
//! signed by its own CA (the agent is given `ca.pem`); an agent proves who
//! it is with a per-agent secret it received once, at enrollment, in
//! exchange for the fleet's enrollment token. The secret travels only
//! inside TLS, in the metadata of every stream.

pub mod client;

use std::io::Write;
use std::path::Path;

/// Generated protobuf messages and gRPC stubs.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("kestrel.control.v1");
}

/// gRPC metadata key carrying the agent id on every stream.
pub const AGENT_ID_HEADER: &str = "x-kestrel-agent-id";
/// gRPC metadata key carrying the agent's secret on every stream.
pub const SECRET_HEADER: &str = "x-kestrel-secret";
/// File name of the agent id under the agent's state directory.
pub const AGENT_ID_FILE: &str = "agent-id";
/// File name of the per-agent secret under the agent's state directory.
pub const SECRET_FILE: &str = "control.secret";

/// `n` random bytes from the system's CSPRNG, in lower-case hex.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4 UUID string.
pub fn new_uuid() -> String {
    let h = random_hex(16);
    let mut b: Vec<char> = h.chars().collect();
    b[12] = '4';
    b[16] = ['8', '9', 'a', 'b'][usize::from_str_radix(&h[16..17], 16).unwrap_or(0) % 4];
    let s: String = b.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// SHA-256 of `s`, in hex: how the server stores secrets and tokens.
pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The agent's stable id: read from `STATE_DIR/agent-id`, created there
/// once (a random UUID) when missing. Other parts of the agent (outputs
/// naming their source) use the same file.
pub fn agent_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(AGENT_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if valid_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not an agent id: {:?}", path.display(), s.trim()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state_dir)?;
    let id = new_uuid();
    write_private(&path, &id)?;
    Ok(id)
}

/// Whether `s` can be an agent id: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Writes `text` to `path` readable by its owner only, atomically (a
/// temporary file renamed over it).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("kserver-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = agent_id(&dir).unwrap();
        assert!(valid_id(&a) && a.len() == 36, "{a}");
        assert_eq!(agent_id(&dir).unwrap(), a);
        std::fs::write(dir.join(AGENT_ID_FILE), "bad id!\n").unwrap();
        assert!(agent_id(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uuids_differ_and_have_the_v4_shape() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "4");
        assert_eq!(a.matches('-').count(), 4);
    }
}
