//! Tailing a log file across rotation, with a persisted read position.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default cap on one line; longer lines are skipped and counted.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Default cap on the bytes read by one [`LogFollower::poll`].
pub const DEFAULT_MAX_BATCH: u64 = 4 * 1024 * 1024;

/// How a [`LogFollower`] behaves.
#[derive(Debug, Clone)]
pub struct FollowerOptions {
    /// Where the read position is kept; `None` keeps it in memory only.
    pub state_path: Option<PathBuf>,
    /// Without a usable state, start at the end of the file (only new lines)
    /// rather than at its beginning.
    pub start_at_end: bool,
    /// Lines longer than this many bytes are skipped.
    pub max_line: usize,
    /// At most this many bytes are read per poll (the rest on the next).
    pub max_batch: u64,
}

impl Default for FollowerOptions {
    fn default() -> Self {
        FollowerOptions {
            state_path: None,
            start_at_end: true,
            max_line: DEFAULT_MAX_LINE,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// The persisted read position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    path: PathBuf,
    dev: u64,
    inode: u64,
    /// Start of the first byte not yet returned as part of a line.
    offset: u64,
    /// The bytes before `offset` are the start of an over-long line whose
    /// rest must be skipped.
    #[serde(default)]
    skipping: bool,
}

/// Follows a log file like `tail -F`, returning complete new lines.
///
/// * Rotation by rename and re-create is noticed by the path's inode
///   changing: the old file is read to its end first, then the new one from
///   its start.
/// * Truncation in place (logrotate's `copytruncate`) is noticed by the file
///   becoming smaller than the read position: reading restarts at 0.
/// * After each poll the position (path, device, inode, offset) is written
///   to the state file atomically (temporary file + rename); a new follower
///   resumes there, also when the file was rotated meanwhile (the old file is
///   looked for next to the path by its inode and finished first).
/// * Memory is bounded: one partial line of at most `max_line` bytes.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    opts: FollowerOptions,
    file: Option<File>,
    dev: u64,
    inode: u64,
    /// Where `file` is positioned.
    read_pos: u64,
    /// Start of the first byte not yet returned (what is persisted).
    committed: u64,
    partial: Vec<u8>,
    skipping: bool,
    skipped_lines: u64,
    saved: Option<State>,
    buf: Vec<u8>,
}

fn ident(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn stat(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `data` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over `path`.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        // Read positions say what root's logs hold: root's alone.
        let mut f = std::os::unix::fs::OpenOptionsExt::mode(
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            0o600,
        )
        .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

impl LogFollower {
    /// Follows `path` (which need not exist yet) with the position from
    /// `opts.state_path` when that state is for the same path.
    pub fn open(path: impl Into<PathBuf>, opts: FollowerOptions) -> io::Result<Self> {
        let mut f = LogFollower {
            path: path.into(),
            opts,
            file: None,
            dev: 0,
            inode: 0,
            read_pos: 0,
            committed: 0,
            partial: Vec::new(),
            skipping: false,
            skipped_lines: 0,
            saved: None,
            buf: vec![0; 64 * 1024],
        };
        let state = f.load_state();
        let current = stat(&f.path)?;
        match (state, current.as_ref()) {
            (Some(st), Some(meta)) if (st.dev, st.inode) == ident(meta) => {
                if meta.len() >= st.offset {
                    f.open_current(st.offset)?;
                    f.skipping = st.skipping;
                } else {
                    // Truncated while we were not running.
                    f.open_current(0)?;
                }
                f.saved = Some(st);
            }
            (Some(st), _) => {
                // Rotated while we were not running: finish the old file if
                // it is still next to the path, then take the new one.
                if let Some(old) = f.find_rotated(st.dev, st.inode) {
                    let mut file = File::open(&old)?;
                    let len = file.metadata()?.len();
                    let offset = if len >= st.offset { st.offset } else { 0 };
                    file.seek(SeekFrom::Start(offset))?;
                    f.file = Some(file);
                    f.dev = st.dev;
                    f.inode = st.inode;
                    f.read_pos = offset;
                    f.committed = offset;
                    f.skipping = st.skipping && offset == st.offset;
                } else if current.is_some() {
                    f.open_current(0)?;
                }
                f.saved = Some(st);
            }
            (None, Some(meta)) => {
                let start = if f.opts.start_at_end { meta.len() } else { 0 };
                f.open_current(start)?;
            }
            (None, None) => {}
        }
        Ok(f)
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many over-long lines were skipped so far.
    pub fn skipped_lines(&self) -> u64 {
        self.skipped_lines
    }

    /// The current (inode, offset of the first unreturned byte).
    pub fn position(&self) -> (u64, u64) {
        (self.inode, self.committed)
    }

    fn load_state(&self) -> Option<State> {
        let sp = self.opts.state_path.as_ref()?;
        let data = fs::read(sp).ok()?;
        match serde_json::from_slice::<State>(&data) {
            Ok(st) if st.path == self.path => Some(st),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(state = %sp.display(), error = %e, "ignoring unreadable follower state");
                None
            }
        }
    }

    fn find_rotated(&self, dev: u64, inode: u64) -> Option<PathBuf> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = self.path.file_name()?.to_str()?;
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| n.starts_with(base)) {
                continue;
            }
            let p = entry.path();
            if let Ok(meta) = fs::metadata(&p) {
                if ident(&meta) == (dev, inode) && meta.is_file() {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Opens the file now at `path`, positioned at `offset`. False if it
    /// does not exist.
    fn open_current(&mut self, offset: u64) -> io::Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        file.seek(SeekFrom::Start(offset))?;
        (self.dev, self.inode) = ident(&meta);
        self.file = Some(file);
        self.read_pos = offset;
        self.committed = offset;
        self.partial.clear();
        self.skipping = false;
        Ok(true)
    }

    /// Returns the complete lines written since the last poll (without their
    /// newline; invalid UTF-8 bytes escaped as `\xNN`), then persists the
    /// position. A line still being written is returned once complete.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut budget = self.opts.max_batch;
        loop {
            if self.file.is_none() && !self.open_current(0)? {
                break;
            }
            let current = stat(&self.path)?;
            let rotated = current
                .as_ref()
                .is_some_and(|m| ident(m) != (self.dev, self.inode));
            if let Some(meta) = current.as_ref().filter(|_| !rotated) {
                if meta.len() < self.read_pos {
                    // Truncated in place: start over.
                    tracing::debug!(path = %self.path.display(), "log file truncated");
                    if let Some(f) = self.file.as_mut() {
                        f.seek(SeekFrom::Start(0))?;
                    }
                    self.read_pos = 0;
                    self.committed = 0;
                    self.partial.clear();
                    self.skipping = false;
                }
            }
            if !self.read_available(&mut out, &mut budget)? {
                break; // budget used up; continue on the next poll
            }
            if !rotated {
                break;
            }
            // The old file is read to its end: a last unterminated line
            // will get no newline any more.
            tracing::debug!(path = %self.path.display(), "log file rotated");
            if !self.partial.is_empty() && !self.skipping {
                out.push(kestrel_event::lossless_string(&self.partial));
            }
            self.file = None;
            if !self.open_current(0)? {
                break;
            }
        }
        self.persist();
        Ok(out)
    }

    /// Reads to the end of the file or of the budget. True at end of file.
    fn read_available(&mut self, out: &mut Vec<String>, budget: &mut u64) -> io::Result<bool> {
        let Some(mut file) = self.file.take() else {
            return Ok(true);
        };
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            if *budget == 0 {
                break Ok(false);
            }
            let want = buf
                .len()
                .min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => break Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            *budget -= n as u64;
            self.consume(&buf[..n], out);
        };
        self.buf = buf;
        self.file = Some(file);
        result
    }

    fn consume(&mut self, data: &[u8], out: &mut Vec<String>) {
        let max = self.opts.max_line;
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let seg = &rest[..i];
                    if self.skipping {
                        self.skipping = false;
                    } else if self.partial.len() + seg.len() > max {
                        self.skipped_lines += 1;
                        self.partial.clear();
                    } else {
                        self.partial.extend_from_slice(seg);
                        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
                        out.push(kestrel_event::lossless_string(line));
                        self.partial.clear();
                    }
                    self.read_pos += i as u64 + 1;
                    self.committed = self.read_pos;
                    rest = &rest[i + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.partial.len() + rest.len() > max {
                            tracing::debug!(path = %self.path.display(), "skipping an over-long line");
                            self.skipping = true;
                            self.skipped_lines += 1;
                            self.partial.clear();
                        } else {
                            self.partial.extend_from_slice(rest);
                        }
                    }
                    self.read_pos += rest.len() as u64;
                    if self.skipping {
                        // Nothing of this line is kept: resume after it.
                        self.committed = self.read_pos;
                    }
                    rest = &[];
                }
            }
        }
    }

    fn persist(&mut self) {
        let Some(sp) = self.opts.state_path.clone() else {
            return;
        };
        if self.file.is_none() {
            return;
        }
        let st = State {
            path: self.path.clone(),
            dev: self.dev,
            inode: self.inode,
            offset: self.committed,
            skipping: self.skipping,
        };
        if self.saved.as_ref() == Some(&st) {
            return;
        }
        let data = serde_json::to_vec(&st).expect("state serializes");
        match write_atomic(&sp, &data) {
            Ok(()) => self.saved = Some(st),
            Err(e) => {
                tracing::warn!(state = %sp.display(), error = %e, "cannot save follower state")
            }
        }
    }
}
