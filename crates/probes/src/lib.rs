//! Kestrel's kernel side: loads the BPF programs of `bpf/kestrel.bpf.c`,
//! attaches them to their tracepoints and hands out the ring buffer that
//! carries their records (laid out by `kestrel-abi`).
//!
//! Everything here needs root. Failures name what went wrong and what to do:
//! the missing privilege, the missing BTF, or the program the kernel refused
//! with the kernel's own reason.

mod skel {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/kestrel.skel.rs"));
}

use std::collections::VecDeque;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kestrel_abi as abi;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, PrintLevel, RingBuffer, RingBufferBuilder};
use skel::{KestrelSkel, KestrelSkelBuilder};

pub use libbpf_rs::RingBuffer as EventRing;

/// Where the kernel publishes its own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Ancestors an exec record names, at most; also how far up the kernel
/// looks for the ancestor holding a socket on stdin or stdout.
pub const PID_TREE_MAX: u32 = abi::KESTREL_PID_TREE_MAX;

const TRACEFS: &str = "/sys/kernel/tracing";

/// Settings of the kernel side, fixed at load time.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Size of the BPF ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
    /// Buffered bytes that make the kernel wake the consumer.
    pub wakeup_bytes: u64,
    /// BTF file describing the running kernel, for kernels that do not
    /// publish their own at [`KERNEL_BTF`].
    pub btf: Option<PathBuf>,
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
    /// The kernel refused to load a program.
    #[error("the kernel refused to load BPF program {program}: {reason}{}", fmt_log(.log))]
    Load {
        /// The refused program, as named in `bpf/kestrel.bpf.c`.
        program: String,
        /// The kernel's reason (errno) as libbpf reported it.
        reason: String,
        /// The last lines libbpf logged, verifier output included.
        log: String,
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

/// Counters kept in the kernel, summed over CPUs, for one record kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounters {
    /// Records written to the ring buffer.
    pub submitted: u64,
    /// Records lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Records abandoned for another reason.
    pub errors: u64,
}

/// The kernel's counters for every record kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    /// Exec records.
    pub exec: KindCounters,
    /// Connect records.
    pub connect: KindCounters,
    /// ptrace records.
    pub ptrace: KindCounters,
    /// DNS records.
    pub dns: KindCounters,
    /// Credential change records.
    pub cred: KindCounters,
    /// Module load records.
    pub module: KindCounters,
    /// File creation records.
    pub file: KindCounters,
}

impl KernelCounters {
    /// All records lost in the kernel, whatever the kind.
    pub fn lost(&self) -> u64 {
        [
            self.exec,
            self.connect,
            self.ptrace,
            self.dns,
            self.cred,
            self.module,
        ]
        .iter()
        .map(|k| k.ringbuf_full + k.errors)
        .sum()
    }
}

/// Run statistics of one BPF program (with `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone)]
pub struct ProgramStats {
    /// Program name.
    pub name: String,
    /// Where it is attached.
    pub target: &'static str,
    /// Times it ran.
    pub run_cnt: u64,
    /// Total time spent in it.
    pub run_time_ns: u64,
}

/// One program and what it hooks.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    /// Program name.
    pub program: &'static str,
    /// Tracepoint it is attached to.
    pub target: &'static str,
    /// A tracefs event (under events/) that must exist for the program to
    /// apply at all, and what is not seen without it; `None` for programs
    /// every supported kernel can run.
    pub requires: Option<(&'static str, &'static str)>,
}

/// What became of one program at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    /// Loaded and attached.
    Attached,
    /// Left out: this kernel cannot produce what it watches.
    NotApplicable(String),
}

/// A program and what became of it.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Program name.
    pub program: &'static str,
    /// Its hook.
    pub target: &'static str,
    /// Attached or not applicable.
    pub state: ProbeState,
}

/// The names of every program Kestrel attaches (the kernel keeps only
/// the first 15 bytes of each).
pub fn program_names() -> impl Iterator<Item = &'static str> {
    PROGRAMS.iter().map(|p| p.program)
}

/// Why the module programs may not apply.
const MODULES_MISSING: &str = "built without the feature it watches";

