//! Collect: the probes, the ring buffer and its records, decoded.
//!
//! Runs on the agent's main thread, called back by libbpf for each record
//! the ring buffer holds; hands each decoded record to the enrich stage on
//! the same thread. Also measures how long records waited in the ring
//! buffer, and with `--record-raw` keeps every record for `kestrel bench
//! pipeline`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use kestrel_decode::decode;
use kestrel_probes::{HookBackend, ProbeConfig, ProbeState, Probes, WatchPattern};
use serde::Deserialize;

use super::enrich::{EnrichStage, EnrichStageCounters};
use crate::config::{range, General};
use crate::excludes::MAX_FILE_EXCLUDES;

/// Settings of the collect stage.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct CollectSettings {
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

    /// Directories under which created files are not reported; filtered
    /// in the kernel. Repeat the flag for several; at most 256. A directory
    /// that does not exist yet is excluded once it does. [default: /proc,
    /// /sys and the state directory]
    #[arg(long = "file-exclude", value_name = "DIR")]
    pub file_excludes: Option<Vec<PathBuf>>,

    /// A watched path (608/609/90/92), added to the defaults: an
    /// absolute path whose components may be `*` (any one) or end in `*`
    /// (a prefix), e.g. /home/*/.ssh/ or /etc/cron*. Repeat the flag for
    /// several; at most 64 with the defaults. [default: credentials,
    /// persistence and logs, see docs/events.md]
    #[arg(long = "watch-path", value_name = "PATTERN")]
    pub watch_paths: Option<Vec<WatchPattern>>,

    /// Watch only the --watch-path patterns, not the defaults (replaces
    /// them; with no --watch-path, nothing is watched).
    // Optional, so that a flag left out leaves the file's value alone.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_default_watch_paths: Option<bool>,

    /// BTF file describing the running kernel, for kernels without
    /// /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Send an event (data_type 60) when a process ends: one more event
    /// per process, about 1 µs of kernel time each (docs/performance.md).
    /// false leaves only a test in the kernel. [default: true]
    #[arg(long, value_name = "BOOL")]
    pub exit_events: Option<bool>,

    /// `on` attaches every hook. `off` is lean mode: no program on a
    /// syscall tracepoint, since attaching any one sends every syscall of
    /// the host down the kernel's slow path; file creations (602) then
    /// come from fanotify, and what only syscall tracepoints see is lost
    /// (docs/performance.md, "Lean mode"). [default: on]
    #[arg(long, value_name = "on|off")]
    pub syscall_tracepoints: Option<String>,

    /// How syscall hooks are attached. `auto` takes, hook by hook, the
    /// cheapest the kernel allows: fentry/fexit (a BPF trampoline on the
    /// syscall's function, nothing paid by other syscalls), then kprobes,
    /// then the syscall tracepoint (every syscall of the host pays). A
    /// named backend is used for every syscall hook or the agent does not
    /// start. The start-up log, the heartbeat and /metrics
    /// (kestrel_probe_info) say which each hook got and why.
    /// [default: auto]
    #[arg(long, value_name = "auto|fentry|kprobe|tracepoint")]
    pub hook_backend: Option<String>,

    /// Also append every raw ring-buffer record to FILE (each a
    /// little-endian u32 length, then the record), for `kestrel bench
    /// pipeline --replay FILE`. Off by default.
    #[arg(long, value_name = "FILE")]
    pub record_raw: Option<PathBuf>,
}

/// The collect stage's settings, resolved.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u64,
    pub max_latency: Duration,
    pub file_excludes: Vec<PathBuf>,
    pub watched: Vec<WatchPattern>,
    pub btf: Option<PathBuf>,
    pub record_raw: Option<PathBuf>,
    pub exit_events: bool,
    /// false: lean mode (`--syscall-tracepoints off`).
    pub syscall_tracepoints: bool,
    pub hook_backend: HookBackend,
}

