//! The agent's settings: a TOML file (`--config FILE`) and flags, one flag
//! per key. A flag wins over the file, the file over the default. Every
//! value is checked at start and a bad one is refused with its key named.
//!
//! Each part of the agent owns its settings: one struct that is both its
//! flags (clap, kebab-case) and its keys in the file (serde, snake_case),
//! every value optional, and a `resolve` that applies its defaults and
//! checks its values. [`AgentSettings`] only puts the parts side by side.
//! The file fills them first; clap then overwrites exactly the values
//! given on the command line (`update_from_arg_matches`), so no code
//! merges one field at a time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::agent::{collect, detect, enrich, output, sources};
use crate::control::ControlSettings;
use crate::logins::LoginSettings;

/// Agent settings, as given, part by part. Flags are listed in `--help`
/// in this order.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentSettings {
    #[command(flatten)]
    pub output: output::OutputSettings,
    #[command(flatten)]
    pub collect: collect::CollectSettings,
    #[command(flatten)]
    pub enrich: enrich::EnrichSettings,
    #[command(flatten)]
    pub detect: detect::DetectSettings,
    #[command(flatten)]
    pub sources: sources::SourceSettings,
    #[command(flatten)]
    pub logins: LoginSettings,
    #[command(flatten)]
    pub general: GeneralSettings,
    #[command(flatten)]
    pub control: ControlSettings,
}

/// Settings of the agent as a whole.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct GeneralSettings {
    /// Events queued between two stages of the pipeline (collection and
    /// enrichment, detection, output). When full, the stage before waits
    /// and the ring buffer absorbs the burst. [default: 16384]
    #[arg(long, value_name = "N")]
    pub queue_events: Option<u64>,

    /// Seconds between two logs of the counters (received, emitted, lost,
    /// ...), which are also logged at exit. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub stats_interval_secs: Option<u64>,

    /// Directory for the agent's state (agent id, log read positions,
    /// journal cursor, Kafka spool). [default: /var/lib/kestrel]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464). Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Log verbosity: error, warn, info, debug or trace. RUST_LOG, when
    /// set, overrides it. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The agent as a whole, resolved.
#[derive(Debug, Clone)]
pub struct General {
    pub queue_events: usize,
    pub stats_interval: Duration,
    pub state_dir: PathBuf,
    pub metrics: Option<std::net::SocketAddr>,
    pub log_level: String,
}

impl GeneralSettings {
    fn resolve(self) -> Result<General> {
        let log_level = self.log_level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            bail!(
                "bad config value: log_level = {log_level:?}: use error, warn, info, debug or trace"
            );
        }
        let metrics = match &self.metrics {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad config value: metrics = {a:?}: use IP:PORT, e.g. 127.0.0.1:9464"
                )
            })?),
        };
        Ok(General {
            queue_events: range(
                "queue_events",
                self.queue_events.unwrap_or(16384),
                1,
                1 << 22,
            )? as usize,
            stats_interval: Duration::from_secs(range(
                "stats_interval_secs",
                self.stats_interval_secs.unwrap_or(60),
                1,
                86_400,
            )?),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/kestrel")),
            metrics,
            log_level,
        })
    }
}

/// Settings resolved and checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub general: General,
    pub output: output::OutputConfig,
    pub collect: collect::CollectConfig,
    pub enrich: enrich::EnrichStageConfig,
    pub detect: detect::DetectConfig,
    pub sources: sources::SourceConfig,
    pub logins: Option<crate::logins::LoginConfig>,
    pub control: Option<crate::control::ControlConfig>,
}

/// `v` if it lies within `lo..=hi`, else the error naming `key`.
pub fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64> {
    if v < lo || v > hi {
        bail!("bad config value: {key} = {v}: must be between {lo} and {hi}");
    }
    Ok(v)
}

