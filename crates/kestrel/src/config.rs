//! The agent's settings: a TOML file (`--config FILE`) and flags, one flag
//! per key. A flag wins over the file, the file over the default. Every
//! value is checked at start and a bad one is refused with its key named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use kestrel_sinks::OutputSpec;
use serde::Deserialize;

/// The kernel's file_excludes map holds this many directories.
pub const MAX_FILE_EXCLUDES: usize = 256;

/// Agent settings, as given. The same struct reads the TOML file (keys in
/// snake_case) and the command line (flags in kebab-case).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Where events go: "stdout", "file:PATH" to append JSON lines to
    /// PATH (re-opened on SIGHUP, for log rotation), or
    /// "kafka://HOST:PORT[,HOST:PORT...]/TOPIC[?OPTION=VALUE&...]" (options
    /// and the on-disk spool: docs/kafka.md). [default: stdout]
    #[arg(long, value_name = "OUTPUT")]
    pub output: Option<String>,

    /// Size of the kernel ring buffer in bytes: a power of two from 64 KiB
    /// to 1 GiB. Larger absorbs longer bursts before the kernel must drop
    /// (and count) events. [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_bytes: Option<u64>,

    /// Buffered bytes at which the kernel wakes the agent. Below this,
    /// events wait for the next poll (--max-latency-ms): waking per event
    /// would cost ~16 us each. [default: 262144]
    #[arg(long, value_name = "BYTES")]
    pub wakeup_bytes: Option<u64>,

    /// Longest time, in ms, an event may sit in the ring buffer before the
    /// agent collects it when the wakeup threshold is not reached (1-10000).
    /// [default: 100]
    #[arg(long, value_name = "MS")]
    pub max_latency_ms: Option<u64>,

    /// Seconds between two logs of the counters (received, emitted, lost,
    /// ...), which are also logged at exit. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub stats_interval_secs: Option<u64>,

    /// Executables larger than this many bytes are not hashed; their
    /// exe_md5 is empty and the skip is counted. [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub exe_md5_max_bytes: Option<u64>,

    /// Processes whose executable path and hash are cached. [default: 16384]
    #[arg(long, value_name = "N")]
    pub process_cache_entries: Option<u64>,

    /// File hashes cached, keyed by device, inode, size and mtime.
    /// [default: 4096]
    #[arg(long, value_name = "N")]
    pub hash_cache_entries: Option<u64>,

    /// Events queued between the collecting thread and the output thread.
    /// When full, collection waits and the ring buffer absorbs the burst.
    /// [default: 16384]
    #[arg(long, value_name = "N")]
    pub queue_events: Option<u64>,

    /// Docker Engine API socket, asked for container names and images.
    /// Missing or dead sockets cost one try, then a backoff.
    /// [default: /var/run/docker.sock]
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,

    /// podman's Docker-compatible API socket. [default: /run/podman/podman.sock]
    #[arg(long, value_name = "PATH")]
    pub podman_socket: Option<PathBuf>,

    /// CRI-O's API socket. [default: /var/run/crio/crio.sock]
    #[arg(long, value_name = "PATH")]
    pub crio_socket: Option<PathBuf>,

    /// containerd's socket, asked over the Kubernetes CRI (gRPC).
    /// [default: /run/containerd/containerd.sock]
    #[arg(long, value_name = "PATH")]
    pub containerd_socket: Option<PathBuf>,

    /// Hours between two inventories (users, ports, packages, cron) sent
    /// with the events; the first is taken at start. 0 turns it off.
    /// [default: 24]
    #[arg(long, value_name = "HOURS")]
    pub inventory_interval_hours: Option<u64>,

    /// Hours between two anti-rootkit scans (data_type 700-704, as
    /// `kestrel scan rootkit`) sent with the events; the first runs at
    /// start. 0 turns it off. [default: 24]
    #[arg(long, value_name = "HOURS")]
    pub rootkit_scan_interval_hours: Option<u64>,

    /// Log files whose sshd lines give login events (data_type 1001);
    /// repeat the flag for several. [default: /var/log/auth.log,
    /// /var/log/secure]
    #[arg(long = "auth-log", value_name = "PATH")]
    pub auth_logs: Option<Vec<PathBuf>>,

    /// Read sshd logins from the systemd journal: auto (when none of the
    /// auth logs exists), on, or off. [default: auto]
    #[arg(long, value_name = "MODE")]
    pub login_journal: Option<String>,

    /// Turn the login monitor off.
    #[arg(long)]
    #[serde(default)]
    pub no_logins: bool,

    /// Directory for the agent's state (agent id, log read positions,
    /// journal cursor, Kafka spool). [default: /var/lib/kestrel]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464). Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Programs whose exec may make a process root without a credential
    /// change event (data_type 604); repeat the flag for several. [default:
    /// sudo, su, sshd and sshd-session at their usual paths]
    #[arg(long = "cred-allow", value_name = "PATH")]
    pub cred_allowlist: Option<Vec<String>>,

    /// Directories under which created files are not reported; filtered
    /// in the kernel. Repeat the flag for several; at most 256. A directory
    /// that does not exist yet is excluded once it does. [default: /proc,
    /// /sys and the state directory]
    #[arg(long = "file-exclude", value_name = "DIR")]
    pub file_excludes: Option<Vec<PathBuf>>,

    /// Milliseconds between a file's creation and the hash of its content
    /// (create_file_md5): time for its creator to write it. [default: 1000]
    #[arg(long, value_name = "MS")]
    pub file_md5_delay_ms: Option<u64>,

    /// Created files larger than this many bytes are not hashed.
    /// [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub file_md5_max_bytes: Option<u64>,

    /// BTF file describing the running kernel, for kernels without
    /// /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Also append every raw ring-buffer record to FILE (each a
    /// little-endian u32 length, then the record), for `kestrel bench
    /// pipeline --replay FILE`. Off by default.
    #[arg(long, value_name = "FILE")]
    pub record_raw: Option<PathBuf>,

    /// Log verbosity: error, warn, info, debug or trace. RUST_LOG, when
    /// set, overrides it. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    // --- Control server (kestrel server); see crate::control. ---
    /// Control server, HOST:PORT: send heartbeats and take commands.
    /// Events still go to --output; the agent works on without the server.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,

    /// CA certificate of the control server (its DATA/ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// File with the server's enrollment token, exchanged at first
    /// connection for this agent's own secret (kept in --state-dir).
    #[arg(long, value_name = "FILE")]
    pub enroll_token_file: Option<PathBuf>,

    /// Seconds between two heartbeats to the control server (1-3600).
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    pub heartbeat_secs: Option<u64>,

    /// Host name reported to the control server instead of the system's.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

