//! data_type 90: chmod, fchmod, fchmodat, fchmodat2.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, path_arg, read_prefix, task, PathArg, Task};
use crate::DecodeError;

/// A mode change: one asking for setuid or setgid anywhere, or any change
/// of a watched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0, or -errno.
    pub res: i32,
    /// The x86-64 number of the call.
    pub syscall: u32,
    /// fchmodat2's `AT_*` flags.
    pub flags: u32,
    /// The mode asked for.
    pub mode: u32,
    /// The file's mode (with its type bits) before the call, where the
    /// kernel side could read it: fchmod only.
    pub old_mode: Option<u32>,
    /// The file is under a watched path.
    pub watched: bool,
    /// `super_block.s_id` of the directory the name was looked up from.
    pub sb_id: Vec<u8>,
    /// The file: the name joined to its directory, or fchmod's descriptor's
    /// file.
    pub file: PathArg,
}

/// What `Record::Chmod` holds.
pub type Decoded = Box<Chmod>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Chmod, DecodeError> {
    let tail = offset_of!(abi::kestrel_chmod, file)
        + offset_of!(abi::kestrel_name, dir)
        + offset_of!(abi::kestrel_path, bytes);
    let r = read_prefix(buf, tail, hdr.kind, |r: &abi::kestrel_chmod| r.file.dir.len)?;
    Ok(Chmod {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        mode: r.mode,
        old_mode: (r.what & abi::KESTREL_CHMOD_OLD_MODE != 0).then_some(r.old_mode),
        watched: r.what & abi::KESTREL_CHMOD_WATCHED != 0,
        sb_id: cstr(bytes_of(&r.sb_id)),
        file: path_arg(&r.file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chmod record cut after its directory's used bytes, as the kernel
    /// sends it.
    fn record(name: &[u8], dir: &[u8], claimed: u32, what: u32) -> Vec<u8> {
        // SAFETY: the ABI structs are integers and arrays of them.
        let mut r: abi::kestrel_chmod = unsafe { std::mem::zeroed() };
        r.hdr.kind = abi::KESTREL_KIND_CHMOD as u16;
        r.syscall = 91;
        r.mode = 0o4755;
        r.old_mode = 0o100644;
        r.what = what;
        for (d, s) in r.file.name.iter_mut().zip(name) {
            *d = *s as _;
        }
        r.file.dir.bytes[..dir.len()].copy_from_slice(dir);
        r.file.dir.len = claimed;
        let tail = offset_of!(abi::kestrel_chmod, file)
            + offset_of!(abi::kestrel_name, dir)
            + offset_of!(abi::kestrel_path, bytes);
        let size = tail + dir.len();
        r.hdr.size = size as u32;
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let all = unsafe {
            std::slice::from_raw_parts((&r as *const abi::kestrel_chmod).cast::<u8>(), size)
        };
        all.to_vec()
    }

    #[test]
    fn a_descriptor_s_file_is_its_walked_path_and_the_old_mode_only_when_known() {
        let rec = record(b"", b"x\0b\0a\0", 6, abi::KESTREL_CHMOD_OLD_MODE);
        let crate::Record::Chmod(c) = crate::decode(&rec).unwrap() else {
            panic!("not a chmod record");
        };
        assert_eq!(c.file.path, b"/a/b/x");
        assert_eq!((c.mode, c.old_mode, c.watched), (0o4755, Some(0o100644), false));
        let rec = record(b"/etc/x", b"", 0, abi::KESTREL_CHMOD_WATCHED);
        let crate::Record::Chmod(c) = crate::decode(&rec).unwrap() else {
            panic!("not a chmod record");
        };
        assert_eq!((c.file.path.as_slice(), c.old_mode, c.watched), (&b"/etc/x"[..], None, true));
    }

    #[test]
    fn a_directory_longer_than_the_record_is_an_error() {
        let rec = record(b"x", b"b\0a\0", 400, 0);
        assert!(matches!(
            crate::decode(&rec),
            Err(DecodeError::BadLengths(400))
        ));
    }
}
