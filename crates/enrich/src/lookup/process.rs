//! Who a process is: its executable and that file's MD5, remembered per
//! process so its later events reuse what one read of /proc (or its exec
//! event) found.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use kestrel_decode::{ExeId, Task};
use lru::LruCache;

use super::hash::{Expect, HashMiss, Md5Cache};
use super::procfs::Procfs;

/// What `exe_md5` is, or why it is empty (the event's `exe_md5_status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Md5Status {
    /// The hash of the very file the kernel executed: its device, inode
    /// and ctime matched those taken at exec, before and after reading.
    Verified,
    /// Hashed without an identity to check against: a process whose exec
    /// Kestrel did not see (it predates the agent), or the path a failed
    /// exec refused.
    #[default]
    Unverified,
    /// Empty: the file at hand is not the executed one (the path now names
    /// another file, or the file changed since the exec).
    Changed,
    /// Empty: nothing left to open (the process exited and its file has no
    /// reachable path: deleted, a memfd, a path too long to walk).
    Gone,
    /// Empty: larger than `exe_md5_max_bytes`.
    TooLarge,
    /// Empty: the file could not be read.
    Unreadable,
    /// Empty: the second's hashing budget was spent (`exe_md5_bytes_per_sec`,
    /// `exe_md5_ms_per_sec`).
    Budget,
}

impl Md5Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Md5Status::Verified => "verified",
            Md5Status::Unverified => "unverified",
            Md5Status::Changed => "changed",
            Md5Status::Gone => "gone",
            Md5Status::TooLarge => "too_large",
            Md5Status::Unreadable => "unreadable",
            Md5Status::Budget => "budget",
        }
    }
}

/// A process's executable and its hash ("" when not hashed).
#[derive(Debug, Default)]
pub(crate) struct Process {
    pub(crate) exe: String,
    pub(crate) exe_md5: String,
    pub(crate) md5_status: Md5Status,
    /// The executed file's identity, when the kernel took it.
    pub(crate) id: Option<ExeId>,
    /// Its arguments joined by spaces (at most [`LINEAGE_ARGV_MAX`]
    /// bytes), when its exec was seen: its children's `ppid_argv`.
    pub(crate) argv: Option<String>,
}

/// Bytes of a process's joined argv kept in the process cache for its
/// children's events: bounds the cache at `process_cache_entries` times
/// this.
pub(crate) const LINEAGE_ARGV_MAX: usize = 1024;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// A parent's (or group leader's) executable and arguments, as a child's
/// exec event names them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Lineage {
    pub(crate) exe: String,
    pub(crate) argv: String,
}

/// What process lookups could not do, counted since start.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Misses {
    pub(crate) process_gone: u64,
    pub(crate) md5_too_large: u64,
    pub(crate) md5_unreadable: u64,
    pub(crate) md5_budget: u64,
    pub(crate) md5_changed: u64,
    pub(crate) parent_unknown: u64,
    pub(crate) pgid_unknown: u64,
}

/// The part of an [`ExeId`] that names one version of one file.
type ImageKey = (u64, u64, i128);

fn image_key(id: &ExeId) -> ImageKey {
    (id.dev, id.ino, id.ctime_ns)
}

/// /proc, the hash cache and the process cache.
pub(crate) struct Processes {
    pub(crate) procfs: Procfs,
    hashes: Md5Cache,
    /// (tgid, start_boottime) → executable. Keyed by start time so a
    /// reused pid never inherits another process's identity.
    cache: LruCache<(u32, u64), Arc<Process>>,
    /// Executed file (device, inode, ctime) → what its exec found: how a
    /// forked child that is gone before its event is looked at still
    /// names its program (the kernel copies the identity at fork).
    images: LruCache<ImageKey, Arc<Process>>,
    /// tgid → start of the latest process seen exec'ing with it: finds a
    /// process group leader, whose start the kernel does not send.
    latest: LruCache<u32, u64>,
    /// Processes (tgid, start, image wanted) that /proc and the caches
    /// could not name: gone, or their pid another's. A process that left
    /// does not come back, so its later events (and its children's
    /// lineage) skip the /proc reads that failed once; an exec seen later
    /// lands in `cache` and `images`, which are asked first.
    unknown: LruCache<(u32, u64, Option<ImageKey>), ()>,
    pub(crate) misses: Misses,
}

