//! An on-disk, write-ahead spool of JSON lines.
//!
//! Every event is appended here before anything tries to deliver it; a
//! committed index advances as deliveries are acknowledged, and segments
//! wholly below it are deleted. What is not acknowledged when the agent
//! stops (or crashes) is read again at the next start.
//!
//! Layout: `DIR/<first index, 20 digits>.seg` files, each a run of records
//! `[len: u32 LE][crc32(len bytes ++ payload): u32 LE][payload]`, and
//! `DIR/committed`, the index of the first record not yet acknowledged
//! (rewritten through a temporary file and a rename). Record indexes grow
//! across restarts: a segment's name gives the index of its first record.
//!
//! Recovery scans every segment: at the first record whose header is short,
//! whose length is zero or too large, or whose checksum does not match, the
//! file is truncated. A crash can only tear the last record of the last
//! segment; anything else is corruption, logged and counted in
//! [`SpoolStats::corrupt`]. A bad record is never handed out.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEADER: u64 = 8;
/// The largest record the spool accepts or believes when reading back.
pub const MAX_RECORD: usize = 4 << 20;

/// What to do when a new record would take the spool past its size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Delete the oldest segment (its undelivered records are dropped).
    DropOldest,
    /// Refuse the new record.
    DropNewest,
}

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// At every flush (the agent flushes after each batch it writes).
    Always,
    /// At a flush, when the last fsync is older than this.
    Interval(Duration),
    /// Never: the kernel writes back when it likes. A crash of the agent
    /// alone loses nothing (the page cache survives it); a crash of the
    /// machine may.
    Never,
}

/// Spool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory of the segment files, created if missing.
    pub dir: PathBuf,
    /// Cap on the bytes of all segment files.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Policy once `max_bytes` is reached.
    pub full: FullPolicy,
    /// Fsync policy.
    pub fsync: FsyncPolicy,
}

/// Counters of a spool, readable from any thread.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Records appended.
    pub spooled: AtomicU64,
    /// Records dropped by the full policy (never delivered).
    pub dropped: AtomicU64,
    /// Bytes of the segment files.
    pub bytes: AtomicU64,
    /// Records not yet acknowledged.
    pub pending: AtomicU64,
    /// Records found at start, left by a previous run.
    pub recovered: AtomicU64,
    /// Corrupt or torn records found at start (each truncates its segment).
    pub corrupt: AtomicU64,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    count: u64,
    bytes: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// A reading position in the spool, owned by the reader.
#[derive(Debug, Default)]
pub struct Cursor {
    index: u64,
    file: Option<(u64, File)>,
}

impl Cursor {
    /// A cursor that starts at record `index` (or the first after it).
    pub fn at(index: u64) -> Cursor {
        Cursor { index, file: None }
    }

