//! File-creation exclusions: the directories under which new files are not
//! reported, checked in the kernel against a map of (device, inode) keys.
//!
//! The map names what a directory is, not its path, so a path has to be
//! looked up again when what it names changes: a directory created after
//! the agent started, removed and created again, or covered by a mount.
//! [`FileExcludes::refresh`] does that every [`REFRESH`]; the collecting
//! thread, which owns the probes, calls it. Until a directory exists
//! nothing can be created under its name, so waiting for it loses nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kestrel_probes::{DirKey, Probes};

/// How often every excluded path is looked up again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The excluded directories and what the kernel map holds for each.
pub struct FileExcludes {
    dirs: Vec<Dir>,
    last_refresh: Option<Instant>,
}

struct Dir {
    path: PathBuf,
    /// The key in the kernel map for this path (None: not there now).
    key: Option<DirKey>,
    /// What the last lookup failed with, so that a lasting failure is
    /// logged once, not every refresh.
    failed: Option<io::ErrorKind>,
}

impl FileExcludes {
    /// The configured directories; nothing is in the kernel map until the
    /// first [`FileExcludes::refresh`].
    pub fn new(paths: &[PathBuf]) -> FileExcludes {
        let mut ex = FileExcludes {
            dirs: Vec::new(),
            last_refresh: None,
        };
        for p in paths {
            if !ex.dirs.iter().any(|d| d.path == *p) {
                ex.dirs.push(Dir {
                    path: p.clone(),
                    key: None,
                    failed: None,
                });
            }
        }
        ex
    }

    /// [`FileExcludes::refresh`] when the last one is [`REFRESH`] old.
    pub fn refresh_if_due(&mut self, probes: &Probes) {
        if self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.refresh(probes);
        }
    }

    /// Looks every path up again and brings the kernel map in line.
    pub fn refresh(&mut self, probes: &Probes) {
        self.last_refresh = Some(Instant::now());
        for i in 0..self.dirs.len() {
            let now = DirKey::of(&self.dirs[i].path);
            if let Err(e) = self.update(i, now, probes) {
                self.report_failure(i, &e);
            }
        }
    }

    /// Excludes `path` from now on (the `exclude_path` command). Fails when
    /// it does not name a directory now, so that the operator hears of a
    /// mistyped path at once.
    pub fn add(&mut self, path: &Path, probes: &Probes) -> io::Result<()> {
        let key = DirKey::of(path)?;
        let known = self.dirs.iter().position(|d| d.path == path);
        let i = match known {
            Some(i) => i,
            None => {
                if self.dirs.len() >= crate::config::MAX_FILE_EXCLUDES {
                    return Err(io::Error::other(format!(
                        "at most {} directories can be excluded",
                        crate::config::MAX_FILE_EXCLUDES
                    )));
                }
                self.dirs.push(Dir {
                    path: path.to_path_buf(),
                    key: None,
                    failed: None,
                });
                self.dirs.len() - 1
            }
        };
        let r = self.update(i, Ok(key), probes);
        if r.is_err() && known.is_none() {
            self.dirs.remove(i);
        }
        r
    }

    /// Reports creations under `path` again (the `include_path` command).
    /// A path that was not excluded is not an error.
    pub fn remove(&mut self, path: &Path, probes: &Probes) -> io::Result<()> {
        let Some(i) = self.dirs.iter().position(|d| d.path == path) else {
            return Ok(());
        };
        if let Some(old) = self.dirs[i].key {
            self.drop_key(i, old, probes)?;
        }
        self.dirs.remove(i);
        Ok(())
    }

    /// Moves entry `i` to the key its path names now (`now`).
    fn update(&mut self, i: usize, now: io::Result<DirKey>, probes: &Probes) -> io::Result<()> {
        let old = self.dirs[i].key;
        let new = now.as_ref().ok().copied();
        if old != new {
            if let Some(old) = old {
                self.drop_key(i, old, probes)?;
                self.dirs[i].key = None;
            }
            if let Some(new) = new {
                probes.exclude_dir(&new)?;
                self.dirs[i].key = Some(new);
                tracing::info!(
                    dir = %self.dirs[i].path.display(),
                    again = old.is_some(),
                    "file creations excluded"
                );
            }
        }
        now.map(|_| ())?;
        self.dirs[i].failed = None;
        Ok(())
    }

    /// Takes `key` out of the kernel map unless another path names the
    /// same directory (a link, a bind mount).
    fn drop_key(&self, i: usize, key: DirKey, probes: &Probes) -> io::Result<()> {
        let shared = self
            .dirs
            .iter()
            .enumerate()
            .any(|(j, d)| j != i && d.key == Some(key));
        if shared {
            Ok(())
        } else {
            probes.include_dir(&key)
        }
    }

    fn report_failure(&mut self, i: usize, e: &io::Error) {
        let d = &mut self.dirs[i];
        if d.failed == Some(e.kind()) {
            return;
        }
        d.failed = Some(e.kind());
        if e.kind() == io::ErrorKind::NotFound {
            tracing::warn!(
                dir = %d.path.display(),
                "file exclusion waits: the directory does not exist yet; creations under it \
                 are excluded once it does (looked up every {} s)",
                REFRESH.as_secs()
            );
        } else {
            tracing::warn!(
                dir = %d.path.display(),
                error = %e,
                "file exclusion not applied; tried again every {} s",
                REFRESH.as_secs()
            );
        }
    }
}
