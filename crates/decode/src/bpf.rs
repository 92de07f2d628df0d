//! data_type 321: bpf(2) loading or attaching a program.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::{DecodeError, Task};

/// A bpf(2) call of one of the reported commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpf {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// The new descriptor (a load, a link, a raw tracepoint), 0, or -errno.
    pub res: i32,
    /// The command (BPF_PROG_LOAD 5, BPF_PROG_ATTACH 8,
    /// BPF_RAW_TRACEPOINT_OPEN 17, BPF_LINK_CREATE 28).
    pub cmd: u32,
    /// enum bpf_prog_type.
    pub prog_type: u32,
    /// enum bpf_attach_type, when known.
    pub attach_type: Option<u32>,
    /// The program's descriptor (-1: none).
    pub prog_fd: i32,
    /// What it is attached to (PROG_ATTACH, LINK_CREATE; -1: none).
    pub target_fd: i32,
    /// The kernel's id of the program (0: unknown).
    pub prog_id: u32,
    /// The program's name.
    pub prog_name: Vec<u8>,
    /// Type, name (and a load's attach type) read from the kernel's
    /// program rather than from the caller's arguments.
    pub from_kernel: bool,
    /// RAW_TRACEPOINT_OPEN's tracepoint.
    pub tp_name: Vec<u8>,
}

/// What `Record::Bpf` holds.
pub type Decoded = Bpf;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Bpf, DecodeError> {
    let b: abi::kestrel_bpf = read_pod(buf, 0, hdr.kind)?;
    Ok(Bpf {
        ktime_ns: hdr.ktime_ns,
        task: task(&b.task),
        res: b.res,
        cmd: b.cmd,
        prog_type: b.prog_type,
        attach_type: (b.flags & abi::KESTREL_BPF_HAS_ATTACH_TYPE != 0).then_some(b.attach_type),
        prog_fd: b.prog_fd,
        target_fd: b.target_fd,
        prog_id: b.prog_id,
        prog_name: cstr(bytes_of(&b.prog_name)),
        from_kernel: b.flags & abi::KESTREL_BPF_PROG_FROM_KERNEL != 0,
        tp_name: cstr(bytes_of(&b.tp_name)),
    })
}
