//! Host inventory collectors.
//!
//! For now this crate lists installed packages from the two package managers
//! found on Linux servers:
//!
//! * [`dpkg`] reads `/var/lib/dpkg/status` (Debian, Ubuntu).
//! * [`rpm`] reads the rpm database in any of its three on-disk formats
//!   (SQLite, Berkeley DB hash, SUSE ndb) without linking librpm, so the
//!   collector works on hosts where librpm is missing or a different version.
//!
//! Both readers treat the files as untrusted input: damaged records become
//! [`Warning`]s and are skipped, and only failures that make the whole
//! database unreadable are returned as [`InventoryError`].

use std::path::PathBuf;

pub mod cron;
pub mod dpkg;
pub mod ports;
pub mod rpm;
pub mod users;

/// Entry points for the fuzz targets (`fuzz/`): the parsers of files a
/// user may write to (their crontab) or damage, on bytes from memory.
/// Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// A user's crontab, the system crontab format and an anacrontab.
    pub fn cron(text: &str) -> usize {
        crate::cron::parse_all_formats(text, Path::new("fuzz"))
    }

    /// An rpm database file (Berkeley DB hash or ndb; SQLite files are read
    /// by SQLite itself, from a path) and, separately, one header blob.
    pub fn rpm(data: &[u8]) -> usize {
        crate::rpm::read_bytes_for_fuzzing(data)
    }
}

/// One installed package, normalised across package managers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Package {
    /// Package name (`Package:` for dpkg, `NAME` for rpm).
    pub name: String,
    /// Upstream version, without epoch or release/revision.
    pub version: String,
    /// rpm `RELEASE`, or the Debian revision (empty for native packages).
    pub release: String,
    /// Epoch, if the package declares one.
    pub epoch: Option<u32>,
    /// Architecture (`amd64`, `x86_64`, `noarch`, ...); empty if unknown.
    pub arch: String,
    /// Installed size in bytes (dpkg only records KiB, so it is rounded).
    pub size: u64,
    /// rpm `VENDOR`, or the dpkg `Maintainer`; empty if unknown.
    pub vendor: String,
    /// Installation time in Unix seconds, when the database records it.
    pub install_time: Option<u64>,
    /// Which package manager reported the package.
    pub source: PackageSource,
}

/// The package manager a [`Package`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackageSource {
    /// Debian's dpkg (`/var/lib/dpkg/status`).
    Dpkg,
    /// rpm (`/var/lib/rpm` or `/usr/lib/sysimage/rpm`).
    Rpm,
}

/// A problem with part of the input that was skipped while the rest was
/// still collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file being read (empty when parsing an in-memory buffer).
    pub file: PathBuf,
    /// Where in the file: a 1-based line number for dpkg; for rpm the
    /// record number (SQLite `hnum`, ndb package index) or, for Berkeley DB,
    /// the page number.
    pub line_or_record: Option<u64>,
    /// Human-readable description.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(file: &std::path::Path, at: Option<u64>, message: impl Into<String>) -> Self {
        Warning {
            file: file.to_path_buf(),
            line_or_record: at,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line_or_record {
            Some(n) => write!(f, "{}:{}: {}", self.file.display(), n, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Failures that prevent reading a package database at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file or directory could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No known package database was found at the path.
    #[error("{}: not a recognised package database", path.display())]
    UnknownFormat {
        /// The path that was inspected.
        path: PathBuf,
    },
    /// The file is of a known format but too damaged (or too large) to read.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// SQLite refused to open or query the rpm database.
    #[error("{}: sqlite: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error reported by SQLite.
        #[source]
        source: rusqlite::Error,
    },
}

impl InventoryError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        InventoryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &std::path::Path, message: impl Into<String>) -> Self {
        InventoryError::Corrupt {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
