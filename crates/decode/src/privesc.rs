//! data_type 611: a process raised above its parent's credentials without
//! a setuid exec.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::exec::Ancestor;
use crate::{DecodeError, Task};

/// One process's ids, in the order Elkeid's cred strings list them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creds {
    /// uid, euid, suid, fsuid, gid, egid, sgid, fsgid.
    pub ids: [u32; 8],
}

impl Creds {
    fn of(c: &abi::kestrel_creds) -> Self {
        Creds {
            ids: [
                c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid,
            ],
        }
    }
}

/// A process whose uid or euid became 0 while its parent's are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privesc {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process, with its new credentials.
    pub task: Task,
    /// The real parent's tgid.
    pub p_pid: u32,
    /// The parent's credentials when it was noticed.
    pub p_cred: Creds,
    /// The process's.
    pub c_cred: Creds,
    /// Where it was noticed (enum kestrel_cred_trigger).
    pub trigger: u32,
    /// Parent first, then its parent, and so on.
    pub ancestors: Vec<Ancestor>,
    /// The tree goes higher than what was captured.
    pub pid_tree_truncated: bool,
}

/// What `Record::Privesc` holds.
pub type Decoded = Privesc;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Privesc, DecodeError> {
    let r: abi::kestrel_privesc = read_pod(buf, 0, hdr.kind)?;
    let n = (r.ancestors_len as usize).min(r.ancestors.len());
    Ok(Privesc {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        p_pid: r.p_pid,
        p_cred: Creds::of(&r.p_cred),
        c_cred: Creds::of(&r.c_cred),
        trigger: r.trigger,
        ancestors: r.ancestors[..n]
            .iter()
            .map(|a| Ancestor {
                pid: a.pid,
                start_boottime: None,
                comm: cstr(bytes_of(&a.comm)),
            })
            .collect(),
        pid_tree_truncated: r.flags & abi::KESTREL_EXEC_PID_TREE_TRUNCATED != 0,
    })
}
