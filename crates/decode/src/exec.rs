//! data_type 59: a process execution, successful or failed.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, join_reversed, read_pod, sockaddrs, split_nul, task};
use crate::{DecodeError, SockAddrs, Task};

/// Environment variables the exec event reports.
pub const WATCHED_ENV: [&str; 2] = ["SSH_CONNECTION", "LD_PRELOAD"];

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
    /// The path of the file the kernel mapped (the interpreter of a
    /// script), walked in the kernel from the file itself ("/" joined,
    /// without " (deleted)"); empty for a failed exec.
    pub exe_path: Vec<u8>,
    /// The walk stopped before the root: `exe_path` holds its innermost
    /// part.
    pub exe_truncated: bool,
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
    /// Part of the environment was not searched for the watched variables
    /// (or a value was cut): one may be missing.
    pub env_truncated: bool,
    /// Controlling terminal name ("pts1"), empty when none.
    pub tty: Vec<u8>,
    /// Parent first, then its parent, and so on.
    pub ancestors: Vec<Ancestor>,
    /// The tree goes higher than what was captured.
    pub pid_tree_truncated: bool,
    /// The real parent is a kernel thread (`PF_KTHREAD`): a user-mode
    /// helper's exec.
    pub parent_kthread: bool,
    /// That kernel thread is a workqueue worker (`PF_WQ_WORKER`): the
    /// helper's caller waits for it to exit (`UMH_WAIT_PROC`).
    pub parent_wq_worker: bool,
    /// Nearest ancestor with a socket on stdin/stdout, and that socket.
    pub socket: Option<(Ancestor, SockAddrs)>,
}

/// The fixed part of an exec record: everything before the data area.
#[derive(Clone, Copy)]
#[repr(C)]
struct ExecFixed {
    bytes: [u8; offset_of!(abi::kestrel_exec, data)],
}

/// What `Record::Exec` holds (boxed: an exec record is large).
pub type Decoded = Box<Exec>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Exec, DecodeError> {
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
    let exe_len = field!(exe_len: u32) as usize;
    let data = &buf[DATA..];
    let total = filename_len + exe_len + cwd_len + cgroup_len + argv_len + env_len;
    if total > data.len() {
        return Err(DecodeError::BadLengths(total));
    }
    let (filename, rest) = data.split_at(filename_len);
    let (exe_area, rest) = rest.split_at(exe_len);
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
    let mut ancestors: Vec<Ancestor> = anc[..n]
        .iter()
        .map(|a| Ancestor {
            pid: a.pid,
            start_boottime: None,
            comm: cstr(bytes_of(&a.comm)),
        })
        .collect();
    // The parent's start time: how user space tells it from a process that
    // has its pid since.
    let parent_start: u64 = field!(parent_start_boottime: u64);
    if let Some(p) = ancestors.first_mut() {
        if parent_start != 0 {
            p.start_boottime = Some(parent_start);
        }
    }
    let parent_flags: u32 = field!(parent_flags: u32);

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
        exe_path: if exe_len == 0 {
            Vec::new()
        } else {
            join_reversed(exe_area)
        },
        exe_truncated: flags & abi::KESTREL_EXEC_EXE_TRUNCATED != 0,
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
        parent_kthread: parent_flags & abi::KESTREL_PARENT_KTHREAD != 0,
        parent_wq_worker: parent_flags & abi::KESTREL_PARENT_WQ_WORKER != 0,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, raw, Record};

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
}
