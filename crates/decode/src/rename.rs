//! data_type 82: rename, renameat, renameat2.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, path_arg, read_prefix, task, PathPair};
use crate::DecodeError;

/// What `Record::Rename` holds.
pub type Decoded = Box<PathPair>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<PathPair, DecodeError> {
    let tail = offset_of!(abi::kestrel_rename, dst)
        + offset_of!(abi::kestrel_name, dir)
        + offset_of!(abi::kestrel_path, bytes);
    let r = read_prefix(buf, tail, hdr.kind, |r: &abi::kestrel_rename| r.dst.dir.len)?;
    Ok(PathPair {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        sb_id: cstr(bytes_of(&r.sb_id)),
        old: path_arg(&r.src),
        new: path_arg(&r.dst),
    })
}