impl CollectSettings {
    pub fn resolve(self, general: &General) -> Result<CollectConfig> {
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
        let syscall_tracepoints = match self.syscall_tracepoints.as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(v) => bail!(
                "bad config value: syscall_tracepoints = {v:?}: use on (every hook) or off \
                 (lean mode: no syscall tracepoint, see docs/performance.md)"
            ),
        };
        let hook_backend = match self.hook_backend.as_deref() {
            None => HookBackend::Auto,
            Some(v) => HookBackend::parse(v).with_context(|| {
                format!(
                    "bad config value: hook_backend = {v:?}: use auto (the cheapest the kernel \
                     allows, hook by hook), fentry, kprobe or tracepoint"
                )
            })?,
        };
        if let Some(b) = &self.btf {
            if !b.is_file() {
                bail!("bad config value: btf = {}: no such file", b.display());
            }
        }
        let file_excludes = self.file_excludes.unwrap_or_else(|| {
            vec![
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                general.state_dir.clone(),
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
        let mut watched: Vec<WatchPattern> = if self.no_default_watch_paths == Some(true) {
            Vec::new()
        } else {
            crate::watched::defaults()
        };
        for p in self.watch_paths.unwrap_or_default() {
            if !watched.contains(&p) {
                watched.push(p);
            }
        }
        if let Err(e) = kestrel_probes::compile_watched(&watched) {
            bail!("bad config value: watch_paths: {e}");
        }
        Ok(CollectConfig {
            ring_buffer_bytes: ring as u32,
            wakeup_bytes: wakeup,
            max_latency: Duration::from_millis(range(
                "max_latency_ms",
                self.max_latency_ms.unwrap_or(100),
                1,
                10_000,
            )?),
            file_excludes,
            watched,
            btf: self.btf,
            record_raw: self.record_raw,
            exit_events: self.exit_events.unwrap_or(true),
            syscall_tracepoints,
            hook_backend,
        })
    }
}

/// What the collect stage counts.
#[derive(Debug, Default)]
pub struct CollectCounters {
    /// Records read from the ring buffer.
    pub received: AtomicU64,
    /// Records that did not decode (dropped).
    pub decode_errors: AtomicU64,
    /// Longest time a record waited between its submission and its
    /// decoding, since start.
    pub max_delay_ns: AtomicU64,
}

/// Loads and attaches the probes, logging what each hook became.
pub fn load_probes(cfg: &CollectConfig) -> Result<Probes> {
    let probes = Probes::load(&ProbeConfig {
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        wakeup_bytes: cfg.wakeup_bytes,
        exit_events: cfg.exit_events,
        btf: cfg.btf.clone(),
        syscall_tracepoints: cfg.syscall_tracepoints,
        hook_backend: cfg.hook_backend,
    })?;
    let mut off = Vec::new();
    for p in probes.status() {
        match &p.state {
            ProbeState::Attached => {
                tracing::info!(program = p.program, hook = p.target, backend = p.backend,
                    why = %p.why, "probe attached")
            }
            ProbeState::NotApplicable(why) => {
                tracing::info!(program = p.program, hook = p.target, reason = %why, "probe not applicable")
            }
            ProbeState::Off(_) => off.push(p.target.trim_start_matches("tracepoint/")),
        }
    }
    let counts: Vec<String> = kestrel_probes::attached_by_backend(probes.status())
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(b, n)| format!("{b}={n}"))
        .collect();
    // The syscall tracepoint's reason names what the kernel refused.
    let tracepoint_why = probes
        .status()
        .iter()
        .find(|p| p.backend == "tracepoint" && p.state == ProbeState::Attached)
        .map(|p| p.why.clone())
        .unwrap_or_default();
    tracing::info!(
        hook_backend = %cfg.hook_backend,
        attached = %counts.join(" "),
        kernel = %probes.backends_summary(),
        tracepoint_because = %tracepoint_why,
        "hook backends"
    );
    if tracepoint_why.is_empty() {
        tracing::info!(
            "no syscall tracepoint attached: syscalls Kestrel does not watch pay nothing"
        );
    } else {
        tracing::warn!(
            reason = %tracepoint_why,
            "syscall hooks on tracepoints: every syscall of the host goes through the kernel's \
             slow path (see docs/performance.md, \"Hook backends\")"
        );
    }
    if cfg.syscall_tracepoints {
        tracing::info!(
            mode = "default",
            "syscall tracepoints on: every hook attached (--syscall-tracepoints off is lean mode)"
        );
    } else {
        tracing::info!(
            mode = "lean",
            left_out = off.len(),
            hooks = %off.join(" "),
            "syscall tracepoints off: these hooks are left out; file creations come from \
             fanotify (see docs/performance.md, \"Lean mode\", for what is lost)"
        );
    }
    Ok(probes)
}

/// The ring buffer's consumer.
pub struct Collector {
    enrich: EnrichStage,
    counters: Arc<CollectCounters>,
    last_decode_warning: Option<Instant>,
    /// `--record-raw`: every record, length-prefixed, for replay by
    /// `kestrel bench pipeline`. Dropped (and logged) at the first error.
    record_raw: Option<std::io::BufWriter<std::fs::File>>,
}

impl Collector {
    pub fn new(
        cfg: &CollectConfig,
        enrich: EnrichStage,
        counters: Arc<CollectCounters>,
    ) -> Result<Self> {
        let record_raw = match &cfg.record_raw {
            // The records hold process environments: root's alone, and
            // never written through a link or into a file another user
            // made (the file is emptied).
            Some(p) => Some(std::io::BufWriter::new(
                kestrel_sinks::safe::open_file(
                    p,
                    kestrel_sinks::safe::FileMode {
                        mode: 0o600,
                        truncate: true,
                    },
                )
                .map(|(_, f)| f)
                .with_context(|| format!("creating the raw record file {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Collector {
            enrich,
            counters,
            last_decode_warning: None,
            record_raw,
        })
    }

    /// Ring buffer callback. A non-zero return stops the current drain:
    /// used only when the rest of the chain is gone.
    pub fn on_record(&mut self, data: &[u8]) -> i32 {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = &mut self.record_raw {
            let r = w
                .write_all(&(data.len() as u32).to_le_bytes())
                .and_then(|()| w.write_all(data));
            if let Err(e) = r {
                tracing::error!(error = %e, "recording raw records failed; recording stopped");
                self.record_raw = None;
            }
        }
        let rec = match decode(data) {
            Ok(r) => r,
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                if self
                    .last_decode_warning
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    tracing::warn!(error = %e, "dropping a record that does not decode (counted in decode_errors)");
                    self.last_decode_warning = Some(Instant::now());
                }
                return 0;
            }
        };
        let now = kestrel_event::host::clock_ns(libc::CLOCK_BOOTTIME) as u64;
        self.counters
            .max_delay_ns
            .fetch_max(now.saturating_sub(rec.ktime_ns()), Ordering::Relaxed);
        match self.enrich.take(&rec) {
            Ok(()) => 0,
            Err(super::Closed) => -1,
        }
    }

    /// Takes a record made in user space as if the ring buffer had held
    /// it (lean mode's file creations), so that it is enriched as the
    /// kernel's are.
    pub fn take(&mut self, rec: &kestrel_decode::Record) -> Result<(), super::Closed> {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.enrich.take(rec)
    }

    /// The enrich stage's counters.
    pub fn enrich_counters(&self) -> EnrichStageCounters {
        self.enrich.counters()
    }

    /// Ends collection: the raw record file is flushed and the enrich
    /// stage passes on what it still holds. Returns its last counters.
    pub fn finish(mut self) -> EnrichStageCounters {
        if let Some(mut w) = self.record_raw.take() {
            if let Err(e) = w.flush() {
                tracing::error!(error = %e, "writing the raw record file failed");
            }
        }
        self.enrich.finish()
    }
}
