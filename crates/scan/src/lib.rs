//! Kestrel's on-demand scans. [`rootkit::scan`] looks for the marks kernel
//! rootkits leave: hooked syscall dispatch, interrupt and /proc operation
//! tables, modules hidden from the module list, and module-owned ftrace
//! hooks and kprobes.
//!
//! Kernel memory is read from eBPF (a program run on demand with
//! BPF_PROG_TEST_RUN, see `kmem`), kernel addresses come from
//! /proc/kallsyms, and every decision is pure code in [`check`], unit
//! tested over synthetic tables and symbol maps.

pub mod check;
mod kmem;
pub mod rootkit;

/// Why a scan could not run. Findings are never errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the scan depends on could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// /proc/kallsyms shows no addresses: not root, or kptr_restrict=2.
    #[error("/proc/kallsyms shows no kernel addresses (run as root; kernel.kptr_restrict must be below 2)")]
    NoAddresses,
    /// A symbol every scan needs is missing from /proc/kallsyms.
    #[error("/proc/kallsyms lists no {0}")]
    MissingSymbol(&'static str),
    /// Loading or running the BPF reader failed.
    #[error("BPF: {0}")]
    Bpf(String),
    /// The kernel refused to copy memory the scan must read.
    #[error("reading {len} bytes of kernel memory at {addr:#x} failed (errno {errno})")]
    Read {
        /// Kernel address.
        addr: u64,
        /// Bytes asked for.
        len: usize,
        /// The errno bpf_probe_read_kernel returned.
        errno: i64,
    },
}
