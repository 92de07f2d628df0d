//! Where events go. Each sink takes finished JSON lines; batching is the
//! caller's business (write many, then flush once).

mod file;
pub mod kafka;
pub mod safe;
pub mod spool;
mod stdout;

use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use file::{FileLimits, FileSink, FileStats};
pub use kafka::{KafkaIdentity, KafkaSink, KafkaSpec, KafkaStats};
pub use stdout::StdoutSink;

/// A destination for JSON lines.
pub trait Sink: Send {
    /// Queues one line (with its newline).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Pushes queued lines out.
    fn flush(&mut self) -> io::Result<()>;
    /// After a failed flush: how many of the `pending` lines queued since
    /// the last good flush were not written (the others were). By default,
    /// all of them.
    fn lost(&mut self, pending: u64) -> u64 {
        pending
    }
    /// Re-opens the destination (after log rotation); a no-op where that
    /// means nothing.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The Kafka output's counters (delivery, spool); None for other sinks.
    fn kafka_stats(&self) -> Option<Arc<KafkaStats>> {
        None
    }
}

/// Which sink to use, as written in `--output` or `output = "..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// `stdout`
    Stdout,
    /// `file:PATH`: append to PATH.
    File(PathBuf),
    /// `kafka://HOST:PORT[,...]/TOPIC[?OPTIONS]`.
    Kafka(Box<KafkaSpec>),
}

/// An output specification that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadOutput {
    /// Not a known kind of output.
    #[error("unknown output {0:?}: use \"stdout\", \"file:PATH\" or \"kafka://HOST:PORT/TOPIC\"")]
    Unknown(String),
    /// A Kafka URL that does not parse.
    #[error("bad Kafka output: {0}")]
    Kafka(#[from] kafka::BadKafkaSpec),
}

impl FromStr for OutputSpec {
    type Err = BadOutput;

    fn from_str(s: &str) -> Result<Self, BadOutput> {
        match s {
            "stdout" | "-" => Ok(OutputSpec::Stdout),
            _ if s.starts_with("kafka://") => Ok(OutputSpec::Kafka(Box::new(KafkaSpec::parse(
                &s["kafka://".len()..],
            )?))),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(OutputSpec::File(PathBuf::from(p))),
                _ => Err(BadOutput::Unknown(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputSpec::Stdout => f.write_str("stdout"),
            OutputSpec::File(p) => write!(f, "file:{}", p.display()),
            // Options may name secrets' files: only where events go.
            OutputSpec::Kafka(k) => write!(f, "kafka://{}/{}", k.brokers, k.topic),
        }
    }
}

impl OutputSpec {
    /// Opens the sink. `id` names the agent (Kafka message key) and its
    /// state directory (default place of the Kafka spool); `limits` cap a
    /// file output.
    pub fn open(&self, id: &KafkaIdentity, limits: &FileLimits) -> io::Result<Box<dyn Sink>> {
        Ok(match self {
            OutputSpec::Stdout => Box::new(StdoutSink::new()),
            OutputSpec::File(p) => Box::new(FileSink::open_with(p, limits.clone())?),
            OutputSpec::Kafka(k) => Box::new(KafkaSink::open(k, id)?),
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
        assert!("ftp://x".parse::<OutputSpec>().is_err());
        let k: OutputSpec = "kafka://127.0.0.1:9092/ev".parse().unwrap();
        assert_eq!(k.to_string(), "kafka://127.0.0.1:9092/ev");
    }
}
