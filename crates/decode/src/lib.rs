//! Decodes the records Kestrel's BPF programs put in the ring buffer into
//! owned Rust values. The layouts come from `kestrel-abi`, generated from
//! the same header the BPF side is compiled with; this crate only checks
//! lengths and splits the packed string area.
//!
//! Decoding never trusts the record: every length is checked against the
//! bytes actually received, and a bad record is an error, not a panic.

pub mod dns;

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kestrel_abi as abi;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Environment variables the exec event reports.
pub const WATCHED_ENV: [&str; 2] = ["SSH_CONNECTION", "LD_PRELOAD"];

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record's fixed part.
    #[error("record of kind {kind} is {got} bytes, shorter than its {need}-byte fixed part")]
    Short {
        /// Record kind.
        kind: u16,
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        got: usize,
    },
    /// A kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    /// The string lengths point past the end of the record.
    #[error("exec record's string lengths ({0} bytes) run past its end")]
    BadLengths(usize),
}

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

/// What a file descriptor refers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// Inode mode (type and permissions); 0 when the descriptor is closed.
    pub mode: u32,
    /// Device number of a device file, kernel encoding (major << 20 | minor).
    pub rdev: u32,
    /// Inode number.
    pub ino: u64,
}

impl FdInfo {
    const S_IFMT: u32 = 0o170000;

    /// The name /proc/PID/fd shows for sockets, pipes and well-known
    /// devices; `None` for files, whose path the kernel side does not read.
    pub fn describe(&self) -> Option<String> {
        let (major, minor) = (self.rdev >> 20, self.rdev & 0xfffff);
        match self.mode & Self::S_IFMT {
            0o140000 => Some(format!("socket:[{}]", self.ino)),
            0o010000 => Some(format!("pipe:[{}]", self.ino)),
            0o020000 => Some(match (major, minor) {
                (136..=143, m) => format!("/dev/pts/{}", (major - 136) * 256 + m),
                (1, 3) => "/dev/null".into(),
                (1, 5) => "/dev/zero".into(),
                (1, 8) => "/dev/random".into(),
                (1, 9) => "/dev/urandom".into(),
                (4, m) if m < 64 => format!("/dev/tty{m}"),
                (4, m) => format!("/dev/ttyS{}", m - 64),
                (5, 0) => "/dev/tty".into(),
                (5, 1) => "/dev/console".into(),
                (5, 2) => "/dev/ptmx".into(),
                _ => return None,
            }),
            _ => None,
        }
    }
}

/// One ancestor of an exec'ing process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// Process id.
    pub pid: u32,
    /// Start time (ns since boot), when known.
    pub start_boottime: Option<u64>,
    /// Process name.
    pub comm: Vec<u8>,
}

/// A process execution, successful or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process.
    pub task: Task,
    /// 0, or -errno of a failed exec.
    pub res: i32,
    /// The real argument count.
    pub argc: u32,
    /// The path as passed to execve.
    pub filename: Vec<u8>,
    /// Working directory, as the kernel walked it ("/" at the root).
    pub cwd: Vec<u8>,
    /// The walk stopped before the root: `cwd` holds its innermost part.
    pub cwd_truncated: bool,
    /// What fd 0 and fd 1 of the new image refer to.
    pub stdio: [FdInfo; 2],
    /// Path of the task's cgroup ("/system.slice/docker-<id>.scope"),
    /// relative to its hierarchy's root.
    pub cgroup: Vec<u8>,
    /// Arguments, at most `KESTREL_ARGS_MAX` of them.
    pub argv: Vec<Vec<u8>>,
    /// Some arguments or bytes of them were not copied.
    pub argv_truncated: bool,
    /// The watched environment variables found, in [`WATCHED_ENV`] order.
    pub env: [Option<Vec<u8>>; 2],
    /// The environment was longer than what the kernel copied.
    pub env_truncated: bool,
    /// Controlling terminal name ("pts1"), empty when none.
    pub tty: Vec<u8>,
    /// Parent first, then its parent, and so on.
    pub ancestors: Vec<Ancestor>,
    /// The tree goes higher than what was captured.
    pub pid_tree_truncated: bool,
    /// Nearest ancestor with a socket on stdin/stdout, and that socket.
    pub socket: Option<(Ancestor, SockAddrs)>,
}