    /// The next record index this cursor reads.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// The spool. Not thread-safe by itself: share it behind a mutex.
pub struct Spool {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    active: Option<BufWriter<File>>,
    next: u64,
    committed: u64,
    persisted_commit: u64,
    last_persist: Instant,
    /// Records below this index are in the file, visible to readers.
    flushed: u64,
    unsynced: bool,
    last_sync: Instant,
    /// Bumped whenever unacknowledged records are deleted.
    epoch: u64,
    stats: Arc<SpoolStats>,
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the record at the reader's position. `Ok(None)` at a clean end of
/// file; `Err(InvalidData)` at a torn or corrupt record.
fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut head = [0u8; HEADER as usize];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::Error::new(io::ErrorKind::InvalidData, "torn header")),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap());
    let sum = u32::from_le_bytes(head[4..].try_into().unwrap());
    if len == 0 || len as usize > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad record length {len}"),
        ));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(io::ErrorKind::InvalidData, "torn record"),
        _ => e,
    })?;
    if crc(len, buf) != sum {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    Ok(Some(()))
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, recovering what a previous
    /// run left: torn or corrupt tails are truncated, segments already
    /// acknowledged are deleted.
    pub fn open(cfg: SpoolConfig) -> io::Result<Spool> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("spool {}: {what}: {e}", cfg.dir.display()),
            )
        };
        // Events name users, commands and peers: for root only. Walked as
        // the output files are, so that no other user's directory or link
        // decides where segments are created, truncated or deleted.
        let dir =
            crate::safe::open_dir(&cfg.dir, Some(0o700)).map_err(|e| ctx("cannot create", e))?;
        dir.chmod(0o700)
            .map_err(|e| ctx("cannot set permissions", e))?;
        let stats = Arc::new(SpoolStats::default());
        let committed = match fs::read_to_string(cfg.dir.join("committed")) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(dir = %cfg.dir.display(), "spool: unreadable committed index; replaying the whole spool");
                0
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(ctx("cannot read the committed index", e)),
        };
        let mut firsts = Vec::new();
        for ent in fs::read_dir(&cfg.dir).map_err(|e| ctx("cannot list", e))? {
            let name = ent.map_err(|e| ctx("cannot list", e))?.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(first) = n.parse::<u64>() {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut buf = Vec::new();
        let mut prev_end = 0u64;
        for first in firsts {
            let path = seg_path(&cfg.dir, first);
            if first < prev_end {
                // Overlaps the segment before: cannot come from this code.
                tracing::warn!(file = %path.display(), "spool: overlapping segment deleted");
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                fs::remove_file(&path).map_err(|e| ctx("cannot delete a segment", e))?;
                continue;
            }
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| ctx("cannot open a segment", e))?;
            let size = f
                .metadata()
                .map_err(|e| ctx("cannot stat a segment", e))?
                .len();
            let mut r = io::BufReader::with_capacity(256 << 10, &mut f);
            let (mut count, mut good) = (0u64, 0u64);
            loop {
                match read_record(&mut r, &mut buf) {
                    Ok(Some(())) => {
                        count += 1;
                        good += HEADER + buf.len() as u64;
                    }
                    Ok(None) => break,
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        tracing::warn!(
                            file = %path.display(), offset = good, lost_bytes = size - good, error = %e,
                            "spool: torn or corrupt record; the segment is truncated there"
                        );
                        stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(ctx("cannot read a segment", e)),
                }
            }
            drop(r);
            if good < size {
                f.set_len(good)
                    .map_err(|e| ctx("cannot truncate a segment", e))?;
                f.sync_all().map_err(|e| ctx("cannot sync a segment", e))?;
            }
            if count == 0 || first + count <= committed {
                fs::remove_file(&path).map_err(|e| ctx("cannot delete a segment", e))?;
                continue;
            }
            prev_end = first + count;
            segments.push_back(Segment {
                first,
                count,
                bytes: good,
            });
        }
        let next = segments.back().map_or(0, Segment::end).max(committed);
        let spool = Spool {
            cfg,
            segments,
            active: None,
            next,
            committed,
            persisted_commit: committed,
            last_persist: Instant::now(),
            flushed: next,
            unsynced: false,
            last_sync: Instant::now(),
            epoch: 0,
            stats,
        };
        spool
            .stats
            .recovered
            .store(spool.pending(), Ordering::Relaxed);
        spool.update_gauges();
        Ok(spool)
    }

    /// The spool's counters.
    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// The directory of the spool.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Index of the first record not acknowledged.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Index the next appended record gets.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Changes whenever unacknowledged records were deleted (drop-oldest):
    /// a reader must then forget what it sent and start again from
    /// [`Spool::committed`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end().saturating_sub(s.first.max(self.committed)))
            .sum()
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn update_gauges(&self) {
        self.stats
            .bytes
            .store(self.total_bytes(), Ordering::Relaxed);
        self.stats.pending.store(self.pending(), Ordering::Relaxed);
    }

    /// Appends one record. `Ok(false)` when the spool is full and the
    /// record was dropped (drop-newest), counted in `dropped`.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<bool> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a spool record must have 1 to {MAX_RECORD} bytes, not {}",
                    payload.len()
                ),
            ));
        }
        let rec = HEADER + payload.len() as u64;
        if !self.make_room(rec)? {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let roll = match (self.active.is_some(), self.segments.back()) {
            (true, Some(s)) => s.count > 0 && s.bytes + rec > self.cfg.segment_bytes,
            _ => true,
        };
        if roll {
            self.roll()?;
        }
        let len = payload.len() as u32;
        let w = self.active.as_mut().expect("rolled above");
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&crc(len, payload).to_le_bytes())?;
        w.write_all(payload)?;
        let seg = self.segments.back_mut().expect("rolled above");
        seg.count += 1;
        seg.bytes += rec;
        self.next += 1;
        self.stats.spooled.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Closes the active segment and starts a new, empty one.
    fn roll(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.active.take() {
            w.flush()?;
            if self.cfg.fsync != FsyncPolicy::Never {
                w.get_ref().sync_data()?;
            }
            self.flushed = self.next;
        }
        // An empty active segment (nothing appended yet) is replaced.
        if self.segments.back().is_some_and(|s| s.count == 0) {
            let s = self.segments.pop_back().unwrap();
            let _ = fs::remove_file(seg_path(&self.cfg.dir, s.first));
        }
        let path = seg_path(&self.cfg.dir, self.next);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
            })?;
        self.active = Some(BufWriter::with_capacity(256 << 10, f));
        self.segments.push_back(Segment {
            first: self.next,
            count: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// Makes room for `rec` bytes under the cap; false to drop the record.
    fn make_room(&mut self, rec: u64) -> io::Result<bool> {
        loop {
            if self.total_bytes() + rec <= self.cfg.max_bytes {
                return Ok(true);
            }
            // Acknowledged records still on disk are freed first.
            if self
                .segments
                .back()
                .is_some_and(|s| s.count > 0 && s.end() <= self.committed)
            {
                self.roll()?;
                self.delete_acknowledged();
                continue;
            }
            match self.cfg.full {
                FullPolicy::DropNewest => return Ok(false),
                FullPolicy::DropOldest => {
                    if self.segments.len() < 2 {
                        if self.segments.back().is_some_and(|s| s.count > 0) {
                            self.roll()?;
                        } else {
                            // Nothing left to delete: the record alone is
                            // larger than the cap.
                            return Ok(false);
                        }
                    }
                    let s = self.segments.pop_front().unwrap();
                    let lost = s.end().saturating_sub(s.first.max(self.committed));
                    self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
                    self.committed = self.committed.max(s.end());
                    self.epoch += 1;
                    fs::remove_file(seg_path(&self.cfg.dir, s.first))?;
                    self.update_gauges();
                }
            }
        }
    }

    /// Writes buffered records to the file, fsyncs per the policy, and
    /// persists the committed index when it is due.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = self.active.as_mut() {
            if self.flushed != self.next {
                w.flush()?;
                self.unsynced = true;
            }
            let sync = match self.cfg.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
                FsyncPolicy::Never => false,
            };
            if sync && self.unsynced {
                w.get_ref().sync_data()?;
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
        }
        self.flushed = self.next;
        self.update_gauges();
        if self.last_persist.elapsed() >= Duration::from_millis(500) {
            self.persist_commit()?;
        }
        Ok(())
    }

    /// Marks every record below `index` acknowledged and deletes the
    /// segments wholly below it.
    pub fn commit(&mut self, index: u64) {
        if index <= self.committed {
            return;
        }
        self.committed = index.min(self.next);
        self.delete_acknowledged();
        // Once everything is delivered a large active segment is closed
        // so that its space comes back.
        if self.committed == self.next
            && self
                .segments
                .back()
                .is_some_and(|s| s.bytes >= self.cfg.segment_bytes / 16)
        {
            if let Err(e) = self.roll() {
                tracing::warn!(error = %e, "spool: cannot start a new segment");
            }
            self.delete_acknowledged();
        }
        self.update_gauges();
    }

    fn delete_acknowledged(&mut self) {
        while self.segments.len() > 1 && self.segments[0].end() <= self.committed {
            let s = self.segments.pop_front().unwrap();
            if let Err(e) = fs::remove_file(seg_path(&self.cfg.dir, s.first)) {
                tracing::warn!(error = %e, "spool: cannot delete a delivered segment");
            }
        }
        // The only segment, not open for appending (left by a previous run).
        if self.active.is_none()
            && self.segments.len() == 1
            && self.segments[0].end() <= self.committed
        {
            let s = self.segments.pop_front().unwrap();
            let _ = fs::remove_file(seg_path(&self.cfg.dir, s.first));
        }
    }

    /// Writes the committed index to disk (temporary file, fsync, rename).
    pub fn persist_commit(&mut self) -> io::Result<()> {
        self.last_persist = Instant::now();
        if self.persisted_commit == self.committed {
            return Ok(());
        }
        let tmp = self.cfg.dir.join("committed.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", self.committed)?;
        if self.cfg.fsync != FsyncPolicy::Never {
            f.sync_data()?;
        }
        fs::rename(&tmp, self.cfg.dir.join("committed"))?;
        self.persisted_commit = self.committed;
        Ok(())
    }

    /// Reads up to `max` records at and after the cursor that are flushed
    /// and not acknowledged, as (index, payload).
    pub fn read(
        &mut self,
        cur: &mut Cursor,
        max: usize,
        out: &mut VecDeque<(u64, Vec<u8>)>,
    ) -> io::Result<()> {
        if cur.index < self.committed {
            *cur = Cursor::at(self.committed);
        }
        let mut n = 0;
        while n < max && cur.index < self.flushed {
            let Some(seg) = self.segments.iter().find(|s| s.end() > cur.index) else {
                break;
            };
            let (first, end) = (seg.first, seg.end());
            if cur.index < first {
                *cur = Cursor::at(first);
            }
            if cur.file.as_ref().is_none_or(|(f, _)| *f != first) {
                let mut f = File::open(seg_path(&self.cfg.dir, first))?;
                // Skip to the record by its headers.
                let mut head = [0u8; HEADER as usize];
                let mut off = 0u64;
                for _ in first..cur.index {
                    f.read_exact(&mut head)?;
                    let len = u32::from_le_bytes(head[..4].try_into().unwrap());
                    off += HEADER + len as u64;
                    f.seek(SeekFrom::Start(off))?;
                }
                cur.file = Some((first, f));
            }
            let (_, f) = cur.file.as_mut().unwrap();
            let mut buf = Vec::new();
            match read_record(f, &mut buf) {
                Ok(Some(())) => {
                    out.push_back((cur.index, buf));
                    cur.index += 1;
                    n += 1;
                }
                Ok(None) | Err(_) if cur.index < end => {
                    // The disk changed under us after recovery: skip the
                    // rest of the segment rather than hand out garbage.
                    tracing::error!(
                        segment = first,
                        index = cur.index,
                        "spool: unreadable record; skipping the rest of its segment"
                    );
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    *cur = Cursor::at(end);
                }
                Ok(None) => *cur = Cursor::at(end),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.flush().and_then(|()| self.persist_commit()) {
            tracing::error!(dir = %self.cfg.dir.display(), error = %e, "spool: final flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max: u64, seg: u64, full: FullPolicy) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: seg,
            full,
            fsync: FsyncPolicy::Always,
        }
    }

    fn rec(i: u64) -> Vec<u8> {
        format!(
            "{{\"n\":\"{i}\",\"pad\":\"{}\"}}",
            "x".repeat((i % 50) as usize)
        )
        .into_bytes()
    }

    fn read_all(s: &mut Spool) -> Vec<(u64, Vec<u8>)> {
        let mut out = VecDeque::new();
        let mut cur = Cursor::at(0);
        s.read(&mut cur, usize::MAX, &mut out).unwrap();
        out.into()
    }

    #[test]
    fn appends_reads_commits_and_recovers() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(d.path(), 1 << 20, 4096, FullPolicy::DropNewest)).unwrap();
        for i in 0..1000 {
            assert!(s.append(&rec(i)).unwrap());
        }
        // Records of the open segment are not visible before a flush (closed
        // segments are).
        assert!(read_all(&mut s).len() < 1000);
        s.flush().unwrap();
        let got = read_all(&mut s);
        assert_eq!(got.len(), 1000);
        for (i, (idx, p)) in got.iter().enumerate() {
            assert_eq!(*idx, i as u64);
            assert_eq!(p, &rec(i as u64));
        }
        s.commit(400);
        assert_eq!(s.pending(), 600);
        drop(s);
        let mut s = Spool::open(cfg(d.path(), 1 << 20, 4096, FullPolicy::DropNewest)).unwrap();
        assert_eq!(s.committed(), 400);
        assert_eq!(s.next_index(), 1000);
        assert_eq!(s.stats().recovered.load(Ordering::Relaxed), 600);
        let got = read_all(&mut s);
        assert_eq!(got.first().unwrap().0, 400);
        assert_eq!(got.len(), 600);
        // Indexes go on after a restart.
        s.append(b"after").unwrap();
        s.flush().unwrap();
        assert_eq!(read_all(&mut s).last().unwrap(), &(1000, b"after".to_vec()));
        s.commit(1001);
        s.flush().unwrap();
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn torn_tail_is_cut_not_replayed() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(d.path(), 1 << 20, 1 << 20, FullPolicy::DropNewest)).unwrap();
        for i in 0..10 {
            s.append(&rec(i)).unwrap();
        }
        drop(s);
        let seg = seg_path(d.path(), 0);
        let len = fs::metadata(&seg).unwrap().len();
        // Every possible tear inside the last record, and trailing zeros.
        let last = HEADER + rec(9).len() as u64;
        let orig = fs::read(&seg).unwrap();
        for cut in 1..last {
            fs::write(&seg, &orig[..(len - cut) as usize]).unwrap();
            let mut s =
                Spool::open(cfg(d.path(), 1 << 20, 1 << 20, FullPolicy::DropNewest)).unwrap();
            let got = read_all(&mut s);
            assert_eq!(got.len(), 9, "cut {cut}");
            assert_eq!(s.stats().corrupt.load(Ordering::Relaxed), 1);
            drop(s);
        }
        fs::write(&seg, &orig).unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0u8; 4096]);
        fs::write(&seg, &bytes).unwrap();
        let mut s = Spool::open(cfg(d.path(), 1 << 20, 1 << 20, FullPolicy::DropNewest)).unwrap();
        assert_eq!(read_all(&mut s).len(), 10);
        // The zeros were cut off: new records follow the good ones.
        s.append(b"next").unwrap();
        s.flush().unwrap();
        drop(s);
        let mut s = Spool::open(cfg(d.path(), 1 << 20, 1 << 20, FullPolicy::DropNewest)).unwrap();
        assert_eq!(read_all(&mut s).len(), 11);
    }

    #[test]
    fn random_corruption_never_yields_garbage() {
        let d = tempfile::tempdir().unwrap();
        let originals: Vec<Vec<u8>> = (0..300).map(rec).collect();
        // A small deterministic generator: the test must not be flaky.
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let _ = fs::remove_dir_all(d.path());
            let mut s = Spool::open(cfg(d.path(), 1 << 20, 8192, FullPolicy::DropNewest)).unwrap();
            for r in &originals {
                s.append(r).unwrap();
            }
            drop(s);
            let mut segs: Vec<_> = fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect();
            segs.sort();
            let victim = &segs[(rnd() % segs.len() as u64) as usize];
            let mut bytes = fs::read(victim).unwrap();
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() % bytes.len() as u64) as usize;
                bytes[at] ^= 1 << (rnd() % 8);
            }
            fs::write(victim, &bytes).unwrap();
            let mut s = Spool::open(cfg(d.path(), 1 << 20, 8192, FullPolicy::DropNewest)).unwrap();
            let got = read_all(&mut s);
            assert!(
                got.len() < originals.len(),
                "round {round}: corruption unnoticed"
            );
            assert!(s.stats().corrupt.load(Ordering::Relaxed) >= 1);
            for (idx, p) in &got {
                assert_eq!(
                    p, &originals[*idx as usize],
                    "round {round}: garbage at {idx}"
                );
            }
        }
    }

    #[test]
    fn drop_newest_is_exact() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(d.path(), 10_000, 2_000, FullPolicy::DropNewest)).unwrap();
        let payload = [b'a'; 92]; // 100 bytes with the header
        let mut kept = 0;
        for _ in 0..250 {
            if s.append(&payload).unwrap() {
                kept += 1;
            }
        }
        assert_eq!(kept, 100);
        assert_eq!(s.stats().dropped.load(Ordering::Relaxed), 150);
        s.flush().unwrap();
        let got = read_all(&mut s);
        assert_eq!(got.len(), 100);
        assert_eq!(got.last().unwrap().0, 99);
        // Once delivered, there is room again.
        s.commit(100);
        assert!(s.append(&payload).unwrap());
    }

    #[test]
    fn drop_oldest_is_exact() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(d.path(), 10_000, 2_000, FullPolicy::DropOldest)).unwrap();
        let payload = [b'a'; 92];
        for _ in 0..250 {
            assert!(s.append(&payload).unwrap());
        }
        s.flush().unwrap();
        let dropped = s.stats().dropped.load(Ordering::Relaxed);
        let got = read_all(&mut s);
        // Whole 20-record segments go: the newest records are all kept.
        assert_eq!(dropped % 20, 0);
        assert_eq!(got.len() as u64 + dropped, 250);
        assert_eq!(got.first().unwrap().0, dropped);
        assert_eq!(got.last().unwrap().0, 249);
        assert!(s.stats().bytes.load(Ordering::Relaxed) <= 10_000);
    }
}
