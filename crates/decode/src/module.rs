//! data_type 603: init_module or finit_module.

use kestrel_abi as abi;

use crate::common::{join_reversed, read_pod, task};
use crate::{DecodeError, Task};

/// init_module or finit_module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The loading process.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// finit_module's descriptor, -1 for init_module.
    pub fd: i32,
    /// init_module's image length.
    pub image_len: u64,
    /// finit_module's flags.
    pub flags: u32,
    /// The file loaded from, absolute ("/" when unknown), for finit_module.
    pub path: Vec<u8>,
    /// The path walk stopped early: `path` holds its innermost part.
    pub path_truncated: bool,
}

/// What `Record::Module` holds.
pub type Decoded = Module;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Module, DecodeError> {
    let m: Box<abi::kestrel_module> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let len = (m.path.len as usize).min(m.path.bytes.len());
    Ok(Module {
        ktime_ns: hdr.ktime_ns,
        task: task(&m.task),
        res: m.res,
        fd: m.fd,
        image_len: m.image_len,
        flags: m.flags,
        path: if m.fd >= 0 && len > 0 {
            join_reversed(&m.path.bytes[..len])
        } else {
            Vec::new()
        },
        path_truncated: m.path.truncated != 0,
    })
}
