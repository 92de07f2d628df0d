//! The kernel's uevent socket (`NETLINK_KOBJECT_UEVENT`, multicast group 1)
//! and the check that a message came from the kernel.
//!
//! Anyone with CAP_NET_ADMIN in the initial user namespace may send to that
//! group, and anyone may send to our socket's port id directly; what such a
//! sender cannot choose is the source the kernel stamps on its message: its
//! own port id (never 0, which is the kernel's) and, with SO_PASSCRED, its
//! pid and uid. Only port 0 with pid 0 and uid 0 is taken.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::uevent::MAX_MESSAGE;

/// The kernel's multicast group of uevents (udev's own is 2).
pub const KERNEL_GROUP: u32 = 1;

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message from the kernel, of this many bytes.
    Kernel(usize),
    /// A message someone else sent: its source port id, and the pid and
    /// uid it carried (when the kernel attached credentials).
    Forged {
        port: u32,
        pid: Option<i32>,
        uid: Option<u32>,
    },
    /// A message longer than the buffer (cut: not parsed).
    Truncated,
    /// The receive buffer overflowed: the kernel dropped uevents.
    Overrun,
    /// Nothing within the timeout.
    Idle,
}

/// A socket bound to the kernel's uevents.
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Opens and binds the socket; `rcvbuf` bytes of buffer absorb a burst
    /// (a hub full of devices).
    pub fn open(rcvbuf: usize) -> Result<Self, Errno> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Port id 0: the kernel picks a free one.
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // Forcing needs CAP_NET_ADMIN; without it the default stays.
        if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
        }
        Ok(UeventSocket { fd })
    }

    /// Sets how long [`UeventSocket::recv`] waits.
    pub fn set_timeout(&self, t: Duration) -> Result<(), Errno> {
        let t = t.max(Duration::from_millis(1));
        setsockopt(
            &self.fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(t.as_secs() as _, t.subsec_micros() as _),
        )
    }

    /// Reads one message into `buf` (at least [`MAX_MESSAGE`] bytes).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, Errno> {
        debug_assert!(buf.len() >= MAX_MESSAGE);
        let mut cmsg = nix::cmsg_space!(libc::ucred);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<NetlinkAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Received::Idle),
            Err(Errno::ENOBUFS) => return Ok(Received::Overrun),
            Err(e) => return Err(e),
        };
        let (mut pid, mut uid) = (None, None);
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmCredentials(cr) = c {
                    pid = Some(cr.pid());
                    uid = Some(cr.uid());
                }
            }
        }
        let port = msg.address.map_or(u32::MAX, |a| a.pid());
        let groups = msg.address.map_or(0, |a| a.groups());
        // SO_PASSCRED makes the kernel attach credentials to every message:
        // one without them is refused too.
        let from_kernel =
            port == 0 && groups & KERNEL_GROUP != 0 && pid == Some(0) && uid == Some(0);
        if !from_kernel {
            return Ok(Received::Forged { port, pid, uid });
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Ok(Received::Truncated);
        }
        Ok(Received::Kernel(msg.bytes))
    }
}
