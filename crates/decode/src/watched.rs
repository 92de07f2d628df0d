//! data_types 608 and 609: a watched path opened for write or truncated
//! (608), or opened for read (609).

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, join_reversed, read_pod, task};
use crate::{DecodeError, Task};

/// The call that touched the watched file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchedOp {
    /// open(2).
    Open,
    /// openat(2).
    Openat,
    /// openat2(2).
    Openat2,
    /// creat(2).
    Creat,
    /// truncate(2).
    Truncate,
    /// ftruncate(2).
    Ftruncate,
}

impl WatchedOp {
    /// The syscall's name.
    pub fn name(self) -> &'static str {
        match self {
            WatchedOp::Open => "open",
            WatchedOp::Openat => "openat",
            WatchedOp::Openat2 => "openat2",
            WatchedOp::Creat => "creat",
            WatchedOp::Truncate => "truncate",
            WatchedOp::Ftruncate => "ftruncate",
        }
    }
}

/// A watched file opened or truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process.
    pub task: Task,
    /// The descriptor an open returned, or 0.
    pub res: i32,
    /// Which call.
    pub op: WatchedOp,
    /// open's flags (truncate: O_WRONLY|O_TRUNC; ftruncate: the file's).
    pub open_flags: u32,
    /// A write-open or truncate (608); otherwise a read-open (609).
    pub write: bool,
    /// The open created the file (its 602 is sent too).
    pub created: bool,
    /// The file's superblock id ("sda1", "overlay"); empty when unknown.
    pub sb_id: Vec<u8>,
    /// The file's absolute path.
    pub path: Vec<u8>,
    /// The walk stopped early: `path` holds its innermost part.
    pub path_truncated: bool,
}

/// What `Record::Watched` holds.
pub type Decoded = Watched;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Watched, DecodeError> {
    let w: Box<abi::kestrel_watched> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let op = match w.op {
        abi::KESTREL_WATCH_OP_OPEN => WatchedOp::Open,
        abi::KESTREL_WATCH_OP_OPENAT => WatchedOp::Openat,
        abi::KESTREL_WATCH_OP_OPENAT2 => WatchedOp::Openat2,
        abi::KESTREL_WATCH_OP_CREAT => WatchedOp::Creat,
        abi::KESTREL_WATCH_OP_TRUNCATE => WatchedOp::Truncate,
        abi::KESTREL_WATCH_OP_FTRUNCATE => WatchedOp::Ftruncate,
        v => {
            return Err(DecodeError::BadField {
                kind: hdr.kind,
                field: "op",
                value: v as u64,
            })
        }
    };
    let len = (w.path.len as usize).min(w.path.bytes.len());
    let dir = join_reversed(&w.path.bytes[..len]);
    let rel = cstr(bytes_of(&w.rel));
    let path = if rel.is_empty() {
        dir
    } else if rel.starts_with(b"/") {
        rel
    } else {
        let mut p = dir;
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(&rel);
        p
    };
    Ok(Watched {
        ktime_ns: hdr.ktime_ns,
        task: task(&w.task),
        res: w.res,
        op,
        open_flags: w.open_flags,
        write: w.flags & abi::KESTREL_WATCHED_WRITE != 0,
        created: w.flags & abi::KESTREL_WATCHED_CREATED != 0,
        sb_id: cstr(bytes_of(&w.sb_id)),
        path,
        path_truncated: w.path.truncated != 0,
    })
}
