//! data_type 49: bind(2) on an IPv4/IPv6 socket.

use kestrel_abi as abi;

use crate::common::{read_pod, sockaddrs, task, unspecified};
use crate::{DecodeError, SockAddrs, Task};

/// A bind(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The caller.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// The socket's descriptor.
    pub fd: i32,
    /// `sip`/`sport` only: what was bound (success) or asked for (failure).
    pub addrs: SockAddrs,
    /// The socket's protocol (IPPROTO_TCP 6, IPPROTO_UDP 17, ...).
    pub protocol: u16,
    /// The socket's type (SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_RAW 3, ...).
    pub sock_type: u16,
}

/// What `Record::Bind` holds.
pub type Decoded = Bind;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Bind, DecodeError> {
    let b: abi::kestrel_bind = read_pod(buf, 0, hdr.kind)?;
    Ok(Bind {
        ktime_ns: hdr.ktime_ns,
        task: task(&b.task),
        res: b.res,
        fd: b.fd,
        addrs: sockaddrs(&b.addrs).unwrap_or_else(|| unspecified(b.addrs.family)),
        protocol: b.protocol,
        sock_type: b.sock_type,
    })
}
