//! data_type 157: a thread renamed (prctl PR_SET_NAME, /proc/PID/comm).

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::{DecodeError, Task};

/// A thread's new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prctl {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The renamed thread; its `comm` is the name before.
    pub task: Task,
    /// The renaming thread's syscall number (157 prctl, 1 write, ...).
    pub syscall: u32,
    /// prctl's option (15, PR_SET_NAME), 0 for another syscall.
    pub option: u32,
    /// The thread that renamed it.
    pub renamer: u32,
    /// The new name (15 bytes at most).
    pub new_name: Vec<u8>,
}

/// What `Record::Prctl` holds.
pub type Decoded = Prctl;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Prctl, DecodeError> {
    let p: abi::kestrel_prctl = read_pod(buf, 0, hdr.kind)?;
    Ok(Prctl {
        ktime_ns: hdr.ktime_ns,
        task: task(&p.task),
        syscall: p.syscall,
        option: p.option,
        renamer: p.renamer,
        new_name: cstr(bytes_of(&p.new_name)),
    })
}
