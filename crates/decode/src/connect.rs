//! data_type 42: a connect(2) on an IPv4/IPv6 socket, or the first UDP
//! datagram a socket sent to an address without connecting to it.

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
    /// The call that named the destination.
    pub via: ConnectVia,
}

/// The call behind a data_type 42 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVia {
    /// connect(2).
    Connect,
    /// sendto(2) with an address, on a UDP socket.
    UdpSendto,
    /// sendmsg(2) with a msg_name, on a UDP socket.
    UdpSendmsg,
    /// A message of sendmmsg(2) with a msg_name, on a UDP socket.
    UdpSendmmsg,
}

impl ConnectVia {
    /// Its name in the event's `connect_type`.
    pub fn name(self) -> &'static str {
        match self {
            ConnectVia::Connect => "connect",
            ConnectVia::UdpSendto => "udp_sendto",
            ConnectVia::UdpSendmsg => "udp_sendmsg",
            ConnectVia::UdpSendmmsg => "udp_sendmmsg",
        }
    }
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
        via: match c.via {
            abi::KESTREL_CONNECT_VIA_CONNECT => ConnectVia::Connect,
            abi::KESTREL_CONNECT_VIA_SENDTO => ConnectVia::UdpSendto,
            abi::KESTREL_CONNECT_VIA_SENDMSG => ConnectVia::UdpSendmsg,
            abi::KESTREL_CONNECT_VIA_SENDMMSG => ConnectVia::UdpSendmmsg,
            v => {
                return Err(DecodeError::BadField {
                    kind: hdr.kind,
                    field: "via",
                    value: v as u64,
                })
            }
        },
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
        assert_eq!(c.via, crate::ConnectVia::Connect);
    }
}
