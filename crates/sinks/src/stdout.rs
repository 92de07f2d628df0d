//! Standard output.

use std::io::{self, BufWriter, Stdout, Write};

/// Writes lines to standard output, buffered.
pub struct StdoutSink {
    out: BufWriter<Stdout>,
}

impl StdoutSink {
    /// A sink on this process's stdout.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl super::Sink for StdoutSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
