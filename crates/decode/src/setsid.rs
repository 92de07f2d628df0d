//! data_type 112: setsid(2).

use kestrel_abi as abi;

use crate::common::{read_pod, task};
use crate::{DecodeError, Task};

/// A setsid(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setsid {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller, after the call: on success `sid` is its new session.
    pub task: Task,
    /// The new session id, or -errno.
    pub res: i32,
}

/// What `Record::Setsid` holds.
pub type Decoded = Setsid;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Setsid, DecodeError> {
    let s: abi::kestrel_setsid = read_pod(buf, 0, hdr.kind)?;
    Ok(Setsid {
        ktime_ns: hdr.ktime_ns,
        task: task(&s.task),
        res: s.res,
    })
}
