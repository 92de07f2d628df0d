//! data_type 92: chown, fchown, lchown, fchownat.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, path_arg, read_prefix, task, PathArg, Task};
use crate::DecodeError;

/// An owner change of a watched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chown {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0, or -errno.
    pub res: i32,
    /// The x86-64 number of the call.
    pub syscall: u32,
    /// fchownat's `AT_*` flags.
    pub flags: u32,
    /// The owner asked for; `None` is -1, left as it was.
    pub uid: Option<u32>,
    /// The group asked for; `None` is -1.
    pub gid: Option<u32>,
    /// `super_block.s_id` of the directory the name was looked up from.
    pub sb_id: Vec<u8>,
    /// The file: the name joined to its directory, or fchown's
    /// descriptor's file.
    pub file: PathArg,
}

/// What `Record::Chown` holds.
pub type Decoded = Box<Chown>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Chown, DecodeError> {
    let tail = offset_of!(abi::kestrel_chown, file)
        + offset_of!(abi::kestrel_name, dir)
        + offset_of!(abi::kestrel_path, bytes);
    let r = read_prefix(buf, tail, hdr.kind, |r: &abi::kestrel_chown| r.file.dir.len)?;
    let id = |v: u32| (v != u32::MAX).then_some(v);
    Ok(Chown {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        uid: id(r.uid),
        gid: id(r.gid),
        sb_id: cstr(bytes_of(&r.sb_id)),
        file: path_arg(&r.file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_leaves_an_id_as_it_was() {
        // SAFETY: the ABI structs are integers and arrays of them.
        let mut r: abi::kestrel_chown = unsafe { std::mem::zeroed() };
        r.hdr.kind = abi::KESTREL_KIND_CHOWN as u16;
        r.syscall = 260;
        r.uid = 1000;
        r.gid = u32::MAX;
        for (d, s) in r.file.name.iter_mut().zip(b"/etc/shadow") {
            *d = *s as _;
        }
        let size = offset_of!(abi::kestrel_chown, file)
            + offset_of!(abi::kestrel_name, dir)
            + offset_of!(abi::kestrel_path, bytes);
        r.hdr.size = size as u32;
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let rec = unsafe {
            std::slice::from_raw_parts((&r as *const abi::kestrel_chown).cast::<u8>(), size)
        };
        let crate::Record::Chown(c) = crate::decode(rec).unwrap() else {
            panic!("not a chown record");
        };
        assert_eq!((c.uid, c.gid), (Some(1000), None));
        assert_eq!(c.file.path, b"/etc/shadow");
    }
}
