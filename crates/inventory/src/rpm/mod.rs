//! Installed rpm packages, read straight from the rpm database.
//!
//! librpm is deliberately not used: the collector must work on hosts whose
//! librpm is absent or of another version, and must never write to rpm's
//! database or wait on rpm's locks. The three on-disk formats rpm has used are
//! decoded here:
//!
//! * `rpmdb.sqlite` — SQLite (rpm ≥ 4.16; Fedora, RHEL 9, CBL-Mariner),
//!   read through SQLite itself, read-only.
//! * `Packages` — Berkeley DB hash (RHEL/CentOS ≤ 8, older SUSE), decoded
//!   by hand.
//! * `Packages.db` — rpm's own "ndb" format (SUSE since 15 SP3), decoded by
//!   hand.
//!
//! Each stores one rpm header blob per installed package, decoded by the
//! `header` module.
//!
//! Every package the database lists is returned, including the
//! `gpg-pubkey` pseudo-packages for imported signing keys, as `rpm -qa`
//! does.

use std::fs::File;
use std::path::Path;

use crate::{InventoryError, Package, Warning};

mod bdb;
mod header;
mod ndb;
mod source;
mod sqlite;

use source::{FileSource, ReadAt};

/// Database file names in order of preference when given a directory.
/// A directory migrated to a newer backend may keep the old file, so the
/// newest format wins.
const DB_FILES: [&str; 3] = ["rpmdb.sqlite", "Packages.db", "Packages"];

/// Reads every installed package from an rpm database.
///
/// `dir_or_file` is either the database directory (`/var/lib/rpm`,
/// `/usr/lib/sysimage/rpm`), in which case `rpmdb.sqlite`, `Packages.db`
/// and `Packages` are tried in that order, or one of those files, whose
/// format is then recognised from its content rather than its name.
///
/// Damaged records are skipped with a [`Warning`]; an error is returned
/// only when the database cannot be opened or recognised at all.
pub fn read_db(dir_or_file: &Path) -> Result<(Vec<Package>, Vec<Warning>), InventoryError> {
    let meta = std::fs::metadata(dir_or_file).map_err(|e| InventoryError::io(dir_or_file, e))?;
    if !meta.is_dir() {
        return read_file(dir_or_file);
    }
    for name in DB_FILES {
        let candidate = dir_or_file.join(name);
        if candidate.is_file() {
            return read_file(&candidate);
        }
    }
    Err(InventoryError::UnknownFormat {
        path: dir_or_file.to_path_buf(),
    })
}

/// The database formats, as recognised from a file's first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Sqlite,
    BerkeleyHash,
    Ndb,
}

fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"SQLite format 3\0") {
        Some(Format::Sqlite)
    } else if head.starts_with(ndb::MAGIC) {
        Some(Format::Ndb)
    } else if head.get(12..16).is_some_and(bdb::is_hash_magic) {
        Some(Format::BerkeleyHash)
    } else {
        None
    }
}

/// The hand-written decoders on bytes from memory (for the fuzz targets):
/// the database formats by content, and the bytes as one header blob.
pub(crate) fn read_bytes_for_fuzzing(data: &[u8]) -> usize {
    let path = Path::new("fuzz");
    let n = match detect(data.get(..16).unwrap_or(data)) {
        Some(Format::BerkeleyHash) => bdb::read(data, path).map_or(0, |(p, w)| p.len() + w.len()),
        Some(Format::Ndb) => ndb::read(data, path).map_or(0, |(p, w)| p.len() + w.len()),
        Some(Format::Sqlite) | None => 0,
    };
    n + usize::from(header::parse_header(data).is_ok())
}

fn read_file(path: &Path) -> Result<(Vec<Package>, Vec<Warning>), InventoryError> {
    let file = File::open(path).map_err(|e| InventoryError::io(path, e))?;
    let source = FileSource::new(file).map_err(|e| InventoryError::io(path, e))?;
    // Short files are still classified (as unknown) rather than failing
    // with an I/O error.
    let mut head = [0u8; 16];
    let head = &mut head[..usize::try_from(source.size()).map_or(16, |len| len.min(16))];
    source
        .read_exact_at(head, 0)
        .map_err(|e| InventoryError::io(path, e))?;
    let format = detect(head);
    tracing::debug!(path = %path.display(), ?format, "reading rpm database");
    match format {
        Some(Format::Sqlite) => {
            drop(source);
            sqlite::read(path)
        }
        Some(Format::BerkeleyHash) => bdb::read(&source, path),
        Some(Format::Ndb) => ndb::read(&source, path),
        None => Err(InventoryError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests;
