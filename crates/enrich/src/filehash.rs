//! The content hash of created files (`create_file_md5`), taken once the
//! creator had time to write it.
//!
//! A file is reported when it is created, empty; hashing it then would
//! give every new file the MD5 of nothing. File creation events wait here
//! for [`FileHashConfig::delay`], in creation order, on a thread of their
//! own, then go on to `deliver`.
//!
//! Creating files costs a user nothing (20,000 sparse 16 MiB files take
//! under a second and no disk), reading them costs the agent a lot. So
//! the thread that drains the ring buffer never waits here: an event that
//! finds the queue full goes on at once without its hash. And the reading
//! itself has a budget, in bytes and in time per second: a file that does
//! not fit is not hashed. Either way the event says why
//! (`create_file_md5_skipped`) and the reason is counted.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use kestrel_event::Event;

use crate::lookup::hash::{HashMiss, Md5Cache};

/// Settings of the delayed hash.
#[derive(Debug, Clone)]
pub struct FileHashConfig {
    /// Time between a file's creation and the hash of its content.
    pub delay: Duration,
    /// Files larger than this are not hashed.
    pub max_bytes: u64,
    /// Events waiting at most; past it, events go on unhashed.
    pub queue: usize,
    /// Bytes read per second, all files together (at least `max_bytes`).
    pub bytes_per_sec: u64,
    /// Time spent reading and hashing per second.
    pub time_per_sec: Duration,
    /// Once the agent stops, how long waiting files are still hashed
    /// (within the budget) before the rest go on unhashed.
    pub stop_grace: Duration,
}

impl Default for FileHashConfig {
    fn default() -> Self {
        FileHashConfig {
            delay: Duration::from_secs(1),
            max_bytes: 16 << 20,
            queue: 4096,
            bytes_per_sec: 64 << 20,
            time_per_sec: Duration::from_millis(250),
            stop_grace: Duration::from_secs(1),
        }
    }
}

/// Why a created file has no hash: the value of `create_file_md5_skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashSkip {
    /// The queue was full when the event came.
    QueueFull,
    /// The bytes or time budget of the current second was spent.
    Budget,
    /// Larger than `max_bytes`.
    TooLarge,
    /// The agent was stopping.
    Stopping,
    /// Gone before the delay ended.
    Missing,
    /// Not a regular file (FIFO, device, directory).
    NotRegular,
    /// Could not be opened or read.
    Unreadable,
    /// Made with O_TMPFILE: no name to open.
    Tmpfile,
    /// The path was cut (`...`): it names nothing.
    NoPath,
}

impl HashSkip {
    pub const ALL: [HashSkip; 9] = [
        HashSkip::QueueFull,
        HashSkip::Budget,
        HashSkip::TooLarge,
        HashSkip::Stopping,
        HashSkip::Missing,
        HashSkip::NotRegular,
        HashSkip::Unreadable,
        HashSkip::Tmpfile,
        HashSkip::NoPath,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            HashSkip::QueueFull => "queue_full",
            HashSkip::Budget => "budget",
            HashSkip::TooLarge => "too_large",
            HashSkip::Stopping => "stopping",
            HashSkip::Missing => "missing",
            HashSkip::NotRegular => "not_regular",
            HashSkip::Unreadable => "unreadable",
            HashSkip::Tmpfile => "tmpfile",
            HashSkip::NoPath => "no_path",
        }
    }
}

/// What the file hash step counts, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct FileHashCounters {
    /// Files hashed (cache hits included).
    pub hashed: AtomicU64,
    /// Bytes read to hash them.
    pub bytes: AtomicU64,
    /// Files not hashed, by [`HashSkip`] (in [`HashSkip::ALL`]'s order).
    skipped: [AtomicU64; HashSkip::ALL.len()],
}

impl FileHashCounters {
    pub fn skipped(&self, why: HashSkip) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    fn skip(&self, ev: &mut Event, why: HashSkip) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
        ev.set("create_file_md5", String::new());
        ev.set("create_file_md5_skipped", why.as_str());
    }
}

/// The hashing thread and its queue.
pub struct FileHasher {
    tx: Sender<(Instant, Event)>,
    rx: Receiver<(Instant, Event)>,
    /// A copy of the event being hashed: if the thread is stuck (a read
    /// that does not return), `finish` sends it on without its hash.
    current: Arc<Mutex<Option<Event>>>,
    counters: Arc<FileHashCounters>,
    thread: JoinHandle<()>,
}

impl FileHasher {
    /// Starts the thread. Events go to `deliver` once hashed; `deliver`
    /// returning false (nobody takes events any more) ends the thread.
    /// Once `stop` is set, waiting events are hashed at once, for
    /// [`FileHashConfig::stop_grace`] at most.
    pub fn start(
        cfg: FileHashConfig,
        stop: Arc<AtomicBool>,
        counters: Arc<FileHashCounters>,
        deliver: impl FnMut(Event) -> bool + Send + 'static,
    ) -> std::io::Result<FileHasher> {
        let (tx, rx) = bounded(cfg.queue.max(1));
        let current = Arc::new(Mutex::new(None));
        let thread = {
            let (rx, current, counters) = (rx.clone(), current.clone(), counters.clone());
            std::thread::Builder::new()
                .name("kestrel-filehash".into())
                .spawn(move || {
                    Worker::new(cfg, counters, current).run(rx, &stop, deliver);
                })?
        };
        Ok(FileHasher {
            tx,
            rx,
            current,
            counters,
            thread,
        })
    }

