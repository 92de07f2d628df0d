//! A file, appended to. `reopen` (on SIGHUP) follows log rotation: the
//! rotated file keeps what was written, new lines go to a new file at the
//! configured path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Appends lines to a file.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        // Events name users, commands and peers: not for everyone to read.
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

impl FileSink {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(FileSink {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, open(path)?),
        })
    }
}

impl super::Sink for FileSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Lines buffered so far belong to the old file.
        self.out.flush()?;
        self.out = BufWriter::with_capacity(64 * 1024, open(&self.path)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sink;

    #[test]
    fn reopen_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("kestrel-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
}
