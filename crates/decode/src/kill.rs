//! data_type 62 / 200: a signal one process sent another.

use kestrel_abi as abi;

use crate::common::{bytes_of, cstr, read_pod, task};
use crate::{DecodeError, Task};

/// A signal generated for another process by a user-sent call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The sender.
    pub task: Task,
    /// The signal.
    pub sig: i32,
    /// The siginfo's si_code (SI_USER 0, SI_QUEUE -1, SI_TKILL -6, ...).
    pub si_code: i32,
    /// The task it was generated for (thread id, initial pid namespace).
    pub target_pid: u32,
    /// That task's process.
    pub target_tgid: u32,
    /// Start time of the target process (ns since boot).
    pub target_start_boottime: u64,
    /// The target's thread name.
    pub target_comm: Vec<u8>,
    /// Process-directed (data_type 62) rather than thread-directed (200).
    pub group: bool,
    /// The sender's syscall number then, `None` for a kernel thread.
    pub syscall: Option<i32>,
    /// `syscall` is an i386 number (a 32-bit call).
    pub compat: bool,
    /// The kernel's TRACE_SIGNAL_* result: 0 delivered, 1 ignored, ...
    pub result: i32,
}

/// What `Record::Kill` holds.
pub type Decoded = Kill;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Kill, DecodeError> {
    let k: abi::kestrel_kill = read_pod(buf, 0, hdr.kind)?;
    Ok(Kill {
        ktime_ns: hdr.ktime_ns,
        task: task(&k.task),
        sig: k.sig,
        si_code: k.si_code,
        target_pid: k.target_pid,
        target_tgid: k.target_tgid,
        target_start_boottime: k.target_start_boottime,
        target_comm: cstr(bytes_of(&k.target_comm)),
        group: k.flags & abi::KESTREL_KILL_GROUP != 0,
        syscall: (k.syscall >= 0).then_some(k.syscall),
        compat: k.flags & abi::KESTREL_KILL_COMPAT != 0,
        result: k.result,
    })
}

impl Kill {
    /// The call that sent it, by name where it is one of the signal calls.
    pub fn syscall_name(&self) -> String {
        let Some(nr) = self.syscall else {
            return String::new();
        };
        let name = match (self.compat, nr) {
            (false, 62) | (true, 37) => "kill",
            (false, 200) | (true, 238) => "tkill",
            (false, 234) | (true, 270) => "tgkill",
            (false, 129) | (true, 178) => "rt_sigqueueinfo",
            (false, 297) | (true, 335) => "rt_tgsigqueueinfo",
            (_, 424) => "pidfd_send_signal",
            (false, _) => return nr.to_string(),
            (true, _) => return format!("i386:{nr}"),
        };
        name.to_string()
    }
}
