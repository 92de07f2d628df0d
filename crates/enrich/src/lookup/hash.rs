//! MD5 of executables, cached by file identity so a binary run a thousand
//! times is read once, and checked against the identity the kernel took
//! of the file it executed.

use std::io::Read;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kestrel_decode::ExeId;
use lru::LruCache;
use md5::{Digest, Md5};

use crate::budget::Budget;

/// What identifies one version of a file's content. ctime is in it because
/// mtime is not evidence: anyone who can write the file can put its mtime
/// back (utimensat), while ctime moves on every change and only a clock
/// change sets it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
}

/// The file a hash must be of: the one the kernel executed.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// Its identity at exec.
    pub id: &'a ExeId,
    /// The path is a /proc/PID/exe link of the process, checked to be the
    /// same process: the kernel opens that very file, and some file
    /// systems (btrfs subvolumes) show `stat` a device other than the
    /// kernel's, so only the inode and ctime are compared.
    pub via_proc_link: bool,
}

/// Why a hash is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMiss {
    /// The file is larger than the configured cap.
    TooLarge,
    /// The file does not exist (a failed exec of a missing path).
    Missing,
    /// Not a regular file (a FIFO, a device): there is no content to hash.
    NotRegular,
    /// The file could not be opened or read.
    Unreadable,
    /// The file opened is not the one expected: another inode now has the
    /// path, or it changed (ctime) since it was executed.
    Changed,
    /// The bytes or time budget of the current second was spent.
    Budget,
}

/// Bounded cache of file MD5s.
pub struct Md5Cache {
    cache: LruCache<FileKey, String>,
    max_bytes: u64,
    /// Read buffer, kept between hashes: a fresh 64 KiB one per file cost
    /// an allocation, a memset and heap consolidation on every miss.
    buf: Vec<u8>,
    /// Executables are hashed on the collecting thread: what it may spend.
    budget: Budget,
    /// Bytes read to hash files, since start.
    read: u64,
}