    /// Queues a file creation event without waiting. An event that cannot
    /// be queued (the queue is full, or the thread has ended) is given
    /// back, its hash marked as skipped, for the caller to pass on.
    pub fn submit(&self, ev: Event) -> Option<Event> {
        match self.tx.try_send((Instant::now(), ev)) {
            Ok(()) => None,
            Err(TrySendError::Full((_, mut ev))) => {
                self.counters.skip(&mut ev, HashSkip::QueueFull);
                Some(ev)
            }
            Err(TrySendError::Disconnected((_, mut ev))) => {
                self.counters.skip(&mut ev, HashSkip::Stopping);
                Some(ev)
            }
        }
    }

    /// Closes the queue and waits, `within` at most, until every event in
    /// it went on. What is left then (a read that does not return) is
    /// given back unhashed, for the caller to pass on.
    pub fn finish(self, within: Duration) -> Vec<Event> {
        let FileHasher {
            tx,
            rx,
            current,
            counters,
            thread,
        } = self;
        drop(tx);
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
            return Vec::new();
        }
        let mut left: Vec<Event> = current.lock().unwrap().take().into_iter().collect();
        left.extend(rx.try_iter().map(|(_, ev)| ev));
        for ev in &mut left {
            counters.skip(ev, HashSkip::Stopping);
        }
        tracing::warn!(
            events = left.len(),
            "file hashing did not end in time; the files it held go on unhashed \
             (create_file_md5_skipped=stopping)"
        );
        left
    }
}

/// The hashing thread's state.
struct Worker {
    cfg: FileHashConfig,
    counters: Arc<FileHashCounters>,
    current: Arc<Mutex<Option<Event>>>,
    /// Within the budget; a file written repeatedly with the same content
    /// is read once.
    hashes: Md5Cache,
}

impl Worker {
    fn new(
        cfg: FileHashConfig,
        counters: Arc<FileHashCounters>,
        current: Arc<Mutex<Option<Event>>>,
    ) -> Self {
        Worker {
            hashes: Md5Cache::new(64, cfg.max_bytes)
                .with_budget(cfg.bytes_per_sec, cfg.time_per_sec),
            cfg,
            counters,
            current,
        }
    }

    fn run(
        mut self,
        rx: Receiver<(Instant, Event)>,
        stop: &AtomicBool,
        mut deliver: impl FnMut(Event) -> bool,
    ) {
        let mut stopping_since: Option<Instant> = None;
        let mut stopping = || {
            if stop.load(Ordering::Relaxed) {
                Some(*stopping_since.get_or_insert_with(Instant::now))
            } else {
                None
            }
        };
        for (created, mut ev) in rx {
            let due = created + self.cfg.delay;
            while stopping().is_none() && Instant::now() < due {
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
            }
            match stopping() {
                Some(since) if since.elapsed() >= self.cfg.stop_grace => {
                    self.counters.skip(&mut ev, HashSkip::Stopping);
                }
                _ => {
                    *self.current.lock().unwrap() = Some(ev.clone());
                    self.hash_created_file(&mut ev);
                    // `finish` gave up on this thread and sent the copy.
                    if self.current.lock().unwrap().take().is_none() {
                        return;
                    }
                }
            }
            if !deliver(ev) {
                return;
            }
        }
    }

    /// Sets `create_file_md5` on a file creation event from the file's
    /// current content, or `create_file_md5_skipped` to why not.
    fn hash_created_file(&mut self, ev: &mut Event) {
        let why = if ev.get("create_type") == Some("tmpfile") {
            HashSkip::Tmpfile
        } else {
            let path = ev.get("file_path").unwrap_or("");
            if !path.starts_with('/') {
                HashSkip::NoPath
            } else {
                match self.md5_of(Path::new(path)) {
                    Ok(h) => {
                        self.counters.hashed.fetch_add(1, Ordering::Relaxed);
                        ev.set("create_file_md5", h);
                        return;
                    }
                    Err(why) => why,
                }
            }
        };
        self.counters.skip(ev, why);
    }

