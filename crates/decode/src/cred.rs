//! data_type 604: a process whose uid or euid became 0.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::{DecodeError, Task};

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

/// What `Record::Cred` holds.
pub type Decoded = Cred;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Cred, DecodeError> {
    let c: abi::kestrel_cred = read_pod(buf, 0, hdr.kind)?;
    Ok(Cred {
        ktime_ns: hdr.ktime_ns,
        task: task(&c.task),
        old_uid: c.old_uid,
        old_euid: c.old_euid,
        trigger: c.trigger,
        filename: cstr(bytes_of(&c.filename)),
    })
}
