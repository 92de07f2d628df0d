//! What every record shares: the task, socket addresses, and the checked
//! reads of the raw bytes.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kestrel_abi as abi;

use crate::DecodeError;

pub(crate) const AF_INET: u16 = 2;
pub(crate) const AF_INET6: u16 = 10;

/// The task an event is about, as the kernel saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    /// Start time of the process (ns since boot), to tell reused pids apart.
    pub start_boottime: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// POSIX session id.
    pub sid: u32,
    /// Audit session id (u32::MAX when unset).
    pub sessionid: u32,
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective group id.
    pub egid: u32,
    /// Thread name.
    pub comm: Vec<u8>,
    /// UTS namespace node name: host, container or pod name.
    pub nodename: Vec<u8>,
    /// pid namespace inode number.
    pub pid_ns: u32,
    /// mount namespace inode number.
    pub mnt_ns: u32,
    /// network namespace inode number.
    pub net_ns: u32,
    /// The process id inside its own pid namespace.
    pub ns_pid: u32,
    /// Id of the cgroup that places the task (see kestrel_abi.h).
    pub cgroup_id: u64,
    /// The file the process's image was exec'd from, as the kernel took
    /// it at that exec (inherited at fork); `None` when the kernel side
    /// did not see the exec (the process predates the agent).
    pub exe: Option<ExeId>,
}

/// The identity of an executed file, taken in the kernel at exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeId {
    /// Device, as `stat` gives `st_dev` (converted from the kernel's
    /// encoding).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// The inode's ctime at exec, ns since the epoch: a change of the
    /// file's content or attributes since then moves it.
    pub ctime_ns: i128,
    /// A memfd_create file.
    pub memfd: bool,
    /// The file was already unlinked (or never linked) when exec'd.
    pub deleted: bool,
}

impl ExeId {
    /// Major and minor of `dev`.
    pub fn dev_major_minor(&self) -> (u64, u64) {
        let d = self.dev;
        (
            ((d >> 8) & 0xfff) | ((d >> 32) & 0xffff_f000),
            (d & 0xff) | ((d >> 12) & 0xffff_ff00),
        )
    }
}

/// The kernel's dev_t (major << 20 | minor) as user space's st_dev
/// (glibc's makedev).
fn user_dev(kdev: u32) -> u64 {
    let (major, minor) = (u64::from(kdev >> 20), u64::from(kdev & 0xfffff));
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Both ends of an IPv4 or IPv6 socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockAddrs {
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Local address.
    pub sip: IpAddr,
    /// Local port.
    pub sport: u16,
    /// Remote address.
    pub dip: IpAddr,
    /// Remote port.
    pub dport: u16,
}

/// Reads a plain-old-data ABI struct at `off`, checking the bounds.
pub(crate) fn read_pod<T: Copy>(buf: &[u8], off: usize, kind: u16) -> Result<T, DecodeError> {
    let need = off + size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Short {
            kind,
            need,
            got: buf.len(),
        });
    }
    // SAFETY: bounds checked above; T is one of the bindgen-generated ABI
    // structs, made only of integers and arrays of them, for which every bit
    // pattern is valid. read_unaligned copes with the buffer's alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast::<T>()) })
}

/// An ABI struct whose tail, a kestrel_name's walked directory starting at
/// `tail`, is sent only up to its used length: the bytes received, the rest
/// zero. The directory's length must lie within what was received.
pub(crate) fn read_prefix<T: Copy>(
    buf: &[u8],
    tail: usize,
    kind: u16,
    dir_len: impl Fn(&T) -> u32,
) -> Result<Box<T>, DecodeError> {
    if buf.len() < tail {
        return Err(DecodeError::Short {
            kind,
            need: tail,
            got: buf.len(),
        });
    }
    let mut whole = vec![0u8; size_of::<T>()];
    let n = buf.len().min(whole.len());
    whole[..n].copy_from_slice(&buf[..n]);
    let r: Box<T> = Box::new(read_pod(&whole, 0, kind)?);
    let len = dir_len(&r) as usize;
    if tail + len > n {
        return Err(DecodeError::BadLengths(len));
    }
    Ok(r)
}

/// The bytes of a fixed-size C string up to its first NUL.
pub(crate) fn cstr(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

pub(crate) fn task(t: &abi::kestrel_task) -> Task {
    Task {
        start_boottime: t.start_boottime,
        pid: t.pid,
        tgid: t.tgid,
        ppid: t.ppid,
        pgid: t.pgid,
        sid: t.sid,
        sessionid: t.sessionid,
        uid: t.uid,
        euid: t.euid,
        gid: t.gid,
        egid: t.egid,
        comm: cstr(bytes_of(&t.comm)),
        nodename: cstr(bytes_of(&t.nodename)),
        pid_ns: t.pid_ns,
        mnt_ns: t.mnt_ns,
        net_ns: t.net_ns,
        ns_pid: t.ns_pid,
        cgroup_id: t.cgroup_id,
        exe: (t.exe_flags & abi::KESTREL_EXE_KNOWN != 0).then(|| ExeId {
            dev: user_dev(t.exe_dev),
            ino: t.exe_ino,
            ctime_ns: i128::from(t.exe_ctime_ns),
            memfd: t.exe_flags & abi::KESTREL_EXE_MEMFD != 0,
            deleted: t.exe_flags & abi::KESTREL_EXE_DELETED != 0,
        }),
    }
}

pub(crate) fn bytes_of(chars: &[std::os::raw::c_char]) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment.
    unsafe { std::slice::from_raw_parts(chars.as_ptr().cast(), chars.len()) }
}

