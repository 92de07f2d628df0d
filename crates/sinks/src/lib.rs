//! Where events go. Each sink takes finished JSON lines; batching is the
//! caller's business (write many, then flush once).

mod file;
mod stdout;

use std::io;
use std::path::PathBuf;
use std::str::FromStr;

pub use file::FileSink;
pub use stdout::StdoutSink;

/// A destination for JSON lines.
pub trait Sink: Send {
    /// Queues one line (with its newline).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Pushes queued lines out.
    fn flush(&mut self) -> io::Result<()>;
    /// Re-opens the destination (after log rotation); a no-op where that
    /// means nothing.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which sink to use, as written in `--output` or `output = "..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// `stdout`
    Stdout,
    /// `file:PATH`: append to PATH.
    File(PathBuf),
}

/// An output specification that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown output {0:?}: use \"stdout\" or \"file:PATH\"")]
pub struct BadOutput(String);

impl FromStr for OutputSpec {
    type Err = BadOutput;

    fn from_str(s: &str) -> Result<Self, BadOutput> {
        match s {
            "stdout" | "-" => Ok(OutputSpec::Stdout),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(OutputSpec::File(PathBuf::from(p))),
                _ => Err(BadOutput(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputSpec::Stdout => f.write_str("stdout"),
            OutputSpec::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl OutputSpec {
    /// Opens the sink.
    pub fn open(&self) -> io::Result<Box<dyn Sink>> {
        Ok(match self {
            OutputSpec::Stdout => Box::new(StdoutSink::new()),
            OutputSpec::File(p) => Box::new(FileSink::open(p)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        assert_eq!("stdout".parse(), Ok(OutputSpec::Stdout));
        assert_eq!(
            "file:/var/log/k.json".parse(),
            Ok(OutputSpec::File("/var/log/k.json".into()))
        );
        assert!("file:".parse::<OutputSpec>().is_err());
        assert!("kafka://x".parse::<OutputSpec>().is_err());
    }
}
