//! data_types 308 and 272: setns(2) and unshare(2).

use kestrel_abi as abi;

use crate::common::{read_pod, task};
use crate::{DecodeError, Task};

/// What setns's descriptor was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsFd {
    /// Not a namespace or process descriptor (or unshare, which has none).
    Other,
    /// A namespace file (/proc/PID/ns/*, or one bind-mounted elsewhere).
    Nsfs,
    /// A process descriptor (pidfd_open, clone's CLONE_PIDFD).
    Pidfd,
}

/// The namespace types, in the order of `Ns::target`, with the CLONE_NEW*
/// bit of each and its name as in /proc/PID/ns/.
pub const NS_TYPES: [(u32, &str); abi::KESTREL_NS_TYPES as usize] = [
    (0x0002_0000, "mnt"),
    (0x2000_0000, "pid"),
    (0x4000_0000, "net"),
    (0x0400_0000, "uts"),
    (0x0800_0000, "ipc"),
    (0x1000_0000, "user"),
    (0x0200_0000, "cgroup"),
    (0x0000_0080, "time"),
];

/// A setns(2) or unshare(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns {
    /// Capture time (the call's entry), ns since boot.
    pub ktime_ns: u64,
    /// The caller as the call began: its namespaces before the call.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// setns (false: unshare).
    pub setns: bool,
    /// unshare's flags, setns's nstype.
    pub flags: u64,
    /// CLONE_NEW* bits of the namespaces concerned.
    pub ns_types: u32,
    /// setns's descriptor (-1 for unshare).
    pub fd: i32,
    /// What it was.
    pub fd_kind: NsFd,
    /// A pidfd's process, host pid (0: none).
    pub target_pid: u32,
    /// By [`NS_TYPES`], the inode number of the namespace the call moves
    /// the process to, 0 where none.
    pub target: [u32; abi::KESTREL_NS_TYPES as usize],
}

/// What `Record::Ns` holds.
pub type Decoded = Ns;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Ns, DecodeError> {
    let n: abi::kestrel_ns = read_pod(buf, 0, hdr.kind)?;
    Ok(Ns {
        ktime_ns: hdr.ktime_ns,
        task: task(&n.task),
        res: n.res,
        setns: n.syscall == abi::KESTREL_NS_SETNS,
        flags: n.flags,
        ns_types: n.ns_types,
        fd: n.fd,
        fd_kind: match n.fd_kind {
            abi::KESTREL_NS_FD_NSFS => NsFd::Nsfs,
            abi::KESTREL_NS_FD_PIDFD => NsFd::Pidfd,
            _ => NsFd::Other,
        },
        target_pid: n.target_pid,
        target: n.target,
    })
}
