//! data_type 606: rmdir, unlinkat with AT_REMOVEDIR.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{path_arg, read_prefix, task, Removal};
use crate::DecodeError;

/// What `Record::Rmdir` holds.
pub type Decoded = Box<Removal>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Removal, DecodeError> {
    let tail = offset_of!(abi::kestrel_rmdir, file)
        + offset_of!(abi::kestrel_name, dir)
        + offset_of!(abi::kestrel_path, bytes);
    let r = read_prefix(buf, tail, hdr.kind, |r: &abi::kestrel_rmdir| r.file.dir.len)?;
    Ok(Removal {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        file: path_arg(&r.file),
    })
}
