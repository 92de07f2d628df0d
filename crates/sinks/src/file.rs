//! A file, appended to. `reopen` (on SIGHUP) follows log rotation: the
//! rotated file keeps what was written, new lines go to a new file at the
//! configured path.
//!
//! The file is opened through [`crate::safe`] (no symlinks, no file another
//! user made or can write), created 0640 or narrowed to it.
//!
//! A write that fails (a full disk) drops what it could not write: the
//! buffer never holds lines back for a retry, so a disk that fills up does
//! not jam the sink, a SIGHUP re-opens at once, and the old file's
//! descriptor is closed (a deleted file's space comes back). What was
//! dropped is reported by [`super::Sink::lost`]; a line torn by a partial
//! write is ended with a newline before the next line goes out.
//!
//! With a size cap, a line that would take the file past it either rotates
//! the file (`NAME` → `NAME.1` → ... → `NAME.KEEP`, the oldest deleted) or,
//! with `keep = 0`, is refused until a SIGHUP finds a smaller file.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::safe::{self, Dir, FileMode};

const BUFFER: usize = 64 * 1024;

/// Mode of an event file.
pub const EVENTS_MODE: FileMode = FileMode {
    mode: 0o640,
    truncate: false,
};

/// Size cap of a file output.
#[derive(Debug, Clone, Default)]
pub struct FileLimits {
    /// Largest size of the file, in bytes; None: no cap.
    pub max_bytes: Option<u64>,
    /// Rotated files kept at the cap; 0: stop writing instead.
    pub keep: u32,
    /// Counted by the sink.
    pub stats: Arc<FileStats>,
}

/// What a file sink counts.
#[derive(Debug, Default)]
pub struct FileStats {
    /// Times the file was rotated at its size cap.
    pub rotations: AtomicU64,
    /// Events refused because the file was at its size cap (keep = 0).
    pub capped: AtomicU64,
}

/// Appends lines to a file.
pub struct FileSink {
    path: PathBuf,
    dir: Dir,
    name: OsString,
    file: File,
    /// Bytes in the file (as of opening, plus what was written).
    size: u64,
    buf: Vec<u8>,
    buf_lines: u64,
    /// Lines accepted since the last flush that were not written.
    lost: u64,
    /// The first write error since the last flush.
    error: Option<io::Error>,
    /// The file ends in the middle of a line.
    torn: bool,
    limits: FileLimits,
    /// Whether the cap has been logged since the last re-open.
    cap_logged: bool,
}

fn open(path: &Path) -> io::Result<(Dir, OsString, File, u64)> {
    let (dir, file) = safe::open_file(path, EVENTS_MODE)?;
    let name = path.file_name().unwrap_or_default().to_os_string();
    let size = file.metadata()?.len();
    Ok((dir, name, file, size))
}

impl FileSink {
    /// Opens (creating if needed) `path` for appending, without a cap.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, FileLimits::default())
    }

    /// Opens (creating if needed) `path` for appending, capped by `limits`.
    pub fn open_with(path: &Path, limits: FileLimits) -> io::Result<Self> {
        let (dir, name, file, size) = open(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            dir,
            name,
            file,
            size,
            buf: Vec::with_capacity(BUFFER),
            buf_lines: 0,
            lost: 0,
            error: None,
            torn: false,
            limits,
            cap_logged: false,
        })
    }

    /// Writes the buffer out; what cannot be written is dropped and
    /// counted in `lost`.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.torn {
            match self.file.write(b"\n") {
                Ok(1) => {
                    self.torn = false;
                    self.size += 1;
                }
                Ok(_) => {}
                Err(e) => return self.drop_buffer(0, e),
            }
            if self.torn {
                return self.drop_buffer(0, io::ErrorKind::WriteZero.into());
            }
        }
        let mut done = 0;
        while done < self.buf.len() {
            match self.file.write(&self.buf[done..]) {
                Ok(0) => return self.drop_buffer(done, io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    self.size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.drop_buffer(done, e),
            }
        }
        self.buf.clear();
        self.buf_lines = 0;
    }

    /// Drops the buffer after `written` bytes of it went out.
    fn drop_buffer(&mut self, written: usize, e: io::Error) {
        let whole = self.buf[..written].iter().filter(|&&b| b == b'\n').count() as u64;
        self.lost += self.buf_lines - whole;
        if written > 0 && self.buf[written - 1] != b'\n' {
            self.torn = true;
        }
        self.buf.clear();
        self.buf_lines = 0;
        if self.error.is_none() {
            self.error = Some(io::Error::new(
                e.kind(),
                format!("writing {}: {e}", self.path.display()),
            ));
        }
    }

    /// Makes room for `len` more bytes under the cap: Ok(false) when the
    /// line must be refused.
    fn room_for(&mut self, len: usize) -> io::Result<bool> {
        let Some(max) = self.limits.max_bytes else {
            return Ok(true);
        };
        let projected = self.size + self.buf.len() as u64 + len as u64;
        // An empty file takes one line whatever its size.
        if projected <= max || self.size + self.buf.len() as u64 == 0 {
            return Ok(true);
        }
        if self.limits.keep == 0 {
            return Ok(false);
        }
        self.write_out();
        self.rotate()?;
        Ok(true)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |i: u32| {
            let mut n = self.name.clone();
            n.push(format!(".{i}"));
            n
        };
        for i in (1..self.limits.keep).rev() {
            match self.dir.rename(&numbered(i), &numbered(i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(file = %self.path.display(), error = %e, "rotating the output file: cannot rename an old file")
                }
                _ => {}
            }
        }
        self.dir.rename(&self.name, &numbered(1)).map_err(|e| {
            io::Error::new(e.kind(), format!("rotating {}: {e}", self.path.display()))
        })?;
        self.file = self.dir.open_file(&self.name, EVENTS_MODE)?;
        self.size = self.file.metadata()?.len();
        self.torn = false;
        self.limits.stats.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(file = %self.path.display(), keep = self.limits.keep, "output file rotated at its size cap (output_max_bytes)");
        Ok(())
    }
}

