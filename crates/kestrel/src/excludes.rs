//! File-creation exclusions: the directories under which new files are not
//! reported, checked in the kernel against a map of (device, inode) keys.
//!
//! The map names what a directory is, not its path, so a path has to be
//! looked up again when what it names changes: a directory created after
//! the agent started, removed and created again, or covered by a mount.
//! A thread of its own looks every path up every [`REFRESH`] (a `stat` can
//! hang on a dead network filesystem, and the collecting thread must never
//! wait on one); the collecting thread, which owns the probes, applies what
//! it found. Until a directory exists nothing can be created under its
//! name, so waiting for it loses nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kestrel_probes::{DirKey, Probes};

/// The kernel's file_excludes map holds this many directories (the
/// header's KESTREL_FILE_EXCLUDES_MAX).
pub const MAX_FILE_EXCLUDES: usize = kestrel_probes::FILE_EXCLUDES_MAX;

/// How often every excluded path is looked up again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// How long the agent's start waits for the first lookups.
const FIRST_LOOKUP: Duration = Duration::from_secs(2);

/// One round of lookups: each path and what it names now.
type Lookups = Vec<(PathBuf, io::Result<DirKey>)>;

/// What the lookup thread and the collecting thread share.
#[derive(Default)]
struct Shared {
    /// The paths to look up (the collecting thread's list).
    paths: Mutex<Vec<PathBuf>>,
    /// The latest round, until the collecting thread takes it.
    found: Mutex<Option<Lookups>>,
    ready: Condvar,
}

/// The excluded directories and what the kernel map holds for each.
pub struct FileExcludes {
    dirs: Vec<Dir>,
    shared: Arc<Shared>,
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
    /// Starts the lookup thread for `paths` and applies its first round,
    /// waiting for it at most [`FIRST_LOOKUP`] (a slow filesystem delays
    /// its exclusion, not the agent).
    pub fn start(paths: &[PathBuf], probes: &Probes, stop: Arc<AtomicBool>) -> Result<Self> {
        let mut dirs: Vec<Dir> = Vec::new();
        for p in paths {
            if !dirs.iter().any(|d| d.path == *p) {
                dirs.push(Dir {
                    path: p.clone(),
                    key: None,
                    failed: None,
                });
            }
        }
        let shared = Arc::new(Shared::default());
        *shared.paths.lock().unwrap() = dirs.iter().map(|d| d.path.clone()).collect();
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kestrel-excludes".into())
                .spawn(move || lookup_loop(&shared, &stop))
                .context("starting the file exclusion thread")?;
        }
        let mut ex = FileExcludes { dirs, shared };
        let found = {
            let deadline = Instant::now() + FIRST_LOOKUP;
            let mut found = ex.shared.found.lock().unwrap();
            while found.is_none() && Instant::now() < deadline {
                found = ex.shared.ready.wait_timeout(found, FIRST_LOOKUP).unwrap().0;
            }
            found.take()
        };
        match found {
            Some(f) => ex.apply(f, probes),
            None => tracing::warn!(
                "looking up the excluded directories takes over {} s (a slow filesystem?): \
                 they are excluded once it is done",
                FIRST_LOOKUP.as_secs()
            ),
        }
        Ok(ex)
    }

    /// Whether `path` lies under an excluded directory, by its path: lean
    /// mode's file creations come from fanotify, not through the kernel
    /// map, and fanotify names a file by path.
    pub fn covers(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| path.starts_with(&d.path))
    }

    /// Applies the lookup thread's latest round, if there is one. Never
    /// blocks.
    pub fn refresh(&mut self, probes: &Probes) {
        let found = self.shared.found.lock().unwrap().take();
        if let Some(f) = found {
            self.apply(f, probes);
        }
    }

    fn apply(&mut self, found: Lookups, probes: &Probes) {
        for (path, now) in found {
            // A path the list no longer has was removed meanwhile.
            if let Some(i) = self.dirs.iter().position(|d| d.path == path) {
                if let Err(e) = self.update(i, now, probes) {
                    self.report_failure(i, &e);
                }
            }
        }
    }

    /// Excludes `path`, which names the directory `key` now (the
    /// `exclude_path` command: its caller looked the path up, so that a
    /// mistyped one is refused at once, and off this thread).
    pub fn add(&mut self, path: &Path, key: DirKey, probes: &Probes) -> io::Result<()> {
        let known = self.dirs.iter().position(|d| d.path == path);
        let i = match known {
            Some(i) => i,
            None => {
                if self.dirs.len() >= MAX_FILE_EXCLUDES {
                    return Err(io::Error::other(format!(
                        "at most {} directories can be excluded",
                        MAX_FILE_EXCLUDES
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
        self.publish_paths();
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
        self.publish_paths();
        Ok(())
    }

    fn publish_paths(&self) {
        *self.shared.paths.lock().unwrap() = self.dirs.iter().map(|d| d.path.clone()).collect();
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

/// The lookup thread: every path, every [`REFRESH`], until `stop`.
fn lookup_loop(shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let paths = shared.paths.lock().unwrap().clone();
        let found: Lookups = paths
            .into_iter()
            .map(|p| {
                let k = DirKey::of(&p);
                (p, k)
            })
            .collect();
        *shared.found.lock().unwrap() = Some(found);
        shared.ready.notify_all();
        let until = Instant::now() + REFRESH;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
