//! data_type 42: a connect(2) on an IPv4/IPv6 socket.

use kestrel_abi as abi;

use crate::common::{read_pod, sockaddrs, task, unspecified};
use crate::{DecodeError, SockAddrs, Task};

/// A connect(2) on an IPv4/IPv6 socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Capture time, ns since boot.
    pub ktime_ns: u64,
    /// The process.
    pub task: Task,
    /// 0 or -errno.
    pub res: i32,
    /// The socket's descriptor.
    pub fd: i32,
    /// Local end (after the call) and the address connected to.
    pub addrs: SockAddrs,
}

/// What `Record::Connect` holds.
pub type Decoded = Connect;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Connect, DecodeError> {
    let c: abi::kestrel_connect = read_pod(buf, 0, hdr.kind)?;
    Ok(Connect {
        ktime_ns: hdr.ktime_ns,
        task: task(&c.task),
        res: c.res,
        fd: c.fd,
        addrs: sockaddrs(&c.addrs).unwrap_or_else(|| unspecified(c.addrs.family)),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use crate::{decode, raw, Record};

    #[test]
    fn connect_round_trip() {
        let rec = raw::connect(raw::task(7, 1, 1000, b"curl"), -111, [10, 0, 0, 1], 443);
        let Record::Connect(c) = decode(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(c.res, -111);
        assert_eq!(c.addrs.dip, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.addrs.dport, 443);
        assert_eq!(c.task.uid, 1000);
    }
}
