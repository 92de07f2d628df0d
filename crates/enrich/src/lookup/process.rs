//! Who a process is: its executable and that file's MD5, remembered per
//! process so its later events reuse what one read of /proc (or its exec
//! event) found.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use kestrel_decode::Task;
use lru::LruCache;

use super::hash::{HashMiss, Md5Cache};
use super::procfs::Procfs;

/// A process's executable and its hash ("" when not hashed).
#[derive(Debug, Default)]
pub(crate) struct Process {
    pub(crate) exe: String,
    pub(crate) exe_md5: String,
}

/// What process lookups could not do, counted since start.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Misses {
    pub(crate) process_gone: u64,
    pub(crate) md5_too_large: u64,
    pub(crate) md5_unreadable: u64,
    pub(crate) md5_budget: u64,
}

/// /proc, the hash cache and the process cache.
pub(crate) struct Processes {
    pub(crate) procfs: Procfs,
    hashes: Md5Cache,
    /// (tgid, start_boottime) → executable. Keyed by start time so a
    /// reused pid never inherits another process's identity.
    cache: LruCache<(u32, u64), Arc<Process>>,
    pub(crate) misses: Misses,
}

impl Processes {
    pub(crate) fn new(procfs: Procfs, hashes: Md5Cache, entries: usize) -> Self {
        Processes {
            procfs,
            hashes,
            cache: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap()),
            misses: Misses::default(),
        }
    }

    /// The MD5 of a file, "" when it cannot be had (counted when that is
    /// worth knowing).
    pub(crate) fn md5(&mut self, path: &Path) -> String {
        match self.hashes.md5_of(path) {
            Ok(h) => h,
            Err(HashMiss::TooLarge) => {
                self.misses.md5_too_large += 1;
                String::new()
            }
            Err(HashMiss::Missing | HashMiss::NotRegular) => String::new(),
            Err(HashMiss::Unreadable) => {
                self.misses.md5_unreadable += 1;
                String::new()
            }
            Err(HashMiss::Budget) => {
                self.misses.md5_budget += 1;
                String::new()
            }
        }
    }

    /// Executable and hash of a process, from cache or /proc.
    pub(crate) fn get(&mut self, pid: u32, start: Option<u64>) -> Option<Arc<Process>> {
        let start = match start {
            Some(s) => s,
            None => self.procfs.start_ticks(pid)?,
        };
        if let Some(p) = self.cache.get(&(pid, start)) {
            return Some(p.clone());
        }
        let exe = self.procfs.exe(pid, Some(start))?;
        let exe_md5 = self.md5(&self.procfs.path(pid, "exe"));
        let info = Arc::new(Process { exe, exe_md5 });
        self.cache.put((pid, start), info.clone());
        Some(info)
    }

    /// The process an event is about, counting it when it is gone.
    pub(crate) fn of_task(&mut self, t: &Task) -> Option<Arc<Process>> {
        let p = self.get(t.tgid, Some(t.start_boottime));
        if p.is_none() {
            self.misses.process_gone += 1;
        }
        p
    }

    /// Remembers what an exec found, for the process's later events, even
    /// once it is gone from /proc.
    pub(crate) fn remember(&mut self, t: &Task, p: Arc<Process>) {
        self.cache.put((t.tgid, t.start_boottime), p);
    }
}