impl super::Sink for FileSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if !self.room_for(line.len())? {
            self.limits.stats.capped.fetch_add(1, Ordering::Relaxed);
            let max = self.limits.max_bytes.unwrap_or(0);
            if !self.cap_logged {
                tracing::warn!(file = %self.path.display(), max_bytes = max, "the output file reached its size cap: events are dropped (counted in output_capped) until a SIGHUP re-opens a smaller file");
                self.cap_logged = true;
            }
            return Err(io::Error::other(format!(
                "{} reached output_max_bytes ({max}); events dropped until re-opened",
                self.path.display()
            )));
        }
        if self.buf.len() + line.len() > BUFFER {
            self.write_out();
        }
        self.buf.extend_from_slice(line);
        self.buf_lines += 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn lost(&mut self, _pending: u64) -> u64 {
        std::mem::take(&mut self.lost)
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Lines buffered so far belong to the old file; what cannot be
        // written there is dropped (the caller counts it from `lost`), so
        // that a full disk does not keep the old file open.
        self.write_out();
        // The loss is the re-open's to report, not the next flush's.
        if let Some(e) = self.error.take() {
            tracing::warn!(error = %e, "the old output file could not take its last lines");
        }
        let (dir, name, file, size) = open(&self.path)?;
        (self.dir, self.name, self.file, self.size) = (dir, name, file, size);
        self.torn = false;
        self.cap_logged = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sink;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kestrel-sink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = scratch("reopen");
        let path = dir.join("events.json");
        let mut s = FileSink::open(&path).unwrap();
        s.write_line(b"one\n").unwrap();
        s.flush().unwrap();
        std::fs::rename(&path, dir.join("events.json.1")).unwrap();
        s.write_line(b"two\n").unwrap();
        s.reopen().unwrap();
        s.write_line(b"three\n").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("events.json.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cap_rotates_or_stops() {
        let dir = scratch("cap");
        let path = dir.join("e");
        let limits = FileLimits {
            max_bytes: Some(10),
            keep: 2,
            stats: Arc::default(),
        };
        let mut s = FileSink::open_with(&path, limits.clone()).unwrap();
        for l in [
            "aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n",
        ] {
            s.write_line(l.as_bytes()).unwrap();
        }
        s.flush().unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(read("e"), "gggg\n");
        assert_eq!(read("e.1"), "eeee\nffff\n");
        assert_eq!(read("e.2"), "cccc\ndddd\n");
        assert!(!dir.join("e.3").exists());
        assert_eq!(limits.stats.rotations.load(Ordering::Relaxed), 3);

        let stop = FileLimits {
            max_bytes: Some(10),
            keep: 0,
            stats: Arc::default(),
        };
        let path = dir.join("s");
        let mut s = FileSink::open_with(&path, stop.clone()).unwrap();
        s.write_line(b"aaaa\n").unwrap();
        s.write_line(b"bbbb\n").unwrap();
        assert!(s.write_line(b"cccc\n").is_err());
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "aaaa\nbbbb\n");
        assert_eq!(stop.stats.capped.load(Ordering::Relaxed), 1);
        std::fs::rename(&path, dir.join("s.old")).unwrap();
        s.reopen().unwrap();
        s.write_line(b"dddd\n").unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "dddd\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
