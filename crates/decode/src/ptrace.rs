//! data_type 101: a ptrace(2) request on another process.

use kestrel_abi as abi;

use crate::common::{read_pod, task};
use crate::{DecodeError, Task};

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

/// What `Record::Ptrace` holds.
pub type Decoded = Ptrace;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Ptrace, DecodeError> {
    let p: abi::kestrel_ptrace = read_pod(buf, 0, hdr.kind)?;
    Ok(Ptrace {
        ktime_ns: hdr.ktime_ns,
        task: task(&p.task),
        request: p.request,
        target_pid: p.target_pid,
        res: p.res,
        addr: p.addr,
        data: p.data,
    })
}
