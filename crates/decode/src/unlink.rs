//! data_type 605: unlink, unlinkat.

use std::mem::offset_of;

use kestrel_abi as abi;

use crate::common::{path_arg, read_prefix, task, Removal};
use crate::DecodeError;

/// What `Record::Unlink` holds.
pub type Decoded = Box<Removal>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Removal, DecodeError> {
    let tail = offset_of!(abi::kestrel_unlink, file)
        + offset_of!(abi::kestrel_name, dir)
        + offset_of!(abi::kestrel_path, bytes);
    let r = read_prefix(buf, tail, hdr.kind, |r: &abi::kestrel_unlink| r.file.dir.len)?;
    Ok(Removal {
        ktime_ns: hdr.ktime_ns,
        task: task(&r.task),
        res: r.res,
        syscall: r.syscall,
        flags: r.flags,
        file: path_arg(&r.file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unlink record cut after its directory's used bytes, as the
    /// kernel sends it.
    fn record(name: &[u8], dir: &[u8], claimed: u32) -> Vec<u8> {
        // SAFETY: the ABI structs are integers and arrays of them.
        let mut r: abi::kestrel_unlink = unsafe { std::mem::zeroed() };
        r.hdr.kind = abi::KESTREL_KIND_UNLINK as u16;
        r.res = -2;
        r.syscall = 263;
        for (d, s) in r.file.name.iter_mut().zip(name) {
            *d = *s as _;
        }
        r.file.dir.bytes[..dir.len()].copy_from_slice(dir);
        r.file.dir.len = claimed;
        let tail = offset_of!(abi::kestrel_unlink, file)
            + offset_of!(abi::kestrel_name, dir)
            + offset_of!(abi::kestrel_path, bytes);
        let size = tail + dir.len();
        r.hdr.size = size as u32;
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let all = unsafe {
            std::slice::from_raw_parts((&r as *const abi::kestrel_unlink).cast::<u8>(), size)
        };
        all.to_vec()
    }

    #[test]
    fn a_relative_name_is_joined_to_its_walked_directory() {
        let rec = record(b"x", b"b\0a\0", 4);
        let crate::Record::Unlink(u) = crate::decode(&rec).unwrap() else {
            panic!("not an unlink record");
        };
        assert_eq!(u.file.path, b"/a/b/x");
        assert_eq!((u.res, u.syscall), (-2, 263));
        let abs = record(b"/etc/x", b"", 0);
        let crate::Record::Unlink(u) = crate::decode(&abs).unwrap() else {
            panic!("not an unlink record");
        };
        assert_eq!(u.file.path, b"/etc/x");
    }

    #[test]
    fn a_directory_longer_than_the_record_is_an_error() {
        let rec = record(b"x", b"b\0a\0", 400);
        assert!(matches!(
            crate::decode(&rec),
            Err(DecodeError::BadLengths(400))
        ));
        let rec = record(b"x", b"b\0a\0", 4);
        assert!(crate::decode(&rec[..rec.len() - 10]).is_err());
    }
}
