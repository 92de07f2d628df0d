//! data_type 165: mount(2), and move_mount(2) of the new mount API.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, join_reversed, read_pod, task};
use crate::{Ancestor, DecodeError, Task};

/// The call that mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountVia {
    /// mount(2).
    Mount,
    /// move_mount(2), attaching a mount made by fsmount or open_tree (or
    /// moving one).
    MoveMount,
    /// fsmount(2): a mount made from an fsopen context, not attached yet
    /// but usable through its descriptor.
    Fsmount,
}

/// A mount(2) or move_mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// Which call.
    pub via: MountVia,
    /// mount's mountflags (MS_*), move_mount's flags (MOVE_MOUNT_*), or
    /// fsmount's attr_flags (MOUNT_ATTR_*).
    pub flags: u64,
    /// The source as given (mount's dev_name, move_mount's from path), or
    /// the mount's own source (`dev_from_kernel`).
    pub dev: Vec<u8>,
    /// `dev` and `fstype` are the kernel's, from the mount descriptor.
    pub dev_from_kernel: bool,
    /// The source was longer than the copy.
    pub dev_truncated: bool,
    /// The filesystem type (empty for a bind, a move or a remount).
    pub fstype: Vec<u8>,
    /// The mount point: absolute when the kernel walked it or it was given
    /// so; a relative target joined to its directory.
    pub file_path: Vec<u8>,
    /// The target as given (empty when `file_path` was walked from the
    /// new mount).
    pub target: Vec<u8>,
    /// The target or the directory walk was cut.
    pub path_truncated: bool,
    /// The parent first, then its parent, up to KESTREL_PID_TREE_MAX.
    pub ancestors: Vec<Ancestor>,
    /// The tree went on above the last ancestor.
    pub pid_tree_truncated: bool,
}

/// What `Record::Mount` holds.
pub type Decoded = Box<Mount>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Mount, DecodeError> {
    let m: Box<abi::kestrel_mount> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let target = cstr(bytes_of(&m.target));
    let n = (m.ancestors_len as usize).min(m.ancestors.len());
    let ancestors = m.ancestors[..n]
        .iter()
        .map(|a| Ancestor {
            pid: a.pid,
            start_boottime: None,
            comm: cstr(bytes_of(&a.comm)),
        })
        .collect();
    let len = (m.dir.len as usize).min(m.dir.bytes.len());
    let walked = m.flags2 & abi::KESTREL_MOUNT_DIR_IS_MOUNTPOINT != 0;
    let file_path = if walked {
        join_reversed(&m.dir.bytes[..len])
    } else if target.starts_with(b"/") || target.is_empty() || len == 0 && m.dir.truncated == 0 {
        target.clone()
    } else {
        let mut p = join_reversed(&m.dir.bytes[..len]);
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(&target);
        p
    };
    Ok(Mount {
        ktime_ns: hdr.ktime_ns,
        task: task(&m.task),
        res: m.res,
        via: match m.via {
            abi::KESTREL_MOUNT_VIA_MOVE_MOUNT => MountVia::MoveMount,
            abi::KESTREL_MOUNT_VIA_FSMOUNT => MountVia::Fsmount,
            _ => MountVia::Mount,
        },
        flags: m.flags,
        dev: cstr(bytes_of(&m.dev)),
        dev_from_kernel: m.flags2 & abi::KESTREL_MOUNT_FROM_KERNEL != 0,
        dev_truncated: m.flags2 & abi::KESTREL_MOUNT_DEV_TRUNCATED != 0,
        fstype: cstr(bytes_of(&m.fstype)),
        file_path,
        target,
        path_truncated: m.flags2 & abi::KESTREL_MOUNT_TARGET_TRUNCATED != 0 || m.dir.truncated != 0,
        ancestors,
        pid_tree_truncated: m.flags2 & abi::KESTREL_MOUNT_PID_TREE_TRUNCATED != 0,
    })
}
