//! data_type 10: memory made executable (mmap, mprotect, pkey_mprotect).

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, join_reversed, read_pod, task};
use crate::{DecodeError, Task};

/// The call that asked for executable memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemSyscall {
    /// mmap(2), seen at its exit.
    Mmap,
    /// mprotect(2), seen at its entry.
    Mprotect,
    /// pkey_mprotect(2), seen at its entry.
    PkeyMprotect,
}

impl MemSyscall {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemSyscall::Mmap => "mmap",
            MemSyscall::Mprotect => "mprotect",
            MemSyscall::PkeyMprotect => "pkey_mprotect",
        }
    }
}

/// The mapping found at the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// Its first address.
    pub start: u64,
    /// One past its last.
    pub end: u64,
    /// The kernel's VM_* flags: before the change (mprotect), after it (mmap).
    pub flags: u64,
    /// The file it maps, absolute as the process's mount namespace has it;
    /// `None` for anonymous memory.
    pub file: Option<Vec<u8>>,
    /// The file's own name ("memfd:x" for a memfd, whose path is empty).
    pub file_name: Vec<u8>,
    /// The file has no link left (a memfd, or deleted).
    pub unlinked: bool,
    /// Private pages of it were written (its anon_vma is set).
    pub cow: bool,
    /// The file is open for writing, or mapped shared and writable,
    /// somewhere.
    pub file_writable: bool,
    /// The path walk stopped early: `file` holds its innermost part.
    pub path_truncated: bool,
}

/// Memory made executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mprotect {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// Which call.
    pub syscall: MemSyscall,
    /// mprotect: the start asked for; mmap: the address returned.
    pub addr: u64,
    /// Length asked for.
    pub len: u64,
    /// mmap: the address or -errno; mprotect: 0 (its result is not known).
    pub res: i64,
    /// The PROT_* asked for.
    pub prot: u32,
    /// mmap's MAP_* flags (0 for mprotect).
    pub map_flags: u32,
    /// mmap's descriptor (-1 for mprotect).
    pub fd: i32,
    /// pkey_mprotect's key (-1 otherwise).
    pub pkey: i32,
    /// The process has READ_IMPLIES_EXEC, which made PROT_READ executable.
    pub read_implies_exec: bool,
    /// The mapping at the address; `None` when there was none.
    pub vma: Option<Vma>,
    /// The address space was locked by another thread: the mapping was not
    /// looked at.
    pub vma_busy: bool,
    /// The process owning the address space (its memory cgroup owner).
    pub owner_tgid: u32,
}

/// What `Record::Mprotect` holds.
pub type Decoded = Box<Mprotect>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Mprotect, DecodeError> {
    let m: Box<abi::kestrel_mprotect> = Box::new(read_pod(buf, 0, hdr.kind)?);
    let syscall = match m.syscall {
        abi::KESTREL_MEM_MMAP => MemSyscall::Mmap,
        abi::KESTREL_MEM_MPROTECT => MemSyscall::Mprotect,
        abi::KESTREL_MEM_PKEY_MPROTECT => MemSyscall::PkeyMprotect,
        v => {
            return Err(DecodeError::BadField {
                kind: hdr.kind,
                field: "syscall",
                value: u64::from(v),
            })
        }
    };
    let len = (m.path.len as usize).min(m.path.bytes.len());
    let vma = (m.vma & abi::KESTREL_VMA_FOUND != 0).then(|| {
        let file = m.vma & abi::KESTREL_VMA_FILE != 0;
        Vma {
            start: m.vm_start,
            end: m.vm_end,
            flags: m.vm_flags,
            file: file.then(|| join_reversed(&m.path.bytes[..len])),
            file_name: if file {
                cstr(bytes_of(&m.name))
            } else {
                Vec::new()
            },
            unlinked: m.vma & abi::KESTREL_VMA_UNLINKED != 0,
            cow: m.vma & abi::KESTREL_VMA_COW != 0,
            file_writable: m.vma & abi::KESTREL_VMA_WRITABLE != 0,
            path_truncated: m.path.truncated != 0,
        }
    });
    Ok(Mprotect {
        ktime_ns: hdr.ktime_ns,
        task: task(&m.task),
        syscall,
        addr: m.addr,
        len: m.len,
        res: m.res,
        prot: m.prot,
        map_flags: m.map_flags,
        fd: m.fd,
        pkey: m.pkey,
        read_implies_exec: m.vma & abi::KESTREL_VMA_READ_IMPLIES_EXEC != 0,
        vma,
        vma_busy: m.vma & abi::KESTREL_VMA_BUSY != 0,
        owner_tgid: m.owner_tgid,
    })
}