/// A connect(2) on an IPv4/IPv6 socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// The socket's descriptor.
    pub fd: i32,
    /// Local end (after the call) and the address connected to.
    pub addrs: SockAddrs,
}

/// A ptrace(2) request on another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ptrace {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The tracer.
    pub task: Task,
    /// The request (PTRACE_ATTACH = 16, PTRACE_POKEDATA = 5, ...).
    pub request: i64,
    /// The target, as the tracer named it.
    pub target_pid: i32,
    /// 0 or -errno.
    pub res: i32,
    /// The request's address argument.
    pub addr: u64,
    /// The request's data argument.
    pub data: u64,
}

/// A UDP datagram received from port 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The receiving process.
    pub task: Task,
    /// The socket's descriptor.
    pub fd: i32,
    /// Bytes of the whole datagram.
    pub msg_len: u32,
    /// Local end (sip/sport) and the DNS server (dip/dport).
    pub addrs: SockAddrs,
    /// The first bytes of the datagram (at most KESTREL_DNS_PAYLOAD_MAX).
    pub payload: Vec<u8>,
}

/// A process whose uid or euid became 0 from non-root credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process, with its new credentials.
    pub task: Task,
    /// uid before.
    pub old_uid: u32,
    /// euid before.
    pub old_euid: u32,
    /// Where it was noticed (enum kestrel_cred_trigger).
    pub trigger: u32,
    /// The program exec'd, when noticed at an exec.
    pub filename: Vec<u8>,
}

/// init_module or finit_module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The loading process.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// finit_module's descriptor, -1 for init_module.
    pub fd: i32,
    /// init_module's image length.
    pub image_len: u64,
    /// finit_module's flags.
    pub flags: u32,
    /// The file loaded from, absolute ("/" when unknown), for finit_module.
    pub path: Vec<u8>,
    /// The path walk stopped early: `path` holds its innermost part.
    pub path_truncated: bool,
}

/// A file or node created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCreate {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The creating process.
    pub task: Task,
    /// The new descriptor (0 for mknod).
    pub res: i32,
    /// The new file's absolute path; for O_TMPFILE its directory plus the
    /// kernel's "#INODE" name.
    pub path: Vec<u8>,
    /// The walk stopped early: `path` holds its innermost part.
    pub path_truncated: bool,
    /// Created with O_TMPFILE (no name yet).
    pub tmpfile: bool,
    /// Made by mknod/mknodat.
    pub mknod: bool,
    /// Mode of the new inode (type and permissions).
    pub mode: u32,
}

/// Any decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// data_type 59.
    Exec(Box<Exec>),
    /// data_type 42.
    Connect(Connect),
    /// data_type 101.
    Ptrace(Ptrace),
    /// data_type 601.
    Dns(Dns),
    /// data_type 604.
    Cred(Cred),
    /// data_type 603.
    Module(Module),
    /// data_type 602.
    File(FileCreate),
}

impl Record {
    /// Capture time, ns since boot.
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Record::Exec(e) => e.ktime_ns,
            Record::Connect(c) => c.ktime_ns,
            Record::Ptrace(p) => p.ktime_ns,
            Record::Dns(d) => d.ktime_ns,
            Record::Cred(c) => c.ktime_ns,
            Record::Module(m) => m.ktime_ns,
            Record::File(f) => f.ktime_ns,
        }
    }
}