impl Processes {
    pub(crate) fn new(procfs: Procfs, hashes: Md5Cache, entries: usize) -> Self {
        let n = NonZeroUsize::new(entries.max(1)).unwrap();
        Processes {
            procfs,
            hashes,
            cache: LruCache::new(n),
            images: LruCache::new(n),
            latest: LruCache::new(n),
            unknown: LruCache::new(n),
            misses: Misses::default(),
        }
    }

    /// The MD5 of a file only root can have read (a module being loaded),
    /// outside the executables' budget; "" when it cannot be had.
    pub(crate) fn md5_exempt(&mut self, path: &Path) -> String {
        self.hashes.md5_exempt(path).unwrap_or_default()
    }

    /// The MD5 of `path`, checked against `expect` when given, and what it
    /// is; counted when that is worth knowing. Missing: `Gone`.
    pub(crate) fn md5_checked(
        &mut self,
        path: &Path,
        expect: Option<Expect>,
    ) -> (String, Md5Status) {
        let checked = expect.is_some();
        match self.hashes.md5_checked(path, expect) {
            Ok(h) if checked => (h, Md5Status::Verified),
            Ok(h) => (h, Md5Status::Unverified),
            Err(HashMiss::TooLarge) => {
                self.misses.md5_too_large += 1;
                (String::new(), Md5Status::TooLarge)
            }
            Err(HashMiss::Missing | HashMiss::NotRegular) => (String::new(), Md5Status::Gone),
            Err(HashMiss::Unreadable) => {
                self.misses.md5_unreadable += 1;
                (String::new(), Md5Status::Unreadable)
            }
            Err(HashMiss::Changed) => (String::new(), Md5Status::Changed),
            Err(HashMiss::Budget) => {
                self.misses.md5_budget += 1;
                (String::new(), Md5Status::Budget)
            }
        }
    }

    /// A `Changed` hash, counted once per exec or process.
    pub(crate) fn count_changed(&mut self) {
        self.misses.md5_changed += 1;
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
        let info = Arc::new(self.read_proc(pid, Some(start), None)?);
        self.cache.put((pid, start), info.clone());
        Some(info)
    }

    /// What /proc/PID/exe shows, checked against `id` when given: `None`
    /// when the process is gone, or runs another file than `id`.
    fn read_proc(&mut self, pid: u32, start: Option<u64>, id: Option<&ExeId>) -> Option<Process> {
        let exe = self.procfs.exe(pid, start)?;
        let expect = id.map(|id| Expect {
            id,
            via_proc_link: true,
        });
        let (exe_md5, md5_status) = self.md5_checked(&self.procfs.path(pid, "exe"), expect);
        if id.is_some() && matches!(md5_status, Md5Status::Changed | Md5Status::Gone) {
            return None;
        }
        Some(Process {
            exe,
            exe_md5,
            md5_status,
            id: id.copied(),
            argv: None,
        })
    }

    /// The process an event is about, counting it when it is gone. The
    /// kernel's identity of its executable decides: a cached entry of
    /// another image (an exec not yet seen) is not used, and a process
    /// gone from /proc is named by the exec that made its image, or by its
    /// parent when that still runs the same file.
    pub(crate) fn of_task(&mut self, t: &Task) -> Option<Arc<Process>> {
        let key = (t.tgid, t.start_boottime);
        let want = t.exe.as_ref().map(image_key);
        if let Some(p) = self.cache.get(&key) {
            if want.is_none() || p.id.as_ref().map(image_key) == want {
                return Some(p.clone());
            }
        }
        let unknown = (t.tgid, t.start_boottime, want);
        let found = match &t.exe {
            Some(id) => match self.images.get(&image_key(id)) {
                Some(p) => Some(p.clone()),
                None if self.unknown.get(&unknown).is_some() => None,
                None => self
                    .read_proc(t.tgid, Some(t.start_boottime), Some(id))
                    .or_else(|| self.read_proc(t.ppid, None, Some(id)))
                    .map(Arc::new),
            },
            None if self.unknown.get(&unknown).is_some() => None,
            None => self
                .read_proc(t.tgid, Some(t.start_boottime), None)
                .map(Arc::new),
        };
        match found {
            Some(p) => {
                self.cache.put(key, p.clone());
                Some(p)
            }
            None => {
                self.unknown.put(unknown, ());
                self.misses.process_gone += 1;
                None
            }
        }
    }