/// Every program Kestrel attaches, with its tracepoint. Each is the only
/// source of its events; those with `requires` are left out, and said to
/// be, on kernels without their tracepoint.
const PROGRAMS: &[ProbeStatus] = &[
    ProbeStatus {
        program: "handle_exec",
        target: "tp_btf/sched_process_exec",
        requires: None,
    },
    ProbeStatus {
        program: "handle_execve_exit",
        target: "tracepoint/syscalls/sys_exit_execve",
        requires: None,
    },
    ProbeStatus {
        program: "handle_execveat_exit",
        target: "tracepoint/syscalls/sys_exit_execveat",
        requires: None,
    },
    ProbeStatus {
        program: "handle_connect_exit",
        target: "tracepoint/syscalls/sys_exit_connect",
        requires: None,
    },
    ProbeStatus {
        program: "handle_sock_state",
        target: "tp_btf/inet_sock_set_state",
        requires: None,
    },
    ProbeStatus {
        program: "handle_ptrace_exit",
        target: "tracepoint/syscalls/sys_exit_ptrace",
        requires: None,
    },
    ProbeStatus {
        program: "handle_recvfrom_exit",
        target: "tracepoint/syscalls/sys_exit_recvfrom",
        requires: None,
    },
    ProbeStatus {
        program: "handle_recvmsg_exit",
        target: "tracepoint/syscalls/sys_exit_recvmsg",
        requires: None,
    },
    ProbeStatus {
        program: "handle_recvmmsg_exit",
        target: "tracepoint/syscalls/sys_exit_recvmmsg",
        requires: None,
    },
    ProbeStatus {
        program: "handle_sock_recv",
        target: "tp_btf/sock_recv_length",
        requires: Some((
            "sock/sock_recv_length",
            "added in Linux 6.3: DNS answers taken with read(2) or readv(2), as Go's resolver \
             does, are not seen",
        )),
    },
    ProbeStatus {
        program: "handle_fork",
        target: "tp_btf/sched_process_fork",
        requires: None,
    },
    ProbeStatus {
        program: "handle_exit",
        target: "tp_btf/sched_process_exit",
        requires: None,
    },
    ProbeStatus {
        program: "handle_unshare_exit",
        target: "tracepoint/syscalls/sys_exit_unshare",
        requires: None,
    },
    ProbeStatus {
        program: "handle_setns_exit",
        target: "tracepoint/syscalls/sys_exit_setns",
        requires: None,
    },
    ProbeStatus {
        program: "handle_cgroup_attach",
        target: "tp_btf/cgroup_attach_task",
        requires: None,
    },
    ProbeStatus {
        program: "handle_dup_exit",
        target: "tracepoint/syscalls/sys_exit_dup",
        requires: None,
    },
    ProbeStatus {
        program: "handle_dup2_exit",
        target: "tracepoint/syscalls/sys_exit_dup2",
        requires: None,
    },
    ProbeStatus {
        program: "handle_dup3_exit",
        target: "tracepoint/syscalls/sys_exit_dup3",
        requires: None,
    },
    ProbeStatus {
        program: "handle_openat_exit",
        target: "tracepoint/syscalls/sys_exit_openat",
        requires: None,
    },
    ProbeStatus {
        program: "handle_open_exit",
        target: "tracepoint/syscalls/sys_exit_open",
        requires: None,
    },
    ProbeStatus {
        program: "handle_creat_exit",
        target: "tracepoint/syscalls/sys_exit_creat",
        requires: None,
    },
    ProbeStatus {
        program: "handle_openat2_exit",
        target: "tracepoint/syscalls/sys_exit_openat2",
        requires: None,
    },
    ProbeStatus {
        program: "handle_mknodat_exit",
        target: "tracepoint/syscalls/sys_exit_mknodat",
        requires: None,
    },
    ProbeStatus {
        program: "handle_mknod_exit",
        target: "tracepoint/syscalls/sys_exit_mknod",
        requires: None,
    },
    ProbeStatus {
        program: "handle_finit_module_exit",
        target: "tracepoint/syscalls/sys_exit_finit_module",
        requires: Some(("syscalls/sys_exit_finit_module", MODULES_MISSING)),
    },
    ProbeStatus {
        program: "handle_init_module_exit",
        target: "tracepoint/syscalls/sys_exit_init_module",
        requires: Some(("syscalls/sys_exit_init_module", MODULES_MISSING)),
    },
];