    fn md5_of(&mut self, path: &Path) -> Result<String, HashSkip> {
        let before = self.hashes.bytes_read();
        let r = self.hashes.md5_of(path);
        let read = self.hashes.bytes_read() - before;
        self.counters.bytes.fetch_add(read, Ordering::Relaxed);
        r.map_err(|miss| match miss {
            HashMiss::TooLarge => HashSkip::TooLarge,
            HashMiss::Missing => HashSkip::Missing,
            HashMiss::NotRegular => HashSkip::NotRegular,
            HashMiss::Budget => HashSkip::Budget,
            // Changed needs an identity to compare with; none is given.
            HashMiss::Unreadable | HashMiss::Changed => HashSkip::Unreadable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(path: &str, kind: &str) -> Event {
        let mut ev = Event::with_capacity(4);
        ev.push("file_path", path);
        ev.push("create_file_md5", "");
        ev.push("create_file_md5_skipped", "");
        ev.push("create_type", kind);
        ev
    }

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kestrel-filehash-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cfg(delay_ms: u64, queue: usize) -> FileHashConfig {
        FileHashConfig {
            delay: Duration::from_millis(delay_ms),
            max_bytes: 1 << 20,
            queue,
            bytes_per_sec: 1 << 20,
            ..FileHashConfig::default()
        }
    }

    #[test]
    fn hashes_after_the_delay_in_order() {
        let dir = dir("order");
        let a = dir.join("a");
        std::fs::write(&a, b"").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(FileHashCounters::default());
        let hasher = FileHasher::start(
            cfg(200, 4),
            Arc::new(AtomicBool::new(false)),
            counters.clone(),
            move |ev| tx.send(ev).is_ok(),
        )
        .unwrap();
        assert!(hasher
            .submit(created(a.to_str().unwrap(), "open"))
            .is_none());
        assert!(hasher.submit(created("/tmp", "tmpfile")).is_none());
        assert!(hasher.submit(created("...truncated", "open")).is_none());
        // Written after its creation was reported, before the delay ends.
        std::fs::write(&a, b"hello").unwrap();
        assert!(hasher.finish(Duration::from_secs(5)).is_empty());
        let got: Vec<Event> = rx.iter().collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].get("create_file_md5"),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
        assert_eq!(got[0].get("create_file_md5_skipped"), Some(""));
        assert_eq!(got[1].get("create_file_md5"), Some(""));
        assert_eq!(got[1].get("create_file_md5_skipped"), Some("tmpfile"));
        assert_eq!(got[2].get("create_file_md5_skipped"), Some("no_path"));
        assert_eq!(counters.hashed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.skipped(HashSkip::Tmpfile), 1);
    }

    #[test]
    fn a_full_queue_gives_the_event_back_at_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(FileHashCounters::default());
        let hasher = FileHasher::start(
            cfg(60_000, 1),
            Arc::new(AtomicBool::new(false)),
            counters.clone(),
            move |ev| tx.send(ev).is_ok(),
        )
        .unwrap();
        // The thread holds one (waiting for its delay), the queue one.
        let t = Instant::now();
        let mut back = Vec::new();
        for _ in 0..5 {
            back.extend(hasher.submit(created("/nonexistent", "open")));
        }
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(back.len() >= 3, "{}", back.len());
        assert!(back
            .iter()
            .all(|e| e.get("create_file_md5_skipped") == Some("queue_full")));
        assert_eq!(counters.skipped(HashSkip::QueueFull), back.len() as u64);
        drop(hasher);
        drop(rx);
    }

    #[test]
    fn the_byte_budget_skips_what_does_not_fit() {
        let dir = dir("budget");
        let mut c = cfg(0, 16);
        c.bytes_per_sec = 1 << 20;
        c.max_bytes = 1 << 20;
        for i in 0..4 {
            std::fs::write(dir.join(i.to_string()), vec![i as u8; 600 << 10]).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(FileHashCounters::default());
        let hasher = FileHasher::start(
            c,
            Arc::new(AtomicBool::new(false)),
            counters.clone(),
            move |ev| tx.send(ev).is_ok(),
        )
        .unwrap();
        for i in 0..4 {
            assert!(hasher
                .submit(created(dir.join(i.to_string()).to_str().unwrap(), "open"))
                .is_none());
        }
        assert!(hasher.finish(Duration::from_secs(5)).is_empty());
        let got: Vec<Event> = rx.iter().collect();
        std::fs::remove_dir_all(&dir).unwrap();
        // One second's budget (1 MiB) holds one 600 KiB file; the next ones
        // find it spent, until it refills.
        let skipped = got
            .iter()
            .filter(|e| e.get("create_file_md5_skipped") == Some("budget"))
            .count();
        assert!(skipped >= 2, "{skipped} skipped");
        assert_eq!(got[0].get("create_file_md5_skipped"), Some(""));
        assert!(counters.bytes.load(Ordering::Relaxed) <= 2 * (600 << 10));
        assert_eq!(counters.skipped(HashSkip::Budget), skipped as u64);
    }

    #[test]
    fn stopping_hashes_no_longer_than_the_grace() {
        let dir = dir("stop");
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(FileHashCounters::default());
        let mut c = cfg(60_000, 64);
        c.stop_grace = Duration::ZERO;
        let hasher =
            FileHasher::start(c, stop.clone(), counters, move |ev| tx.send(ev).is_ok()).unwrap();
        for _ in 0..50 {
            assert!(hasher
                .submit(created(f.to_str().unwrap(), "open"))
                .is_none());
        }
        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert!(hasher.finish(Duration::from_secs(5)).is_empty());
        assert!(t.elapsed() < Duration::from_secs(1));
        let got: Vec<Event> = rx.iter().collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.len(), 50);
        assert!(got
            .iter()
            .all(|e| e.get("create_file_md5_skipped") == Some("stopping")));
    }
}
