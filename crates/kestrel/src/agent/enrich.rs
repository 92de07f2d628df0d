//! Enrich: decoded records become reference-format events.
//!
//! Runs on the collecting thread, not a thread of its own: what it adds
//! (executable path and hash, working directory, stdin/stdout) is read
//! from /proc, which must happen while the process still lives, and a
//! queue in between would let short-lived processes exit first.
//!
//! One step is delayed on purpose: a created file's content hash, taken
//! once its creator had time to write it (kestrel_enrich::FileHasher, on
//! its own thread). Its events join the queue into detection afterwards,
//! so they arrive later than the events around them. That step never
//! holds up this thread: an event its queue cannot take goes on at once,
//! unhashed (`create_file_md5_skipped`), and its reading is bounded in
//! bytes and time per second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use kestrel_decode::Record;
use kestrel_enrich::{
    EnrichConfig, EnrichCounters, Enricher, FileHashConfig, FileHashCounters, FileHasher,
    RuntimeSockets,
};
use serde::Deserialize;

use super::{Closed, Link};
use crate::config::range;

/// Settings of the enrich stage.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct EnrichSettings {
    /// Executables larger than this many bytes are not hashed; their
    /// exe_md5 is empty and the skip is counted. [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub exe_md5_max_bytes: Option<u64>,

    /// Bytes of executables read per second for exe_md5, on the
    /// collecting thread; at least exe_md5_max_bytes. An executable not
    /// in the hash cache that does not fit in what is left is not hashed
    /// (exe_md5 empty, counted in md5_budget). [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub exe_md5_bytes_per_sec: Option<u64>,

    /// Milliseconds per second the collecting thread may spend hashing
    /// executables (1-1000); past it, they are not hashed (counted in
    /// md5_budget). [default: 500]
    #[arg(long, value_name = "MS")]
    pub exe_md5_ms_per_sec: Option<u64>,

    /// Processes whose executable path and hash are cached. [default: 16384]
    #[arg(long, value_name = "N")]
    pub process_cache_entries: Option<u64>,

    /// File hashes cached, keyed by device, inode, size, mtime and ctime.
    /// [default: 4096]
    #[arg(long, value_name = "N")]
    pub hash_cache_entries: Option<u64>,

    /// Milliseconds between a file's creation and the hash of its content
    /// (create_file_md5): time for its creator to write it. [default: 1000]
    #[arg(long, value_name = "MS")]
    pub file_md5_delay_ms: Option<u64>,

    /// Created files larger than this many bytes are not hashed.
    /// [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub file_md5_max_bytes: Option<u64>,

    /// Bytes of created files read per second for create_file_md5, all
    /// files together; at least file_md5_max_bytes. A file that does not
    /// fit in what is left is not hashed (create_file_md5_skipped=budget,
    /// counted). [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub file_md5_bytes_per_sec: Option<u64>,

    /// Milliseconds per second the file hashing thread may spend reading
    /// and hashing (1-1000); past it, files are not hashed
    /// (create_file_md5_skipped=budget, counted). A file started within
    /// it is finished and its overrun paid back before the next; one that
    /// takes over a second to read is not hashed. [default: 250]
    #[arg(long, value_name = "MS")]
    pub file_md5_ms_per_sec: Option<u64>,

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
}

/// The enrich stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct EnrichStageConfig {
    pub enrich: EnrichConfig,
    pub file_hash: FileHashConfig,
}

