//! data_type 605: unlink, unlinkat.

use kestrel_abi as abi;

use crate::common::{path_arg, read_pod, task, Removal};
use crate::DecodeError;

/// What `Record::Unlink` holds.
pub type Decoded = Box<Removal>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Removal, DecodeError> {
    let r: Box<abi::kestrel_unlink> = Box::new(read_pod(buf, 0, hdr.kind)?);
    Ok(Removal {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        file: path_arg(&r.file),
    })
}