/// Reads a plain-old-data ABI struct at `off`, checking the bounds.
fn read_pod<T: Copy>(buf: &[u8], off: usize, kind: u16) -> Result<T, DecodeError> {
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

/// The bytes of a fixed-size C string up to its first NUL.
fn cstr(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

fn task(t: &abi::kestrel_task) -> Task {
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
    }
}

fn bytes_of(chars: &[std::os::raw::c_char]) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment.
    unsafe { std::slice::from_raw_parts(chars.as_ptr().cast(), chars.len()) }
}

fn sockaddrs(a: &abi::kestrel_sockaddrs) -> Option<SockAddrs> {
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
fn split_nul(area: &[u8]) -> impl Iterator<Item = &[u8]> {
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    area.split(|&b| b == 0).filter(move |_| !area.is_empty())
}

/// "/a/b" from the components "b\0a\0" (innermost first, as the kernel
/// walks them); "/" when there are none.
fn join_reversed(area: &[u8]) -> Vec<u8> {
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

/// Decodes one ring buffer record.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let hdr: abi::kestrel_header = read_pod(buf, 0, 0)?;
    // Only the bytes the kernel says belong to the record.
    let buf = &buf[..(hdr.size as usize).min(buf.len())];
    match u32::from(hdr.kind) {
        abi::KESTREL_KIND_EXEC => decode_exec(buf, hdr).map(|e| Record::Exec(Box::new(e))),
        abi::KESTREL_KIND_CONNECT => decode_connect(buf, hdr).map(Record::Connect),
        abi::KESTREL_KIND_DNS => decode_dns(buf, hdr).map(Record::Dns),
        abi::KESTREL_KIND_FILE => {
            let f: Box<abi::kestrel_file> = Box::new(read_pod(buf, 0, hdr.kind)?);
            let len = (f.path.len as usize).min(f.path.bytes.len());
            let dir = join_reversed(&f.path.bytes[..len]);
            let mknod = f.flags & abi::KESTREL_FILE_MKNOD != 0;
            let path = if mknod {
                let rel = cstr(bytes_of(&f.rel));
                if rel.starts_with(b"/") {
                    rel
                } else {
                    let mut p = dir;
                    if p != b"/" {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&rel);
                    p
                }
            } else {
                dir
            };
            Ok(Record::File(FileCreate {
                ktime_ns: hdr.ktime_ns,
                task: task(&f.task),
                res: f.res,
                path,
                path_truncated: f.path.truncated != 0,
                tmpfile: f.flags & abi::KESTREL_FILE_TMPFILE != 0,
                mknod,
                mode: f.mode,
            }))
        }
        abi::KESTREL_KIND_MODULE => {
            let m: Box<abi::kestrel_module> = Box::new(read_pod(buf, 0, hdr.kind)?);
            let len = (m.path.len as usize).min(m.path.bytes.len());
            Ok(Record::Module(Module {
                ktime_ns: hdr.ktime_ns,
                task: task(&m.task),
                res: m.res,
                fd: m.fd,
                image_len: m.image_len,
                flags: m.flags,
                path: if m.fd >= 0 && len > 0 {
                    join_reversed(&m.path.bytes[..len])
                } else {
                    Vec::new()
                },
                path_truncated: m.path.truncated != 0,
            }))
        }
        abi::KESTREL_KIND_CRED => {
            let c: abi::kestrel_cred = read_pod(buf, 0, hdr.kind)?;
            Ok(Record::Cred(Cred {
                ktime_ns: hdr.ktime_ns,
                task: task(&c.task),
                old_uid: c.old_uid,
                old_euid: c.old_euid,
                trigger: c.trigger,
                filename: cstr(bytes_of(&c.filename)),
            }))
        }
        abi::KESTREL_KIND_PTRACE => {
            let p: abi::kestrel_ptrace = read_pod(buf, 0, hdr.kind)?;
            Ok(Record::Ptrace(Ptrace {
                ktime_ns: hdr.ktime_ns,
                task: task(&p.task),
                request: p.request,
                target_pid: p.target_pid,
                res: p.res,
                addr: p.addr,
                data: p.data,
            }))
        }
        _ => Err(DecodeError::UnknownKind(hdr.kind)),
    }
}

fn decode_connect(buf: &[u8], hdr: abi::kestrel_header) -> Result<Connect, DecodeError> {
    let c: abi::kestrel_connect = read_pod(buf, 0, hdr.kind)?;
    let unspecified = SockAddrs {
        family: c.addrs.family,
        sip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dport: 0,
    };
    Ok(Connect {
        ktime_ns: hdr.ktime_ns,
        task: task(&c.task),
        res: c.res,
        fd: c.fd,
        addrs: sockaddrs(&c.addrs).unwrap_or(unspecified),
    })
}

fn decode_dns(buf: &[u8], hdr: abi::kestrel_header) -> Result<Dns, DecodeError> {
    const PAYLOAD: usize = offset_of!(abi::kestrel_dns, payload);
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Fixed {
        bytes: [u8; PAYLOAD],
    }
    read_pod::<Fixed>(buf, 0, hdr.kind)?;
    let t: abi::kestrel_task = read_pod(buf, offset_of!(abi::kestrel_dns, task), hdr.kind)?;
    let addrs: abi::kestrel_sockaddrs =
        read_pod(buf, offset_of!(abi::kestrel_dns, addrs), hdr.kind)?;
    let len = read_pod::<u32>(buf, offset_of!(abi::kestrel_dns, payload_len), hdr.kind)? as usize;
    let payload = buf
        .get(PAYLOAD..PAYLOAD + len)
        .ok_or(DecodeError::BadLengths(len))?;
    let unspecified = SockAddrs {
        family: addrs.family,
        sip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dport: 0,
    };
    Ok(Dns {
        ktime_ns: hdr.ktime_ns,
        task: task(&t),
        fd: read_pod(buf, offset_of!(abi::kestrel_dns, fd), hdr.kind)?,
        msg_len: read_pod(buf, offset_of!(abi::kestrel_dns, msg_len), hdr.kind)?,
        addrs: sockaddrs(&addrs).unwrap_or(unspecified),
        payload: payload.to_vec(),
    })
}

/// The fixed part of an exec record: everything before the data area.
#[derive(Clone, Copy)]
#[repr(C)]
struct ExecFixed {
    bytes: [u8; offset_of!(abi::kestrel_exec, data)],
}

fn decode_exec(buf: &[u8], hdr: abi::kestrel_header) -> Result<Exec, DecodeError> {
    const DATA: usize = offset_of!(abi::kestrel_exec, data);
    read_pod::<ExecFixed>(buf, 0, hdr.kind)?;
    macro_rules! field {
        ($name:ident: $ty:ty) => {
            read_pod::<$ty>(buf, offset_of!(abi::kestrel_exec, $name), hdr.kind)?
        };
    }
    let t: abi::kestrel_task = field!(task: abi::kestrel_task);
    let flags: u32 = field!(flags: u32);
    let filename_len = field!(filename_len: u32) as usize;
    let cwd_len = field!(cwd_len: u32) as usize;
    let cgroup_len = field!(cgroup_len: u32) as usize;
    let argv_len = field!(argv_len: u32) as usize;
    let env_len = field!(env_len: u32) as usize;
    let data = &buf[DATA..];
    let total = filename_len + cwd_len + cgroup_len + argv_len + env_len;
    if total > data.len() {
        return Err(DecodeError::BadLengths(total));
    }
    let (filename, rest) = data.split_at(filename_len);
    let (cwd_area, rest) = rest.split_at(cwd_len);
    let (cgroup_area, rest) = rest.split_at(cgroup_len);
    let (argv_area, rest) = rest.split_at(argv_len);
    let env_area = &rest[..env_len];

    let mut argv_truncated = flags & abi::KESTREL_EXEC_ARGV_TRUNCATED != 0;
    let mut argv = Vec::new();
    for arg in split_nul(argv_area) {
        if argv.len() == abi::KESTREL_ARGS_MAX as usize {
            argv_truncated = true;
            break;
        }
        argv.push(arg.to_vec());
    }
    let argc: u32 = field!(argc: u32);
    if (argv.len() as u64) < u64::from(argc) {
        argv_truncated = true;
    }

    let mut env: [Option<Vec<u8>>; 2] = [None, None];
    for var in split_nul(env_area) {
        for (slot, name) in env.iter_mut().zip(WATCHED_ENV) {
            if slot.is_none() {
                if let Some(v) = var
                    .strip_prefix(name.as_bytes())
                    .and_then(|v| v.strip_prefix(b"="))
                {
                    *slot = Some(v.to_vec());
                }
            }
        }
    }

    let anc: [abi::kestrel_ancestor; abi::KESTREL_PID_TREE_MAX as usize] =
        field!(ancestors: [abi::kestrel_ancestor; abi::KESTREL_PID_TREE_MAX as usize]);
    let n = (field!(ancestors_len: u32) as usize).min(anc.len());
    let ancestors = anc[..n]
        .iter()
        .map(|a| Ancestor {
            pid: a.pid,
            start_boottime: None,
            comm: cstr(bytes_of(&a.comm)),
        })
        .collect();

    let socket_pid: u32 = field!(socket_pid: u32);
    let sock: abi::kestrel_sockaddrs = field!(socket: abi::kestrel_sockaddrs);
    let socket_comm: [std::os::raw::c_char; abi::KESTREL_COMM_LEN as usize] =
        field!(socket_comm: [std::os::raw::c_char; abi::KESTREL_COMM_LEN as usize]);
    let socket = match (socket_pid, sockaddrs(&sock)) {
        (0, _) | (_, None) => None,
        (pid, Some(addrs)) => Some((
            Ancestor {
                pid,
                start_boottime: Some(field!(socket_start_boottime: u64)),
                comm: cstr(bytes_of(&socket_comm)),
            },
            addrs,
        )),
    };
    let cwd = join_reversed(cwd_area);
    let cgroup = join_reversed(cgroup_area);
    let stdio: [abi::kestrel_fdinfo; 2] = field!(stdio: [abi::kestrel_fdinfo; 2]);
    let stdio = stdio.map(|f| FdInfo {
        mode: f.mode,
        rdev: f.rdev,
        ino: f.ino,
    });
    let tty: [std::os::raw::c_char; abi::KESTREL_TTY_LEN as usize] =
        field!(tty: [std::os::raw::c_char; abi::KESTREL_TTY_LEN as usize]);

    Ok(Exec {
        ktime_ns: hdr.ktime_ns,
        task: task(&t),
        res: field!(res: i32),
        argc,
        filename: cstr(filename),
        cwd,
        cwd_truncated: flags & abi::KESTREL_EXEC_CWD_TRUNCATED != 0,
        stdio,
        cgroup,
        argv,
        argv_truncated,
        env,
        env_truncated: flags & abi::KESTREL_EXEC_ENV_TRUNCATED != 0,
        tty: cstr(bytes_of(&tty)),
        ancestors,
        pid_tree_truncated: flags & abi::KESTREL_EXEC_PID_TREE_TRUNCATED != 0,
        socket,
    })
}

/// Builders of raw records, for tests, fuzzing and replay benchmarks.
pub mod raw {
    use super::*;

    fn as_bytes<T>(v: &T) -> &[u8] {
        // SAFETY: T is a plain ABI struct; viewing it as bytes is always valid.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn put(dst: &mut [std::os::raw::c_char], src: &[u8]) {
        for (d, s) in dst.iter_mut().zip(src.iter().chain(std::iter::once(&0))) {
            *d = *s as std::os::raw::c_char;
        }
    }

    /// A task with the given ids and names.
    pub fn task(tgid: u32, ppid: u32, uid: u32, comm: &[u8]) -> abi::kestrel_task {
        let mut t = abi::kestrel_task {
            pid: tgid,
            tgid,
            ppid,
            pgid: tgid,
            sid: tgid,
            sessionid: u32::MAX,
            uid,
            euid: uid,
            ..Default::default()
        };
        put(&mut t.comm, comm);
        put(&mut t.nodename, b"testhost");
        t
    }

    /// A successful exec record as the kernel would send it.
    pub fn exec(
        task: abi::kestrel_task,
        filename: &[u8],
        cwd: &[&[u8]],
        cgroup: &[&[u8]],
        argv: &[&[u8]],
        env: &[&[u8]],
        ancestors: &[(u32, &[u8])],
    ) -> Vec<u8> {
        let mut e: Box<abi::kestrel_exec> = Box::default();
        e.hdr.kind = abi::KESTREL_KIND_EXEC as u16;
        e.task = task;
        e.argc = argv.len() as u32;
        e.flags = abi::KESTREL_EXEC_ARGV_FROM_MM;
        let mut data = Vec::new();
        data.extend_from_slice(filename);
        data.push(0);
        e.filename_len = data.len() as u32;
        // Innermost component first, as the kernel walks it.
        for c in cwd.iter().rev() {
            data.extend_from_slice(c);
            data.push(0);
        }
        e.cwd_len = data.len() as u32 - e.filename_len;
        let before = data.len() as u32;
        for c in cgroup.iter().rev() {
            data.extend_from_slice(c);
            data.push(0);
        }
        e.cgroup_len = data.len() as u32 - before;
        let before = data.len() as u32;
        for a in argv {
            data.extend_from_slice(a);
            data.push(0);
        }
        e.argv_len = data.len() as u32 - before;
        let before = data.len() as u32;
        for v in env {
            data.extend_from_slice(v);
            data.push(0);
        }
        e.env_len = data.len() as u32 - before;
        for (slot, (pid, comm)) in e.ancestors.iter_mut().zip(ancestors) {
            slot.pid = *pid;
            put(&mut slot.comm, comm);
        }
        e.ancestors_len = ancestors.len() as u32;
        e.data[..data.len()].copy_from_slice(&data);
        let size = offset_of!(abi::kestrel_exec, data) + data.len();
        e.hdr.size = size as u32;
        as_bytes(&*e)[..size].to_vec()
    }

    /// A connect record.
    pub fn connect(task: abi::kestrel_task, res: i32, dip: [u8; 4], dport: u16) -> Vec<u8> {
        let mut c = abi::kestrel_connect::default();
        c.hdr.kind = abi::KESTREL_KIND_CONNECT as u16;
        c.hdr.size = size_of::<abi::kestrel_connect>() as u32;
        c.task = task;
        c.res = res;
        c.fd = 3;
        c.addrs.family = AF_INET;
        c.addrs.daddr[..4].copy_from_slice(&dip);
        c.addrs.dport = dport;
        c.addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.addrs.sport = 40000;
        as_bytes(&c).to_vec()
    }

    /// A connect record to an IPv6 peer, from `::1` port 40000.
    pub fn connect6(task: abi::kestrel_task, res: i32, dip: [u8; 16], dport: u16) -> Vec<u8> {
        let mut c = abi::kestrel_connect::default();
        c.hdr.kind = abi::KESTREL_KIND_CONNECT as u16;
        c.hdr.size = size_of::<abi::kestrel_connect>() as u32;
        c.task = task;
        c.res = res;
        c.fd = 4;
        c.addrs.family = AF_INET6;
        c.addrs.daddr = dip;
        c.addrs.dport = dport;
        c.addrs.saddr[15] = 1;
        c.addrs.sport = 40000;
        as_bytes(&c).to_vec()
    }

    /// A ptrace record.
    pub fn ptrace(
        task: abi::kestrel_task,
        request: i64,
        target_pid: i32,
        res: i32,
        addr: u64,
        data: u64,
    ) -> Vec<u8> {
        let mut p = abi::kestrel_ptrace::default();
        p.hdr.kind = abi::KESTREL_KIND_PTRACE as u16;
        p.hdr.size = size_of::<abi::kestrel_ptrace>() as u32;
        p.task = task;
        p.request = request;
        p.target_pid = target_pid;
        p.res = res;
        p.addr = addr;
        p.data = data;
        as_bytes(&p).to_vec()
    }

    /// A DNS record: `payload` received on fd 5 at 127.0.0.1:40001 from
    /// 127.0.0.53:53, the record cut after the payload as the kernel does.
    pub fn dns(task: abi::kestrel_task, payload: &[u8]) -> Vec<u8> {
        let mut d: Box<abi::kestrel_dns> = Box::default();
        d.hdr.kind = abi::KESTREL_KIND_DNS as u16;
        d.task = task;
        d.fd = 5;
        d.msg_len = payload.len() as u32;
        let n = payload.len().min(d.payload.len());
        d.payload_len = n as u32;
        d.payload[..n].copy_from_slice(&payload[..n]);
        d.addrs.family = AF_INET;
        d.addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        d.addrs.sport = 40001;
        d.addrs.daddr[..4].copy_from_slice(&[127, 0, 0, 53]);
        d.addrs.dport = 53;
        let size = offset_of!(abi::kestrel_dns, payload) + n;
        d.hdr.size = size as u32;
        as_bytes(&*d)[..size].to_vec()
    }

    /// A credential change record.
    pub fn cred(
        task: abi::kestrel_task,
        old_uid: u32,
        old_euid: u32,
        trigger: u32,
        filename: &[u8],
    ) -> Vec<u8> {
        let mut c = abi::kestrel_cred::default();
        c.hdr.kind = abi::KESTREL_KIND_CRED as u16;
        c.hdr.size = size_of::<abi::kestrel_cred>() as u32;
        c.task = task;
        c.old_uid = old_uid;
        c.old_euid = old_euid;
        c.trigger = trigger;
        put(&mut c.filename, filename);
        as_bytes(&c).to_vec()
    }

    /// Fills a kernel path walk from components given root first.
    fn walk(p: &mut abi::kestrel_path, components: &[&[u8]]) {
        let mut area = Vec::new();
        for c in components.iter().rev() {
            area.extend_from_slice(c);
            area.push(0);
        }
        p.bytes[..area.len()].copy_from_slice(&area);
        p.len = area.len() as u32;
    }

    /// A module load record: finit_module of the file at `path`
    /// (components, root first) when `fd` >= 0, else init_module.
    pub fn module(
        task: abi::kestrel_task,
        res: i32,
        fd: i32,
        image_len: u64,
        flags: u32,
        path: &[&[u8]],
    ) -> Vec<u8> {
        let mut m: Box<abi::kestrel_module> = Box::default();
        m.hdr.kind = abi::KESTREL_KIND_MODULE as u16;
        m.hdr.size = size_of::<abi::kestrel_module>() as u32;
        m.task = task;
        m.res = res;
        m.fd = fd;
        m.image_len = image_len;
        m.flags = flags;
        walk(&mut m.path, path);
        as_bytes(&*m).to_vec()
    }

    /// How a file was created, for [`file`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Creation {
        /// open/openat/creat: `path` is the file itself.
        Open,
        /// O_TMPFILE: `path` is the directory plus the "#INODE" name.
        Tmpfile,
        /// mknod: `path` is the directory, `rel` the name given.
        Mknod,
    }

    /// A file creation record.
    pub fn file(
        task: abi::kestrel_task,
        how: Creation,
        mode: u32,
        path: &[&[u8]],
        rel: &[u8],
    ) -> Vec<u8> {
        let mut f: Box<abi::kestrel_file> = Box::default();
        f.hdr.kind = abi::KESTREL_KIND_FILE as u16;
        f.hdr.size = size_of::<abi::kestrel_file>() as u32;
        f.task = task;
        f.res = if how == Creation::Mknod { 0 } else { 3 };
        f.flags = match how {
            Creation::Open => 0,
            Creation::Tmpfile => abi::KESTREL_FILE_TMPFILE,
            Creation::Mknod => abi::KESTREL_FILE_MKNOD,
        };
        f.mode = mode;
        walk(&mut f.path, path);
        put(&mut f.rel, rel);
        as_bytes(&*f).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_round_trip() {
        let rec = raw::exec(
            raw::task(42, 1, 0, b"sh"),
            b"/bin/sh",
            &[b"home", b"user"],
            &[b"system.slice", b"docker-abc.scope"],
            &[b"sh", b"-c", b"echo 'a b'", b"\xff"],
            &[
                b"HOME=/root",
                b"LD_PRELOAD=/x.so",
                b"SSH_CONNECTION=1 2 3 4",
            ],
            &[(1, b"systemd")],
        );
        let Record::Exec(e) = decode(&rec).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.filename, b"/bin/sh");
        assert_eq!(e.cwd, b"/home/user");
        assert_eq!(e.cgroup, b"/system.slice/docker-abc.scope");
        assert_eq!(e.argv.len(), 4);
        assert_eq!(e.argv[2], b"echo 'a b'");
        assert_eq!(e.argv[3], b"\xff");
        assert!(!e.argv_truncated);
        assert_eq!(e.env[0].as_deref(), Some(&b"1 2 3 4"[..]));
        assert_eq!(e.env[1].as_deref(), Some(&b"/x.so"[..]));
        assert_eq!(e.ancestors[0].comm, b"systemd");
        assert_eq!(e.task.comm, b"sh");
        assert_eq!(e.task.nodename, b"testhost");
    }

    #[test]
    fn exec_with_more_args_than_the_limit_is_marked() {
        let args: Vec<Vec<u8>> = (0..200).map(|i| format!("a{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let rec = raw::exec(raw::task(1, 0, 0, b"x"), b"/x", &[], &[], &refs, &[], &[]);
        let Record::Exec(e) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(e.argv.len(), abi::KESTREL_ARGS_MAX as usize);
        assert!(e.argv_truncated);
        assert_eq!(e.argc, 200);
    }

    #[test]
    fn fd_names() {
        let pts = FdInfo {
            mode: 0o020620,
            rdev: (136 << 20) | 3,
            ino: 6,
        };
        assert_eq!(pts.describe().as_deref(), Some("/dev/pts/3"));
        let sock = FdInfo {
            mode: 0o140777,
            rdev: 0,
            ino: 1234,
        };
        assert_eq!(sock.describe().as_deref(), Some("socket:[1234]"));
        let file = FdInfo {
            mode: 0o100644,
            rdev: 0,
            ino: 5,
        };
        assert_eq!(file.describe(), None);
    }

    #[test]
    fn connect_round_trip() {
        let rec = raw::connect(raw::task(7, 1, 1000, b"curl"), -111, [10, 0, 0, 1], 443);
        let Record::Connect(c) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(c.res, -111);
        assert_eq!(c.addrs.dip, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.addrs.dport, 443);
        assert_eq!(c.task.uid, 1000);
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut rec = raw::exec(raw::task(1, 0, 0, b"x"), b"/x", &[], &[], &[b"x"], &[], &[]);
        // Claim a longer argument area than the record holds.
        let off = offset_of!(abi::kestrel_exec, argv_len);
        rec[off..off + 4].copy_from_slice(&60000u32.to_ne_bytes());
        assert!(matches!(decode(&rec), Err(DecodeError::BadLengths(_))));
        for cut in [10, 100, 400] {
            assert!(decode(&rec[..cut]).is_err());
        }
    }
}