fn program<'a>(skel: &'a KestrelSkel<'static>, name: &str) -> &'a libbpf_rs::ProgramMut<'static> {
    let p = &skel.progs;
    match name {
        "handle_exec" => &p.handle_exec,
        "handle_execve_exit" => &p.handle_execve_exit,
        "handle_execveat_exit" => &p.handle_execveat_exit,
        "handle_connect_exit" => &p.handle_connect_exit,
        "handle_sock_state" => &p.handle_sock_state,
        "handle_ptrace_exit" => &p.handle_ptrace_exit,
        "handle_recvfrom_exit" => &p.handle_recvfrom_exit,
        "handle_recvmsg_exit" => &p.handle_recvmsg_exit,
        "handle_recvmmsg_exit" => &p.handle_recvmmsg_exit,
        "handle_sock_recv" => &p.handle_sock_recv,
        "handle_fork" => &p.handle_fork,
        "handle_exit" => &p.handle_exit,
        "handle_unshare_exit" => &p.handle_unshare_exit,
        "handle_setns_exit" => &p.handle_setns_exit,
        "handle_cgroup_attach" => &p.handle_cgroup_attach,
        "handle_dup_exit" => &p.handle_dup_exit,
        "handle_dup2_exit" => &p.handle_dup2_exit,
        "handle_dup3_exit" => &p.handle_dup3_exit,
        "handle_finit_module_exit" => &p.handle_finit_module_exit,
        "handle_init_module_exit" => &p.handle_init_module_exit,
        "handle_openat_exit" => &p.handle_openat_exit,
        "handle_open_exit" => &p.handle_open_exit,
        "handle_creat_exit" => &p.handle_creat_exit,
        "handle_openat2_exit" => &p.handle_openat2_exit,
        "handle_mknodat_exit" => &p.handle_mknodat_exit,
        "handle_mknod_exit" => &p.handle_mknod_exit,
        other => unreachable!("{other} is not a program of kestrel.bpf.c"),
    }
}

fn open_program<'a, 'obj>(
    p: &'a mut skel::OpenKestrelProgs<'obj>,
    name: &str,
) -> &'a mut libbpf_rs::OpenProgramMut<'obj> {
    match name {
        "handle_finit_module_exit" => &mut p.handle_finit_module_exit,
        "handle_init_module_exit" => &mut p.handle_init_module_exit,
        "handle_sock_recv" => &mut p.handle_sock_recv,
        other => unreachable!("{other} is not an optional program"),
    }
}

/// A process that was running before the agent started, as
/// [`Probes::seed_processes`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedProcess {
    /// Process id.
    pub tgid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Whether its stdin or stdout is an IPv4 or IPv6 socket.
    pub stdio_inet_socket: bool,
    /// The nearest ancestor whose stdin or stdout is one (0: none).
    pub holder: u32,
}

/// A directory as the kernel's file_excludes map keys it: its device (in
/// the kernel's encoding) and inode number. It names what the directory
/// is, not where: a directory removed and created again, or covered by a
/// mount, has another key under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirKey([u8; 16]);

impl DirKey {
    /// The key of the directory `dir` names now (symbolic links followed,
    /// as the kernel's walk up from a new file sees real directories).
    pub fn of(dir: &Path) -> std::io::Result<DirKey> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir)?;
        if !m.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        // The kernel's dev_t is major << 20 | minor; stat's is glibc's.
        let (major, minor) = (libc::major(m.dev()) as u64, libc::minor(m.dev()) as u64);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&((major << 20) | minor).to_ne_bytes());
        key[8..].copy_from_slice(&m.ino().to_ne_bytes());
        Ok(DirKey(key))
    }
}

/// The loaded and attached kernel side. Dropping it detaches everything.
pub struct Probes {
    skel: KestrelSkel<'static>,
    links: Vec<Link>,
    report: Vec<ProbeReport>,
}

static LIBBPF_LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const LOG_LINES: usize = 60;

fn libbpf_print(level: PrintLevel, msg: String) {
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    for line in msg.lines() {
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line.to_string());
    }
}

fn take_log() -> String {
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let s = log.iter().cloned().collect::<Vec<_>>().join("\n");
    log.clear();
    s
}

/// Finds the program libbpf complained about ("prog 'handle_exec': ...").
fn refused_program(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let start = l.find("prog '")? + 6;
        let len = l[start..].find('\'')?;
        Some(l[start..start + len].to_string())
    })
}

/// Checks what must hold before anything is loaded.
pub fn preflight(cfg: &ProbeConfig) -> Result<(), ProbeError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(ProbeError::NotRoot(euid));
    }
    let btf = cfg.btf.clone().unwrap_or_else(|| PathBuf::from(KERNEL_BTF));
    if !btf.is_file() {
        return Err(ProbeError::NoBtf(btf));
    }
    Ok(())
}

