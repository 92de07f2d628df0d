//! data_type 602: a file or node created.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, join_reversed, read_pod, task};
use crate::{DecodeError, Task};

/// A file or node created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCreate {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The creating process.
    pub task: Task,
    /// The new descriptor (0 for mknod).
    pub res: i32,
    /// The new file's absolute path; for O_TMPFILE its directory plus the
    /// kernel's "#INODE" name.
    pub path: Vec<u8>,
    /// The walk stopped early: `path` holds its innermost part.
    pub path_truncated: bool,
    /// Created with O_TMPFILE (no name yet).
    pub tmpfile: bool,
    /// Made by mknod/mknodat.
    pub mknod: bool,
    /// Mode of the new inode (type and permissions).
    pub mode: u32,
}

/// What `Record::File` holds.
pub type Decoded = FileCreate;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<FileCreate, DecodeError> {
    let f: Box<abi::kestrel_file> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let len = (f.path.len as usize).min(f.path.bytes.len());
    let dir = join_reversed(&f.path.bytes[..len]);
    let mknod = f.flags & abi::KESTREL_FILE_MKNOD != 0;
    let path = if mknod {
        let rel = cstr(bytes_of(&f.rel));
        if rel.starts_with(b"/") {
            rel
        } else {
            let mut p = dir;
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(&rel);
            p
        }
    } else {
        dir
    };
    Ok(FileCreate {
        ktime_ns: hdr.ktime_ns,
        task: task(&f.task),
        res: f.res,
        path,
        path_truncated: f.path.truncated != 0,
        tmpfile: f.flags & abi::KESTREL_FILE_TMPFILE != 0,
        mknod,
        mode: f.mode,
    })
}