impl EnrichSettings {
    /// `queue`: events the file hash step may hold.
    pub fn resolve(self, queue: usize) -> Result<EnrichStageConfig> {
        let d = RuntimeSockets::default();
        let max_bytes = range(
            "file_md5_max_bytes",
            self.file_md5_max_bytes.unwrap_or(16 << 20),
            0,
            1 << 40,
        )?;
        let exe_max_bytes = range(
            "exe_md5_max_bytes",
            self.exe_md5_max_bytes.unwrap_or(64 << 20),
            0,
            1 << 40,
        )?;
        Ok(EnrichStageConfig {
            enrich: EnrichConfig {
                exe_md5_max_bytes: exe_max_bytes,
                exe_md5_bytes_per_sec: range(
                    "exe_md5_bytes_per_sec",
                    self.exe_md5_bytes_per_sec.unwrap_or(64 << 20),
                    exe_max_bytes.max(1),
                    1 << 40,
                )
                .context("the budget must hold one executable of exe_md5_max_bytes")?,
                exe_md5_time_per_sec: Duration::from_millis(range(
                    "exe_md5_ms_per_sec",
                    self.exe_md5_ms_per_sec.unwrap_or(500),
                    1,
                    1000,
                )?),
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
                runtime_sockets: RuntimeSockets {
                    docker: self.docker_socket.unwrap_or(d.docker),
                    podman: self.podman_socket.unwrap_or(d.podman),
                    crio: self.crio_socket.unwrap_or(d.crio),
                    containerd: self.containerd_socket.unwrap_or(d.containerd),
                },
                ..EnrichConfig::default()
            },
            file_hash: FileHashConfig {
                delay: Duration::from_millis(range(
                    "file_md5_delay_ms",
                    self.file_md5_delay_ms.unwrap_or(1000),
                    0,
                    60_000,
                )?),
                max_bytes,
                queue,
                bytes_per_sec: range(
                    "file_md5_bytes_per_sec",
                    self.file_md5_bytes_per_sec.unwrap_or(64 << 20),
                    max_bytes.max(1),
                    1 << 40,
                )
                .context("the budget must hold one file of file_md5_max_bytes")?,
                time_per_sec: Duration::from_millis(range(
                    "file_md5_ms_per_sec",
                    self.file_md5_ms_per_sec.unwrap_or(250),
                    1,
                    1000,
                )?),
                stop_grace: FILE_HASH_STOP_GRACE,
            },
        })
    }
}

/// Once the agent stops, how long created files are still hashed (within
/// the budget) before the rest go on unhashed.
const FILE_HASH_STOP_GRACE: Duration = Duration::from_secs(1);

/// How long stopping waits for the file hashing thread (stuck in a read
/// that does not return, say) before it sends what it holds unhashed.
const FILE_HASH_FINISH: Duration = Duration::from_secs(2);

/// What the enrich stage counts. The Enricher belongs to the collecting
/// thread, so its counters are copied out, not shared.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnrichStageCounters {
    pub enrich: EnrichCounters,
    /// Container runtime lookups.
    pub runtime_lookups: u64,
    pub runtime_lookup_failures: u64,
    /// Lookups not made because their queue was full.
    pub runtime_queue_full: u64,
}

/// The enricher and the delayed file hash.
pub struct EnrichStage {
    enricher: Enricher,
    file_hash: FileHasher,
    out: Link,
}

impl EnrichStage {
    /// Starts the stage, sending its events to `out`.
    pub fn start(
        cfg: &EnrichStageConfig,
        out: Link,
        stop: Arc<AtomicBool>,
        file_hash_counters: Arc<FileHashCounters>,
    ) -> Result<Self> {
        let file_hash = {
            let out = out.clone();
            FileHasher::start(cfg.file_hash.clone(), stop, file_hash_counters, move |ev| {
                out.send(ev).is_ok()
            })
            .context("starting the file hashing thread")?
        };
        Ok(EnrichStage {
            enricher: Enricher::new(cfg.enrich.clone()),
            file_hash,
            out,
        })
    }

    /// Enriches one record and passes its event on.
    pub fn take(&mut self, rec: &Record) -> Result<(), Closed> {
        let Some(ev) = self.enricher.enrich(rec) else {
            return Ok(());
        };
        if matches!(rec, Record::File(_)) {
            // Never waits: what the hash step cannot take goes on unhashed.
            return match self.file_hash.submit(ev) {
                None => Ok(()),
                Some(ev) => self.out.send(ev),
            };
        }
        self.out.send(ev)
    }

    pub fn counters(&self) -> EnrichStageCounters {
        let rt = self.enricher.runtime_counters();
        EnrichStageCounters {
            enrich: self.enricher.counters(),
            runtime_lookups: rt.lookups.load(Ordering::Relaxed),
            runtime_lookup_failures: rt.failures.load(Ordering::Relaxed),
            runtime_queue_full: rt.queue_full.load(Ordering::Relaxed),
        }
    }

    /// Hashes the files still waiting (at once and for a bounded time:
    /// the agent is stopping) and passes them on; returns the last
    /// counters.
    pub fn finish(self) -> EnrichStageCounters {
        let counters = self.counters();
        for ev in self.file_hash.finish(FILE_HASH_FINISH) {
            if self.out.send(ev).is_err() {
                break;
            }
        }
        counters
    }
}