impl Md5Cache {
    /// A cache of at most `entries` hashes, hashing files up to `max_bytes`.
    pub fn new(entries: usize, max_bytes: u64) -> Self {
        Md5Cache {
            cache: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap()),
            max_bytes,
            buf: Vec::new(),
            budget: Budget::unlimited(),
            read: 0,
        }
    }

    /// Bytes read to hash files since start, whole or not.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Reads at most `bytes_per_sec` and spends at most `time_per_sec` per
    /// second on files not in the cache; the others are
    /// [`HashMiss::Budget`].
    pub fn with_budget(mut self, bytes_per_sec: u64, time_per_sec: std::time::Duration) -> Self {
        self.budget = Budget::new(bytes_per_sec, time_per_sec);
        self
    }

    /// The MD5 (lower-case hex) of the file at `path`. `path` may be a
    /// /proc/PID/exe link: opening it reaches the very file the process
    /// runs, even when it was deleted or lives in another mount namespace.
    pub fn md5_of(&mut self, path: &Path) -> Result<String, HashMiss> {
        self.md5_checked(path, None)
    }

    /// [`Md5Cache::md5_of`] outside the budget: for files only root can
    /// make the agent read (a kernel module being loaded), whose hash
    /// must not depend on what users did in the same second.
    pub fn md5_exempt(&mut self, path: &Path) -> Result<String, HashMiss> {
        let budget = std::mem::replace(&mut self.budget, Budget::unlimited());
        let r = self.md5_checked(path, None);
        self.budget = budget;
        r
    }

    /// [`Md5Cache::md5_of`], refusing ([`HashMiss::Changed`]) a file that
    /// is not `expect`'s: checked on the open descriptor, before and after
    /// reading, so what is hashed is the executed inode, unchanged.
    pub fn md5_checked(&mut self, path: &Path, expect: Option<Expect>) -> Result<String, HashMiss> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: opening a FIFO for reading would wait for a writer.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HashMiss::Missing,
                _ => HashMiss::Unreadable,
            })?;
        let m = f.metadata().map_err(|_| HashMiss::Unreadable)?;
        if !m.is_file() {
            return Err(HashMiss::NotRegular);
        }
        let key = file_key(&m);
        let matches = |k: &FileKey| match expect {
            None => true,
            Some(e) => {
                k.ino == e.id.ino
                    && k.ctime_ns == e.id.ctime_ns
                    && (e.via_proc_link || k.dev == e.id.dev)
            }
        };
        if !matches(&key) {
            return Err(HashMiss::Changed);
        }
        if let Some(h) = self.cache.get(&key) {
            return Ok(h.clone());
        }
        if m.size() > self.max_bytes {
            return Err(HashMiss::TooLarge);
        }
        if !self.budget.allows(m.size()) {
            return Err(HashMiss::Budget);
        }
        let mut hasher = Md5::new();
        if self.buf.is_empty() {
            self.buf = vec![0u8; 64 * 1024];
        }
        let buf = &mut self.buf;
        let started = std::time::Instant::now();
        let mut total = 0u64;
        let read = loop {
            let n = match f.read(buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(_) => break Err(HashMiss::Unreadable),
            };
            total += n as u64;
            // A file still growing past the cap is treated as too large.
            if total > self.max_bytes {
                break Err(HashMiss::TooLarge);
            }
            if !self.budget.may_continue(total, started) {
                break Err(HashMiss::Budget);
            }
            hasher.update(&buf[..n]);
        };
        self.budget.spend(total, started);
        self.read += total;
        read?;
        // Changed while being read: the hash is of neither version.
        if expect.is_some() {
            let after = f.metadata().map_err(|_| HashMiss::Unreadable)?;
            if file_key(&after) != key {
                return Err(HashMiss::Changed);
            }
        }
        let hex = hex(&hasher.finalize());
        self.cache.put(key, hex.clone());
        Ok(hex)
    }
}

fn file_key(m: &std::fs::Metadata) -> FileKey {
    FileKey {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        size: m.size(),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_caps() {
        let dir = std::env::temp_dir().join(format!("kestrel-md5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, b"abc").unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 2000]).unwrap();
        let mut c = Md5Cache::new(4, 1000);
        assert_eq!(
            c.md5_of(&small).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            c.md5_of(&small).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(c.md5_of(&big), Err(HashMiss::TooLarge));
        assert_eq!(c.md5_of(&dir.join("none")), Err(HashMiss::Missing));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_content_change_with_mtime_put_back_is_a_new_hash() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("kestrel-md5c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = Md5Cache::new(4, 1000);
        let m = std::fs::metadata(&f).unwrap();
        let id = ExeId {
            dev: m.dev(),
            ino: m.ino(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            memfd: false,
            deleted: false,
        };
        let expect = Some(Expect {
            id: &id,
            via_proc_link: false,
        });
        assert_eq!(
            c.md5_checked(&f, expect).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mtime = std::fs::File::open(&f)
            .unwrap()
            .metadata()
            .unwrap()
            .modified()
            .unwrap();
        std::fs::write(&f, b"abd").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        // Same size and mtime: a new hash all the same, and not the one
        // that was executed.
        assert_eq!(c.md5_checked(&f, expect), Err(HashMiss::Changed));
        assert_ne!(c.md5_of(&f).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_past_the_budget_are_not_read() {
        let dir = std::env::temp_dir().join(format!("kestrel-md5b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, vec![1u8; 600]).unwrap();
        std::fs::write(&b, vec![2u8; 600]).unwrap();
        let mut c = Md5Cache::new(4, 1000).with_budget(1000, std::time::Duration::from_secs(1));
        assert!(c.md5_of(&a).is_ok());
        assert_eq!(c.md5_of(&b), Err(HashMiss::Budget));
        // What is cached costs nothing.
        assert!(c.md5_of(&a).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
