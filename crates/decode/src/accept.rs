//! data_type 43: a connection accept(2)/accept4(2) took from an IPv4/IPv6
//! listener.

use kestrel_abi as abi;

use crate::common::{read_pod, sockaddrs, task, unspecified};
use crate::{DecodeError, SockAddrs, Task};

/// An accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process that accepted it.
    pub task: Task,
    /// The new descriptor.
    pub res: i32,
    /// The listener's descriptor.
    pub fd: i32,
    /// The new socket: `sip`/`sport` its local end, `dip`/`dport` the peer.
    pub addrs: SockAddrs,
    /// The call: 43 accept, 288 accept4 (x86-64 numbers).
    pub syscall: u32,
}

/// What `Record::Accept` holds.
pub type Decoded = Accept;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Accept, DecodeError> {
    let a: abi::kestrel_accept = read_pod(buf, 0, hdr.kind)?;
    Ok(Accept {
        ktime_ns: hdr.ktime_ns,
        task: task(&a.task),
        res: a.res,
        fd: a.fd,
        addrs: sockaddrs(&a.addrs).unwrap_or_else(|| unspecified(a.addrs.family)),
        syscall: a.syscall,
    })
}
