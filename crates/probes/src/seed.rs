//! The process table's entries for processes that were running before
//! the agent started.

use std::os::fd::{AsRawFd, FromRawFd};

use kestrel_abi as abi;
use libbpf_rs::{MapCore, MapFlags};

use crate::Probes;

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
    /// The file it runs, as its exec would have recorded it (None: a
    /// kernel thread, or /proc did not say).
    pub exe: Option<SeedExe>,
}

/// The identity of a running process's executable, from `stat` of its
/// /proc/PID/exe link: the same inode the kernel keeps for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedExe {
    /// The device in the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
    /// Inode change time, ns.
    pub ctime_ns: u64,
    /// No name left (the link ends in " (deleted)").
    pub deleted: bool,
    /// A memfd_create file.
    pub memfd: bool,
}

impl Probes {
    /// Records what the kernel side keeps per process for processes that
    /// were running before the agent started: their credentials, so that
    /// one escalating later is compared with them; whether stdin or
    /// stdout is an inet socket, so their descendants' execs name it (the
    /// kernel side learns the others at fork, exec and dup); and their
    /// executable's identity, so that a child they fork and that never
    /// execs names its program even once it is gone (a daemon's
    /// short-lived worker). Existing entries, made since attach, are newer
    /// and kept.
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
                exe_ino: p.exe.map_or(0, |x| x.ino),
                exe_ctime_ns: p.exe.map_or(0, |x| x.ctime_ns),
                exe_dev: p.exe.map_or(0, |x| x.dev),
                exe_flags: p.exe.map_or(0, |x| {
                    abi::KESTREL_EXE_KNOWN
                        | if x.deleted {
                            abi::KESTREL_EXE_DELETED
                        } else {
                            0
                        }
                        | if x.memfd { abi::KESTREL_EXE_MEMFD } else { 0 }
                }),
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
}
