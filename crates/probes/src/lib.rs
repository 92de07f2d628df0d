//! Kestrel's kernel side: loads the BPF programs of `bpf/` (one object,
//! `bpf/kestrel.bpf.c`), attaches them to their tracepoints and hands out
//! the ring buffer that carries their records (laid out by `kestrel-abi`).
//!
//! Which programs there are, and which kind of record each makes, is the
//! table of kinds in `kestrel-abi` ([`Kind`], [`kinds::programs`]): loading
//! checks the object against it, and the counters follow it.
//!
//! Everything here needs root. Failures name what went wrong and what to do:
//! the missing privilege, the missing BTF, or the program the kernel refused
//! with the kernel's own reason.

mod skel {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kestrel.skel.rs"));
}

mod backends;
mod counters;
mod excludes;
mod load;
mod seed;
mod watch;

use std::path::PathBuf;

use kestrel_abi as abi;
use libbpf_rs::{Link, RingBuffer, RingBufferBuilder};
use skel::KestrelSkel;

pub use backends::HookBackend;
pub use counters::{KernelCounters, KindCounters, ProgramStats};
pub use excludes::{DirKey, FILE_EXCLUDES_MAX};
pub use kestrel_abi::kinds;
pub use kestrel_abi::{Backend, Kind, KindSpec};
pub use libbpf_rs::RingBuffer as EventRing;
pub use load::{ensure_tracefs, preflight};
pub use seed::{SeedExe, SeedProcess};
pub use watch::{compile as compile_watched, WatchPattern, WatchPatternError, WATCH_MAX};

/// Where the kernel publishes its own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Ancestors an exec record names, at most; also how far up the kernel
/// looks for the ancestor holding a socket on stdin or stdout.
pub const PID_TREE_MAX: u32 = abi::KESTREL_PID_TREE_MAX;

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// Settings of the kernel side, fixed at load time.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Size of the BPF ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
    /// Buffered bytes that make the kernel wake the consumer.
    pub wakeup_bytes: u64,
    /// Whether process exits (data_type 60) are sent.
    pub exit_events: bool,
    /// BTF file describing the running kernel, for kernels that do not
    /// publish their own at [`KERNEL_BTF`].
    pub btf: Option<PathBuf>,
    /// Whether programs on syscall tracepoints are loaded. false is lean
    /// mode: they are left out, as [`ProbeState::Off`], because one of
    /// them attached slows every syscall of the host.
    pub syscall_tracepoints: bool,
    /// What the syscall hooks may be attached with (`--hook-backend`).
    pub hook_backend: HookBackend,
}

/// Why the kernel side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Loading BPF programs needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN).
    #[error("kestrel must run as root to load its BPF programs (effective uid is {0}); run it with sudo or as root")]
    NotRoot(u32),
    /// No BTF for the running kernel.
    #[error("no BTF type information for this kernel at {0}: Kestrel needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.15), or a BTF file for this kernel given with --btf")]
    NoBtf(PathBuf),
    /// tracefs was missing and could not be mounted.
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}; mount it with `mount -t tracefs nodev {TRACEFS}`")]
    Tracefs(std::io::Error),
    /// The BPF object and the table of kinds name different programs: a
    /// build made from inconsistent sources.
    #[error("the BPF object and the table of kinds (KESTREL_KINDS in crates/abi/include/kestrel_abi.h) disagree: {0}")]
    Table(String),
    /// The kernel refused to load a program.
    #[error("the kernel refused to load BPF program {program}: {reason}{}", fmt_log(.log))]
    Load {
        /// The refused program, as named in `bpf/*.bpf.c`.
        program: String,
        /// The kernel's reason (errno) as libbpf reported it.
        reason: String,
        /// The last lines libbpf logged, verifier output included.
        log: String,
    },
    /// `--hook-backend` named a backend one hook cannot have here.
    #[error("--hook-backend {backend}: program {program} cannot use it on this kernel: {reason}; use --hook-backend auto to let each hook take what the kernel allows")]
    Backend {
        /// The table's program.
        program: String,
        /// The backend asked for.
        backend: String,
        /// Why the kernel does not allow it.
        reason: String,
    },
    /// A program loaded but could not be attached.
    #[error("could not attach BPF program {program} to {target}: {reason}")]
    Attach {
        /// The program.
        program: String,
        /// Where it should have gone.
        target: String,
        /// The kernel's reason.
        reason: String,
    },
    /// Any other libbpf failure.
    #[error("{what}: {source}{}", fmt_log(.log))]
    Libbpf {
        /// What Kestrel was doing.
        what: &'static str,
        /// The underlying error.
        source: libbpf_rs::Error,
        /// The last lines libbpf logged.
        log: String,
    },
}