/// Mounts tracefs if this machine has not: syscall tracepoints are found
/// through it.
pub fn ensure_tracefs() -> Result<(), ProbeError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let src = CString::new("nodev").unwrap();
    let target = CString::new(TRACEFS).unwrap();
    let fstype = CString::new("tracefs").unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(())
}

impl Probes {
    /// Loads and attaches every program.
    pub fn load(cfg: &ProbeConfig) -> Result<Self, ProbeError> {
        preflight(cfg)?;
        ensure_tracefs()?;
        libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
        take_log();

        // The skeleton borrows its object storage for as long as it lives;
        // the agent loads once per process, so the storage is leaked.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let builder = KestrelSkelBuilder::default();
        let btf_path = cfg
            .btf
            .as_ref()
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).expect("path has no NUL"));
        let open = match &btf_path {
            Some(p) => {
                let opts = libbpf_sys::bpf_object_open_opts {
                    sz: size_of::<libbpf_sys::bpf_object_open_opts>() as libbpf_sys::size_t,
                    btf_custom_path: p.as_ptr(),
                    ..Default::default()
                };
                builder.open_opts(opts, storage)
            }
            None => builder.open(storage),
        };
        let mut open = open.map_err(|source| ProbeError::Libbpf {
            what: "opening the BPF object failed",
            source,
            log: take_log(),
        })?;

        open.maps
            .events
            .set_max_entries(cfg.ring_buffer_bytes)
            .map_err(|source| ProbeError::Libbpf {
                what: "sizing the ring buffer failed",
                source,
                log: take_log(),
            })?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has read-only settings");
        rodata.self_tgid = std::process::id();
        rodata.wakeup_bytes = cfg.wakeup_bytes;

        // A program whose tracepoint this kernel lacks watches something
        // that cannot happen here (module loading on a kernel without
        // modules): leave it out and say so, rather than fail.
        let mut report = Vec::new();
        for p in PROGRAMS {
            let state = match p.requires {
                Some((ev, lost)) if !Path::new(TRACEFS).join("events").join(ev).exists() => {
                    open_program(&mut open.progs, p.program).set_autoload(false);
                    ProbeState::NotApplicable(format!(
                        "this kernel has no tracepoint {ev} ({lost})"
                    ))
                }
                _ => ProbeState::Attached,
            };
            report.push(ProbeReport {
                program: p.program,
                target: p.target,
                state,
            });
        }

        let skel = open.load().map_err(|e| {
            let log = take_log();
            ProbeError::Load {
                program: refused_program(&log).unwrap_or_else(|| "(unknown)".into()),
                reason: e.to_string(),
                log,
            }
        })?;

        let mut links = Vec::new();
        for (p, r) in PROGRAMS.iter().zip(&report) {
            if r.state != ProbeState::Attached {
                continue;
            }
            let prog = program(&skel, p.program);
            let link = prog.attach().map_err(|e| ProbeError::Attach {
                program: p.program.to_string(),
                target: p.target.to_string(),
                reason: format!("{e}{}", fmt_log(&take_log())),
            })?;
            tracing::debug!(program = p.program, target = p.target, "attached");
            links.push(link);
        }
        Ok(Probes {
            skel,
            links,
            report,
        })
    }

    /// Detaches every program; the maps stay readable, so what the ring
    /// buffer holds can still be drained.
    pub fn detach(&mut self) {
        self.links.clear();
    }

    /// Stops reporting files created under the directory `key` names (and
    /// below it). The check runs in the kernel, so excluded creations cost
    /// no ring buffer space.
    pub fn exclude_dir(&self, key: &DirKey) -> std::io::Result<()> {
        self.skel
            .maps
            .file_excludes
            .update(&key.0, &[1u8], MapFlags::ANY)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Reports files created under that directory again, undoing
    /// [`Probes::exclude_dir`].
    pub fn include_dir(&self, key: &DirKey) -> std::io::Result<()> {
        match self.skel.maps.file_excludes.delete(&key.0) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Records what the kernel side keeps per process for processes that
    /// were running before the agent started: their credentials, so that
    /// one escalating later is compared with them, and whether stdin or
    /// stdout is an inet socket, so their descendants' execs name it (the
    /// kernel side learns the others at fork, exec and dup). Existing
    /// entries, made since attach, are newer and kept.
    pub fn seed_processes(&self, procs: impl IntoIterator<Item = SeedProcess>) -> usize {
        let mut n = 0;
        for p in procs {
            let entry = abi::kestrel_proc {
                uid: p.uid,
                euid: p.euid,
                flags: if p.stdio_inet_socket {
                    abi::KESTREL_PROC_STDIO_SOCKET
                } else {
                    0
                },
                holder: p.holder,
                // Nothing cached: the kernel side reads it at the first event.
                ..Default::default()
            };
            // SAFETY: kestrel_proc is plain integers, its u64s 8-aligned,
            // no padding.
            let value = unsafe {
                std::slice::from_raw_parts(
                    (&entry as *const abi::kestrel_proc).cast::<u8>(),
                    size_of::<abi::kestrel_proc>(),
                )
            };
            // Task storage is keyed by a pidfd from user space.
            // SAFETY: pidfd_open takes no pointers.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.tgid as libc::pid_t, 0) };
            if fd < 0 {
                continue; // gone since /proc was read
            }
            // SAFETY: a new descriptor, owned here only.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
            if self
                .skel
                .maps
                .procs
                .update(&fd.as_raw_fd().to_ne_bytes(), value, MapFlags::NO_EXIST)
                .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Every program, attached or not applicable, with its hook.
    pub fn status(&self) -> &[ProbeReport] {
        &self.report
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
                log: take_log(),
            })?;
        b.build().map_err(|source| ProbeError::Libbpf {
            what: "creating the ring buffer consumer failed",
            source,
            log: take_log(),
        })
    }

    /// Reads the kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let read = |kind: u32| -> Result<KindCounters, ProbeError> {
            let mut v = [0u64; abi::KESTREL_CTR_MAX as usize];
            for (ctr, slot) in v.iter_mut().enumerate() {
                let key = kind * abi::KESTREL_CTR_MAX + ctr as u32;
                let per_cpu = self
                    .skel
                    .maps
                    .counters
                    .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                    .map_err(|source| ProbeError::Libbpf {
                        what: "reading the kernel counters failed",
                        source,
                        log: String::new(),
                    })?
                    .unwrap_or_default();
                *slot = per_cpu
                    .iter()
                    .filter_map(|b| b.get(..8))
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
                    .sum();
            }
            Ok(KindCounters {
                submitted: v[abi::KESTREL_CTR_SUBMITTED as usize],
                ringbuf_full: v[abi::KESTREL_CTR_RINGBUF_FULL as usize],
                errors: v[abi::KESTREL_CTR_ERROR as usize],
            })
        };
        Ok(KernelCounters {
            exec: read(abi::KESTREL_KIND_EXEC)?,
            connect: read(abi::KESTREL_KIND_CONNECT)?,
            ptrace: read(abi::KESTREL_KIND_PTRACE)?,
            dns: read(abi::KESTREL_KIND_DNS)?,
            cred: read(abi::KESTREL_KIND_CRED)?,
            module: read(abi::KESTREL_KIND_MODULE)?,
            file: read(abi::KESTREL_KIND_FILE)?,
        })
    }

    /// Run count and time of each program, as kept by the kernel when
    /// `kernel.bpf_stats_enabled` is 1 (zero otherwise).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.report
            .iter()
            .filter(|r| r.state == ProbeState::Attached)
            .filter_map(|p| {
                let prog = program(&self.skel, p.program);
                let mut info = libbpf_sys::bpf_prog_info::default();
                let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
                // SAFETY: info is a valid bpf_prog_info of `len` bytes.
                let rc = unsafe {
                    libbpf_sys::bpf_obj_get_info_by_fd(
                        prog.as_fd().as_raw_fd(),
                        (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
                        &mut len,
                    )
                };
                (rc == 0).then(|| ProgramStats {
                    name: p.program.to_string(),
                    target: p.target,
                    run_cnt: info.run_cnt,
                    run_time_ns: info.run_time_ns,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_refused_program() {
        let log = "libbpf: prog 'handle_exec': BPF program load failed: Permission denied\n\
                   libbpf: prog 'handle_exec': -- BEGIN PROG LOAD LOG --";
        assert_eq!(refused_program(log).as_deref(), Some("handle_exec"));
        assert_eq!(refused_program("nothing here"), None);
    }
}
