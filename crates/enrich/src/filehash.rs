//! The content hash of created files (`create_file_md5`), taken once the
//! creator had time to write them.
//!
//! A file is reported when it is created, empty; hashing it then would
//! give every new file the MD5 of nothing. File creation events wait here
//! for [`FileHashConfig::delay`], in creation order, on a thread of their
//! own (reading a large file must not hold up the thread that drains the
//! ring buffer), then go on to `deliver`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kestrel_event::Event;

use crate::Md5Cache;

/// Settings of the delayed hash.
#[derive(Debug, Clone)]
pub struct FileHashConfig {
    /// Time between a file's creation and the hash of its content.
    pub delay: Duration,
    /// Files larger than this are not hashed.
    pub max_bytes: u64,
    /// Events waiting at most; when full, [`FileHasher::submit`] waits.
    pub queue: usize,
}

/// The hashing thread and its queue.
pub struct FileHasher {
    tx: SyncSender<(Instant, Event)>,
    thread: JoinHandle<()>,
}

impl FileHasher {
    /// Starts the thread. Events go to `deliver` once hashed; `deliver`
    /// returning false (nobody takes events any more) ends the thread.
    /// Once `stop` is set, waiting events are hashed at once.
    pub fn start(
        cfg: FileHashConfig,
        stop: Arc<AtomicBool>,
        deliver: impl FnMut(Event) -> bool + Send + 'static,
    ) -> std::io::Result<FileHasher> {
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("kestrel-filehash".into())
            .spawn(move || hash_loop(rx, cfg, &stop, deliver))?;
        Ok(FileHasher { tx, thread })
    }

    /// Queues a file creation event, waiting while the queue is full.
    /// Gives the event back when the thread has ended.
    pub fn submit(&self, ev: Event) -> Result<(), Event> {
        self.tx.send((Instant::now(), ev)).map_err(|back| back.0 .1)
    }

    /// Closes the queue and waits until every event in it went on.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// Sets `create_file_md5` on a file creation event from the file's current
/// content. Files made with O_TMPFILE have no name to open, and a path
/// that is not absolute (truncated: "...") names nothing.
fn hash_created_file(ev: &mut Event, hashes: &mut Md5Cache) {
    if ev.get("create_type") == Some("tmpfile") {
        return;
    }
    let path = ev.get("file_path").unwrap_or("");
    if !path.starts_with('/') {
        return;
    }
    if let Ok(h) = hashes.md5_of(Path::new(path)) {
        ev.set("create_file_md5", h);
    }
}

fn hash_loop(
    rx: Receiver<(Instant, Event)>,
    cfg: FileHashConfig,
    stop: &AtomicBool,
    mut deliver: impl FnMut(Event) -> bool,
) {
    // A file written repeatedly with the same content is read once.
    let mut hashes = Md5Cache::new(64, cfg.max_bytes);
    for (created, mut ev) in rx {
        let due = created + cfg.delay;
        while !stop.load(Ordering::Relaxed) && Instant::now() < due {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
        }
        hash_created_file(&mut ev, &mut hashes);
        if !deliver(ev) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(path: &str, kind: &str) -> Event {
        let mut ev = Event::with_capacity(3);
        ev.push("file_path", path.to_string());
        ev.push("create_file_md5", "");
        ev.push("create_type", kind.to_string());
        ev
    }

    #[test]
    fn hashes_after_the_delay_in_order() {
        let dir = std::env::temp_dir().join(format!("kestrel-filehash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, b"").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let hasher = FileHasher::start(
            FileHashConfig {
                delay: Duration::from_millis(200),
                max_bytes: 1 << 20,
                queue: 4,
            },
            Arc::new(AtomicBool::new(false)),
            move |ev| tx.send(ev).is_ok(),
        )
        .unwrap();
        hasher.submit(created(a.to_str().unwrap(), "open")).unwrap();
        hasher.submit(created("/tmp", "tmpfile")).unwrap();
        hasher.submit(created("...truncated", "open")).unwrap();
        // Written after its creation was reported, before the delay ends.
        std::fs::write(&a, b"hello").unwrap();
        hasher.finish();
        let got: Vec<Event> = rx.iter().collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].get("create_file_md5"),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
        assert_eq!(got[1].get("create_file_md5"), Some(""));
        assert_eq!(got[2].get("create_file_md5"), Some(""));
    }
}
