//! Directories under which file creations are not reported, kept in the
//! kernel's `file_excludes` map.

use std::path::Path;

use libbpf_rs::{MapCore, MapFlags};

use crate::Probes;

/// Directories the kernel's exclusion map holds, at most.
pub const FILE_EXCLUDES_MAX: usize = kestrel_abi::KESTREL_FILE_EXCLUDES_MAX as usize;

/// A directory as the kernel's file_excludes map keys it: its device (in
/// the kernel's encoding) and inode number. It names what the directory
/// is, not where: a directory removed and created again, or covered by a
/// mount, has another key under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirKey([u8; 16]);

impl DirKey {
    /// The key of the directory `dir` names now (symbolic links followed,
    /// as the kernel's walk up from a new file sees real directories).
    pub fn of(dir: &Path) -> std::io::Result<DirKey> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir)?;
        if !m.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        // The kernel's dev_t is major << 20 | minor; stat's is glibc's.
        let (major, minor) = (libc::major(m.dev()) as u64, libc::minor(m.dev()) as u64);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&((major << 20) | minor).to_ne_bytes());
        key[8..].copy_from_slice(&m.ino().to_ne_bytes());
        Ok(DirKey(key))
    }
}

impl Probes {
    /// Stops reporting files created under the directory `key` names (and
    /// below it). The check runs in the kernel, so excluded creations cost
    /// no ring buffer space.
    pub fn exclude_dir(&self, key: &DirKey) -> std::io::Result<()> {
        self.skel
            .maps
            .file_excludes
            .update(&key.0, &[1u8], MapFlags::ANY)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Reports files created under that directory again, undoing
    /// [`Probes::exclude_dir`].
    pub fn include_dir(&self, key: &DirKey) -> std::io::Result<()> {
        match self.skel.maps.file_excludes.delete(&key.0) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}