/// Every key the file may hold: one per flag.
fn known_keys() -> BTreeSet<String> {
    AgentSettings::augment_args(clap::Command::new("agent"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

impl AgentSettings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("bad config file {}: {}", path.display(), e.trim()))
    }

    /// Reads settings from TOML text. Each part reads the whole text (its
    /// own keys, the others' ignored), so that an error points at the
    /// line of the key it is about.
    fn from_toml(text: &str) -> std::result::Result<Self, String> {
        fn part<T: DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
            toml::from_str(text).map_err(|e| e.to_string())
        }
        let keys: toml::Table = part(text)?;
        let known = known_keys();
        if let Some(k) = keys.keys().find(|k| !known.contains(*k)) {
            return Err(format!(
                "unknown key `{k}`; the keys are {}",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(AgentSettings {
            output: part(text)?,
            collect: part(text)?,
            enrich: part(text)?,
            detect: part(text)?,
            sources: part(text)?,
            logins: part(text)?,
            general: part(text)?,
            control: part(text)?,
        })
    }

    /// The file's settings with the flags given on the command line
    /// (`flags`, the agent command's matches) laid over them.
    pub fn with_flags(mut self, flags: &ArgMatches) -> Result<Self> {
        self.update_from_arg_matches(flags)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(self)
    }

    /// Applies defaults and checks every value.
    pub fn resolve(self) -> Result<AgentConfig> {
        let output = self.output.resolve()?;
        let general = self.general.resolve()?;
        Ok(AgentConfig {
            collect: self.collect.resolve(&general)?,
            enrich: self.enrich.resolve(general.queue_events)?,
            detect: self.detect.resolve()?,
            sources: self.sources.resolve()?,
            logins: self.logins.resolve(&general)?,
            control: self.control.resolve(&general)?,
            output,
            general,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_sinks::OutputSpec;

    fn parse(toml: &str) -> Result<AgentConfig> {
        AgentSettings::from_toml(toml)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .resolve()
    }

    fn flags(args: &[&str]) -> ArgMatches {
        AgentSettings::augment_args(clap::Command::new("agent"))
            .try_get_matches_from(std::iter::once("agent").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.output.spec, OutputSpec::Stdout);
        assert_eq!(c.collect.ring_buffer_bytes, 16 << 20);
        assert_eq!(c.collect.max_latency, Duration::from_millis(100));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("ring_buffer_bytes = 1000").unwrap_err().to_string();
        assert!(e.contains("ring_buffer_bytes"), "{e}");
        let e = parse("output = \"ftp://x\"").unwrap_err().to_string();
        assert!(e.contains("output"), "{e}");
        let e = parse("max_latency_ms = 0").unwrap_err().to_string();
        assert!(e.contains("max_latency_ms"), "{e}");
        let e = parse("no_such_key = 1").unwrap_err().to_string();
        assert!(e.contains("no_such_key"), "{e}");
        let e = parse("queue_events = \"many\"").unwrap_err().to_string();
        assert!(e.contains("queue_events"), "{e}");
    }

    #[test]
    fn syscall_tracepoints_is_on_or_off() {
        assert!(parse("").unwrap().collect.syscall_tracepoints);
        assert!(
            parse("syscall_tracepoints = \"on\"")
                .unwrap()
                .collect
                .syscall_tracepoints
        );
        let lean = AgentSettings::from_toml("syscall_tracepoints = \"on\"")
            .unwrap()
            .with_flags(&flags(&["--syscall-tracepoints", "off"]))
            .unwrap()
            .resolve()
            .unwrap();
        assert!(!lean.collect.syscall_tracepoints);
        let e = parse("syscall_tracepoints = \"no\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("syscall_tracepoints") && e.contains("use on") && e.contains("off"),
            "{e}"
        );
        let e = parse("syscall_tracepoints = false")
            .unwrap_err()
            .to_string();
        assert!(e.contains("syscall_tracepoints"), "{e}");
    }

    #[test]
    fn hook_backend_is_auto_or_one_backend() {
        use kestrel_probes::{Backend, HookBackend};
        assert_eq!(parse("").unwrap().collect.hook_backend, HookBackend::Auto);
        let c = parse("hook_backend = \"kprobe\"").unwrap();
        assert_eq!(c.collect.hook_backend, HookBackend::Only(Backend::Kprobe));
        let c = AgentSettings::from_toml("hook_backend = \"kprobe\"")
            .unwrap()
            .with_flags(&flags(&["--hook-backend", "fentry"]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.collect.hook_backend, HookBackend::Only(Backend::Fentry));
        let e = format!("{:#}", parse("hook_backend = \"fexit\"").unwrap_err());
        assert!(
            e.contains("hook_backend") && e.contains("auto") && e.contains("tracepoint"),
            "{e}"
        );
    }

    #[test]
    fn a_type_error_points_at_its_line() {
        let e = parse("output = \"stdout\"\nqueue_events = \"many\"\nbtf = \"/x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn flags_win_over_file() {
        let file = AgentSettings::from_toml(
            "output = \"file:/tmp/a\"\nmax_latency_ms = 5\nno_logins = true\nauth_logs = [\"/a\"]",
        )
        .unwrap();
        let c = file
            .with_flags(&flags(&["--output", "stdout", "--auth-log", "/b"]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.output.spec, OutputSpec::Stdout);
        assert_eq!(c.collect.max_latency, Duration::from_millis(5));
        // A flag left out leaves the file's value, a switch included.
        assert!(c.logins.is_none());
        let c = AgentSettings::from_toml("auth_logs = [\"/a\"]")
            .unwrap()
            .with_flags(&flags(&["--auth-log", "/b", "--auth-log", "/c"]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            c.logins.unwrap().auth_logs,
            vec![PathBuf::from("/b"), PathBuf::from("/c")]
        );
        let c = AgentSettings::default()
            .with_flags(&flags(&["--no-logins"]))
            .unwrap()
            .resolve()
            .unwrap();
        assert!(c.logins.is_none());
    }

    #[test]
    fn every_flag_is_a_key_in_snake_case() {
        let keys = known_keys();
        for k in [
            "auth_logs",
            "cred_allowlist",
            "file_excludes",
            "no_logins",
            "server",
            "rules",
            "sigma",
            "no_builtin_rules",
            "hook_backend",
        ] {
            assert!(keys.contains(k), "{k}");
        }
        assert_eq!(keys.len(), 50);
    }
}
