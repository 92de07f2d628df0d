//! data_type 60: a process ended.

use kestrel_abi as abi;

use crate::common::{read_pod, task};
use crate::{DecodeError, Task};

/// The end of a process (its last thread's exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The last thread; `start_boottime` is the process's start.
    pub task: Task,
    /// The kernel's exit code, as wait(2) reports it: the status << 8, or
    /// the killing signal, | 0x80 when it dumped core.
    pub exit_code: u32,
}

impl Exit {
    /// ms from the process's start to its end.
    pub fn runtime_ms(&self) -> u64 {
        self.ktime_ns.saturating_sub(self.task.start_boottime) / 1_000_000
    }

    /// The status passed to exit(2), when it was not killed by a signal.
    pub fn status(&self) -> Option<u32> {
        (self.exit_code & 0x7f == 0).then_some((self.exit_code >> 8) & 0xff)
    }

    /// The signal that killed it, when one did.
    pub fn signal(&self) -> Option<u32> {
        let s = self.exit_code & 0x7f;
        (s != 0).then_some(s)
    }

    /// It dumped core.
    pub fn core_dumped(&self) -> bool {
        self.signal().is_some() && self.exit_code & 0x80 != 0
    }
}

/// What `Record::Exit` holds.
pub type Decoded = Exit;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Exit, DecodeError> {
    let e: abi::kestrel_exit = read_pod(buf, 0, hdr.kind)?;
    Ok(Exit {
        ktime_ns: hdr.ktime_ns,
        task: task(&e.task),
        exit_code: e.exit_code,
    })
}
