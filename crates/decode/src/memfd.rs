//! data_type 356: memfd_create(2).

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::{DecodeError, Task};

/// A memfd_create(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memfd {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// The new descriptor, or -errno.
    pub res: i32,
    /// The MFD_* flags passed.
    pub flags: u32,
    /// The name asked for, without the kernel's "memfd:" prefix: read back
    /// from the new file, or from the caller's memory when the call failed.
    pub name: Vec<u8>,
}

/// What `Record::Memfd` holds.
pub type Decoded = Memfd;

/// The prefix the kernel puts before a memfd's name.
pub const MEMFD_PREFIX: &[u8] = b"memfd:";

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Memfd, DecodeError> {
    let m: Box<abi::kestrel_memfd> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let mut name = cstr(bytes_of(&m.name));
    if m.res >= 0 {
        if let Some(rest) = name.strip_prefix(MEMFD_PREFIX) {
            name = rest.to_vec();
        }
    }
    Ok(Memfd {
        ktime_ns: hdr.ktime_ns,
        task: task(&m.task),
        res: m.res,
        flags: m.flags,
        name,
    })
}