    /// Remembers what an exec found, for the process's later events and
    /// its children's, even once they are gone from /proc.
    pub(crate) fn remember(&mut self, t: &Task, p: Arc<Process>) {
        if let Some(id) = &p.id {
            self.images.put(image_key(id), p.clone());
        }
        self.cache.put((t.tgid, t.start_boottime), p);
        self.latest.put(t.tgid, t.start_boottime);
    }

    /// Executable and arguments of process `pid`, the one that started at
    /// `start` (ns since boot) when given, else the latest one seen with
    /// that pid or, failing that, the one /proc has now: from the exec
    /// the cache remembers, else from /proc while it lives. `None` when
    /// neither knows it.
    pub(crate) fn lineage(&mut self, pid: u32, start: Option<u64>) -> Option<Lineage> {
        let start = start.or_else(|| self.latest.peek(&pid).copied());
        if let Some(s) = start {
            if let Some(p) = self.cache.get(&(pid, s)) {
                if let Some(argv) = &p.argv {
                    return Some(Lineage {
                        exe: p.exe.clone(),
                        argv: argv.clone(),
                    });
                }
            }
        }
        if let Some(s) = start {
            if self.unknown.get(&(pid, s, None)).is_some() {
                return None;
            }
        }
        let read = || {
            let exe = self.procfs.exe(pid, None)?;
            let argv = self.procfs.cmdline(pid, LINEAGE_ARGV_MAX)?;
            // Checked after the reads: a pid reused before them fails here.
            match start {
                Some(s) if !self.procfs.is_same(pid, s) => None,
                _ => Some(Lineage { exe, argv }),
            }
        };
        let found = read();
        if let (None, Some(s)) = (&found, start) {
            self.unknown.put((pid, s, None), ());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc of one process, `pid`, started at tick 777, running /bin/sh.
    fn fake_proc(dir: &Path, pid: u32) {
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::symlink("/bin/sh", p.join("exe")).unwrap();
        let stat =
            format!("{pid} (sh) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 1000 10");
        std::fs::write(p.join("stat"), stat).unwrap();
        std::fs::write(p.join("cmdline"), b"sh\0-c\0x\0").unwrap();
    }

    #[test]
    fn a_process_found_gone_is_not_looked_for_again() {
        let dir = std::env::temp_dir().join(format!("kestrel-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let procs = || Processes::new(Procfs::new(&dir), Md5Cache::new(8, 1 << 20), 64);
        // SAFETY: sysconf has no preconditions.
        let start = 777 * (1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64);
        let t = Task {
            tgid: 4242,
            pid: 4242,
            ppid: 1,
            start_boottime: start,
            ..Task::default()
        };
        let mut p = procs();
        assert!(p.of_task(&t).is_none());
        assert!(p.lineage(4242, Some(start)).is_none());
        // The same (pid, start) cannot come back: what failed once is not
        // read again, and is still counted for each event.
        fake_proc(&dir, 4242);
        assert!(p.of_task(&t).is_none());
        assert!(p.lineage(4242, Some(start)).is_none());
        assert_eq!(p.misses.process_gone, 2);
        // A table that never saw it gone reads it.
        let mut fresh = procs();
        assert_eq!(fresh.of_task(&t).unwrap().exe, "/bin/sh");
        assert_eq!(fresh.lineage(4242, Some(start)).unwrap().argv, "sh -c x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