/// Programs that become root by design, at their usual paths.
pub const DEFAULT_CRED_ALLOWLIST: &[&str] = &[
    "/usr/bin/sudo",
    "/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/sbin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-session",
];

/// Settings resolved and checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub output: OutputSpec,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u64,
    pub max_latency: Duration,
    pub stats_interval: Duration,
    pub exe_md5_max_bytes: u64,
    pub process_cache_entries: usize,
    pub hash_cache_entries: usize,
    pub queue_events: usize,
    pub btf: Option<PathBuf>,
    pub log_level: String,
    pub runtime_sockets: kestrel_enrich::RuntimeSockets,
    pub inventory_interval: Option<Duration>,
    pub rootkit_scan_interval: Option<Duration>,
    pub logins: Option<crate::logins::LoginConfig>,
    pub cred_allowlist: Vec<String>,
    pub file_excludes: Vec<PathBuf>,
    pub file_md5_delay: Duration,
    pub file_md5_max_bytes: u64,
    pub control: Option<crate::control::ControlConfig>,
    pub record_raw: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub metrics: Option<std::net::SocketAddr>,
}

impl AgentSettings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "bad config file {}: {}",
                path.display(),
                e.to_string().trim()
            )
        })
    }

    /// `self` with every unset value taken from `under`.
    pub fn over(self, under: AgentSettings) -> AgentSettings {
        AgentSettings {
            output: self.output.or(under.output),
            ring_buffer_bytes: self.ring_buffer_bytes.or(under.ring_buffer_bytes),
            wakeup_bytes: self.wakeup_bytes.or(under.wakeup_bytes),
            max_latency_ms: self.max_latency_ms.or(under.max_latency_ms),
            stats_interval_secs: self.stats_interval_secs.or(under.stats_interval_secs),
            exe_md5_max_bytes: self.exe_md5_max_bytes.or(under.exe_md5_max_bytes),
            process_cache_entries: self.process_cache_entries.or(under.process_cache_entries),
            hash_cache_entries: self.hash_cache_entries.or(under.hash_cache_entries),
            queue_events: self.queue_events.or(under.queue_events),
            btf: self.btf.or(under.btf),
            inventory_interval_hours: self
                .inventory_interval_hours
                .or(under.inventory_interval_hours),
            rootkit_scan_interval_hours: self
                .rootkit_scan_interval_hours
                .or(under.rootkit_scan_interval_hours),
            auth_logs: self.auth_logs.or(under.auth_logs),
            login_journal: self.login_journal.or(under.login_journal),
            no_logins: self.no_logins || under.no_logins,
            state_dir: self.state_dir.or(under.state_dir),
            metrics: self.metrics.or(under.metrics),
            cred_allowlist: self.cred_allowlist.or(under.cred_allowlist),
            file_excludes: self.file_excludes.or(under.file_excludes),
            file_md5_delay_ms: self.file_md5_delay_ms.or(under.file_md5_delay_ms),
            file_md5_max_bytes: self.file_md5_max_bytes.or(under.file_md5_max_bytes),
            docker_socket: self.docker_socket.or(under.docker_socket),
            podman_socket: self.podman_socket.or(under.podman_socket),
            crio_socket: self.crio_socket.or(under.crio_socket),
            containerd_socket: self.containerd_socket.or(under.containerd_socket),
            log_level: self.log_level.or(under.log_level),
            server: self.server.or(under.server),
            ca_file: self.ca_file.or(under.ca_file),
            enroll_token_file: self.enroll_token_file.or(under.enroll_token_file),
            heartbeat_secs: self.heartbeat_secs.or(under.heartbeat_secs),
            hostname: self.hostname.or(under.hostname),
            record_raw: self.record_raw.or(under.record_raw),
        }
    }

    /// Applies defaults and checks every value.
    pub fn resolve(self) -> Result<AgentConfig> {
        fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64> {
            if v < lo || v > hi {
                bail!("bad config value: {key} = {v}: must be between {lo} and {hi}");
            }
            Ok(v)
        }
        let output = self.output.unwrap_or_else(|| "stdout".into());
        let output = output
            .parse::<OutputSpec>()
            .map_err(|e| anyhow::anyhow!("bad config value: output: {e}"))?;
        let ring = self.ring_buffer_bytes.unwrap_or(16 << 20);
        if !(64 << 10..=1 << 30).contains(&ring) || !ring.is_power_of_two() {
            bail!(
                "bad config value: ring_buffer_bytes = {ring}: must be a power of two from 65536 to 1073741824"
            );
        }
        let wakeup = self.wakeup_bytes.unwrap_or(256 << 10);
        let wakeup = range("wakeup_bytes", wakeup, 1, ring / 2).context(
            "the wakeup threshold must leave room in the ring buffer (at most half of ring_buffer_bytes)",
        )?;
        let log_level = self.log_level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            bail!(
                "bad config value: log_level = {log_level:?}: use error, warn, info, debug or trace"
            );
        }
        if let Some(b) = &self.btf {
            if !b.is_file() {
                bail!("bad config value: btf = {}: no such file", b.display());
            }
        }
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/kestrel"));
        let file_excludes = self.file_excludes.clone().unwrap_or_else(|| {
            vec![
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                state_dir.clone(),
            ]
        });
        if let Some(rel) = file_excludes.iter().find(|d| !d.is_absolute()) {
            bail!(
                "bad config value: file_excludes: {}: use an absolute directory",
                rel.display()
            );
        }
        if file_excludes.len() > MAX_FILE_EXCLUDES {
            bail!(
                "bad config value: file_excludes: {} directories; at most {MAX_FILE_EXCLUDES}",
                file_excludes.len()
            );
        }
        let control = match &self.server {
            None => None,
            Some(server) => {
                if kestrel_control::client::server_host(server).is_none() {
                    bail!("bad config value: server = {server:?}: use HOST:PORT");
                }
                let ca_file = self
                    .ca_file
                    .clone()
                    .context("server is set: ca_file (--ca-file) is required")?;
                if let Some(h) = &self.hostname {
                    if h.is_empty() || h.len() > 255 {
                        bail!("bad config value: hostname = {h:?}: 1 to 255 characters");
                    }
                }
                Some(crate::control::ControlConfig {
                    server: server.clone(),
                    ca_file,
                    enroll_token_file: self.enroll_token_file.clone(),
                    heartbeat: Duration::from_secs(range(
                        "heartbeat_secs",
                        self.heartbeat_secs.unwrap_or(30),
                        1,
                        3600,
                    )?),
                    hostname: self.hostname.clone(),
                    state_dir: state_dir.clone(),
                })
            }
        };
        let metrics = match &self.metrics {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad config value: metrics = {a:?}: use IP:PORT, e.g. 127.0.0.1:9464"
                )
            })?),
        };
        Ok(AgentConfig {
            control,
            state_dir: state_dir.clone(),
            metrics,
            output,
            ring_buffer_bytes: ring as u32,
            wakeup_bytes: wakeup,
            max_latency: Duration::from_millis(range(
                "max_latency_ms",
                self.max_latency_ms.unwrap_or(100),
                1,
                10_000,
            )?),
            stats_interval: Duration::from_secs(range(
                "stats_interval_secs",
                self.stats_interval_secs.unwrap_or(60),
                1,
                86_400,
            )?),
            exe_md5_max_bytes: range(
                "exe_md5_max_bytes",
                self.exe_md5_max_bytes.unwrap_or(64 << 20),
                0,
                1 << 40,
            )?,
            process_cache_entries: range(
                "process_cache_entries",
                self.process_cache_entries.unwrap_or(16384),
                1,
                1 << 22,
            )? as usize,
            hash_cache_entries: range(
                "hash_cache_entries",
                self.hash_cache_entries.unwrap_or(4096),
                1,
                1 << 22,
            )? as usize,
            queue_events: range(
                "queue_events",
                self.queue_events.unwrap_or(16384),
                1,
                1 << 22,
            )? as usize,
            inventory_interval: match range(
                "inventory_interval_hours",
                self.inventory_interval_hours.unwrap_or(24),
                0,
                24 * 365,
            )? {
                0 => None,
                h => Some(Duration::from_secs(h * 3600)),
            },
            rootkit_scan_interval: match range(
                "rootkit_scan_interval_hours",
                self.rootkit_scan_interval_hours.unwrap_or(24),
                0,
                24 * 365,
            )? {
                0 => None,
                h => Some(Duration::from_secs(h * 3600)),
            },
            logins: if self.no_logins {
                None
            } else {
                use crate::logins::JournalMode;
                Some(crate::logins::LoginConfig {
                    auth_logs: self.auth_logs.unwrap_or_else(|| {
                        vec!["/var/log/auth.log".into(), "/var/log/secure".into()]
                    }),
                    journal: match self.login_journal.as_deref().unwrap_or("auto") {
                        "auto" => JournalMode::Auto,
                        "on" => JournalMode::On,
                        "off" => JournalMode::Off,
                        other => bail!(
                            "bad config value: login_journal = {other:?}: use auto, on or off"
                        ),
                    },
                    state_dir,
                })
            },
            cred_allowlist: self.cred_allowlist.clone().unwrap_or_else(|| {
                DEFAULT_CRED_ALLOWLIST
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            file_excludes,
            file_md5_delay: Duration::from_millis(range(
                "file_md5_delay_ms",
                self.file_md5_delay_ms.unwrap_or(1000),
                0,
                60_000,
            )?),
            file_md5_max_bytes: range(
                "file_md5_max_bytes",
                self.file_md5_max_bytes.unwrap_or(16 << 20),
                0,
                1 << 40,
            )?,
            btf: self.btf,
            record_raw: self.record_raw,
            log_level,
            runtime_sockets: {
                let d = kestrel_enrich::RuntimeSockets::default();
                kestrel_enrich::RuntimeSockets {
                    docker: self.docker_socket.unwrap_or(d.docker),
                    podman: self.podman_socket.unwrap_or(d.podman),
                    crio: self.crio_socket.unwrap_or(d.crio),
                    containerd: self.containerd_socket.unwrap_or(d.containerd),
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<AgentConfig> {
        let s: AgentSettings = toml::from_str(toml).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.resolve()
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.output, OutputSpec::Stdout);
        assert_eq!(c.ring_buffer_bytes, 16 << 20);
        assert_eq!(c.max_latency, Duration::from_millis(100));
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
    fn flags_win_over_file() {
        let file: AgentSettings =
            toml::from_str("output = \"file:/tmp/a\"\nmax_latency_ms = 5").unwrap();
        let flags = AgentSettings {
            output: Some("stdout".into()),
            ..Default::default()
        };
        let c = flags.over(file).resolve().unwrap();
        assert_eq!(c.output, OutputSpec::Stdout);
        assert_eq!(c.max_latency, Duration::from_millis(5));
    }
}