fn fmt_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\nlibbpf said:\n{log}")
    }
}

/// What became of one program at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    /// Loaded and attached.
    Attached,
    /// Left out: this kernel cannot produce what it watches.
    NotApplicable(String),
    /// Left out by the settings (`--syscall-tracepoints off`); says
    /// which.
    Off(String),
}

impl ProbeState {
    /// Its name in the heartbeat and /metrics: `attached`,
    /// `not_applicable` or `off`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeState::Attached => "attached",
            ProbeState::NotApplicable(_) => "not_applicable",
            ProbeState::Off(_) => "off",
        }
    }

    /// Why it is not attached; `None` when it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ProbeState::Attached => None,
            ProbeState::NotApplicable(why) | ProbeState::Off(why) => Some(why),
        }
    }
}

/// How many attached programs each backend carries, for every backend a
/// program can have (fentry, kprobe, tracepoint, tp_btf), in that order.
pub fn attached_by_backend(report: &[ProbeReport]) -> Vec<(&'static str, u64)> {
    Backend::ALL
        .iter()
        .map(|b| b.as_str())
        .chain(["tp_btf"])
        .map(|b| {
            let n = report
                .iter()
                .filter(|p| p.state == ProbeState::Attached && p.backend == b)
                .count();
            (b, n as u64)
        })
        .collect()
}

/// A program and what became of it.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Program name, as the table of kinds has it (its tracepoint twin's).
    pub program: &'static str,
    /// The name of the twin loaded (`fe_...`, `kp_...` or `program`).
    pub attached_as: &'static str,
    /// Its hook, as attached (`fexit/__x64_sys_openat`, ...).
    pub target: &'static str,
    /// "fentry", "kprobe", "tracepoint" (a syscall tracepoint), "tp_btf",
    /// or "none" when left out.
    pub backend: &'static str,
    /// Why this backend and not a cheaper one (what the kernel refused).
    pub why: String,
    /// Attached or not applicable.
    pub state: ProbeState,
}

/// The names of every program Kestrel may attach, each syscall hook's
/// fentry and kprobe twins too (the kernel keeps only the first 15 bytes
/// of each).
pub fn program_names() -> impl Iterator<Item = &'static str> {
    kinds::programs().flat_map(|p| p.names())
}

/// The loaded and attached kernel side. Dropping it detaches everything.
pub struct Probes {
    skel: KestrelSkel<'static>,
    links: Vec<Link>,
    report: Vec<ProbeReport>,
    /// What the kernel allowed (fentry, kprobes), as found at load.
    kernel_summary: String,
}

impl Probes {
    /// Detaches every program; the maps stay readable, so what the ring
    /// buffer holds can still be drained.
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// Every program, attached or not applicable, with its hook.
    pub fn status(&self) -> &[ProbeReport] {
        &self.report
    }

    /// What the kernel allowed when the programs were loaded: "fentry:
    /// allowed; kprobe: allowed", or why not ("fentry refused: EPERM ...").
    pub fn backends_summary(&self) -> &str {
        &self.kernel_summary
    }

    /// A consumer of the event ring buffer; `f` sees each record's bytes.
    pub fn ring_buffer<'cb, F>(&self, f: F) -> Result<RingBuffer<'cb>, ProbeError>
    where
        F: FnMut(&[u8]) -> i32 + 'cb,
    {
        let mut b = RingBufferBuilder::new();
        b.add(&self.skel.maps.events, f)
            .map_err(|source| ProbeError::Libbpf {
                what: "adding the ring buffer failed",
                source,
                log: load::take_log(),
            })?;
        b.build().map_err(|source| ProbeError::Libbpf {
            what: "creating the ring buffer consumer failed",
            source,
            log: load::take_log(),
        })
    }
}