pub(crate) fn sockaddrs(a: &abi::kestrel_sockaddrs) -> Option<SockAddrs> {
    let ip = |b: &[u8; 16]| -> IpAddr {
        if a.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*b))
        }
    };
    if a.family != AF_INET && a.family != AF_INET6 {
        return None;
    }
    Some(SockAddrs {
        family: a.family,
        sip: ip(&a.saddr),
        sport: a.sport,
        dip: ip(&a.daddr),
        dport: a.dport,
    })
}

/// Splits a NUL-separated string area. A final piece without its NUL (cut
/// by the copy limit) is kept.
pub(crate) fn split_nul(area: &[u8]) -> impl Iterator<Item = &[u8]> {
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    area.split(|&b| b == 0).filter(move |_| !area.is_empty())
}

/// "/a/b" from the components "b\0a\0" (innermost first, as the kernel
/// walks them); "/" when there are none.
pub(crate) fn join_reversed(area: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(area.len() + 1);
    for part in split_nul(area).collect::<Vec<_>>().iter().rev() {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

/// The addresses of a socket of another family (or none): the family kept,
/// the addresses unspecified.
pub(crate) fn unspecified(family: u16) -> SockAddrs {
    SockAddrs {
        family,
        sip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dport: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_to_st_dev() {
        // 8:1 (sda1) and 259:65536 (a large minor).
        assert_eq!(user_dev((8 << 20) | 1), libc_makedev(8, 1));
        assert_eq!(user_dev((259 << 20) | 65536), libc_makedev(259, 65536));
        let id = ExeId {
            dev: user_dev((259 << 20) | 65536),
            ino: 1,
            ctime_ns: 0,
            memfd: false,
            deleted: false,
        };
        assert_eq!(id.dev_major_minor(), (259, 65536));
    }

    fn libc_makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }
}

/// One path argument of a path syscall (rename, link, symlink, unlink,
/// rmdir), made absolute when the kernel walked its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// The directory the name was resolved from joined with the name as
    /// passed (nothing normalised: `a/../b` stays); an absolute name as
    /// passed; a symbolic link's target as given (`literal`).
    pub path: Vec<u8>,
    /// The directory walk stopped early: `path` starts inside it.
    pub dir_truncated: bool,
    /// The name was longer than the kernel's copy: `path` ends cut.
    pub name_truncated: bool,
    /// The name could not be read from the caller's memory: `path` is
    /// empty (the call usually failed with EFAULT).
    pub unread: bool,
    /// Relative to a dirfd that named no open file: `path` is the name
    /// alone (the call failed with EBADF, or the descriptor was closed by
    /// another thread before the exit).
    pub no_dir: bool,
    /// Kept as given: a symbolic link's target.
    pub literal: bool,
}

pub(crate) fn path_arg(n: &abi::kestrel_name) -> PathArg {
    let name = cstr(bytes_of(&n.name));
    let has = |f: u32| n.flags & f != 0;
    let (literal, no_dir, unread) = (
        has(abi::KESTREL_NAME_LITERAL),
        has(abi::KESTREL_NAME_NO_DIR),
        has(abi::KESTREL_NAME_UNREAD),
    );
    let path = if literal || no_dir || unread || name.starts_with(b"/") {
        name
    } else {
        let len = (n.dir.len as usize).min(n.dir.bytes.len());
        let mut p = join_reversed(&n.dir.bytes[..len]);
        // An empty name (linkat's AT_EMPTY_PATH) is the directory's file.
        if !name.is_empty() {
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
        }
        p
    };
    PathArg {
        path,
        dir_truncated: n.dir.truncated != 0,
        name_truncated: has(abi::KESTREL_NAME_TRUNCATED),
        unread,
        no_dir,
        literal,
    }
}

/// A two-name path syscall: rename (82) or link (86).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPair {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0, or -errno.
    pub res: i32,
    /// The x86-64 number of the call.
    pub syscall: u32,
    /// renameat2's RENAME_* or linkat's AT_* flags.
    pub flags: u32,
    /// The superblock's s_id where the lookup started (see docs/events.md).
    pub sb_id: Vec<u8>,
    /// The existing name (a symlink's target).
    pub old: PathArg,
    /// The new name.
    pub new: PathArg,
}

/// A removal: unlink (605) or rmdir (606).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0, or -errno.
    pub res: i32,
    /// The x86-64 number of the call.
    pub syscall: u32,
    /// unlinkat's flags.
    pub flags: u32,
    /// The name removed.
    pub file: PathArg,
}
