//! The address of the network an event happened in, for processes in
//! another network namespace than the agent's.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;

use kestrel_decode::Task;
use lru::LruCache;

use super::procfs::Procfs;

/// Network namespace → its primary address, for namespaces other than the
/// agent's.
pub(crate) struct NetnsAddrs {
    cache: LruCache<u32, String>,
    own: u32,
}

impl NetnsAddrs {
    pub(crate) fn new(entries: usize) -> Self {
        NetnsAddrs {
            cache: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap()),
            own: own_net_ns().unwrap_or(0),
        }
    }

    /// The address of `t`'s network when it is not the host's; `None` when
    /// it is (the host's own address applies).
    pub(crate) fn foreign_ip(
        &mut self,
        procfs: &Procfs,
        t: &Task,
        sip: Option<IpAddr>,
    ) -> Option<String> {
        if t.net_ns == 0 || t.net_ns == self.own {
            return None;
        }
        if let Some(ip) = self.cache.get(&t.net_ns) {
            return Some(ip.clone());
        }
        if let Some(ip) = netns_local_ip(&procfs.path(t.tgid, "ns/net"), t.net_ns) {
            let ip = ip.to_string();
            self.cache.put(t.net_ns, ip.clone());
            return Some(ip);
        }
        // The process is gone: its socket's own address is the best left.
        Some(
            sip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
        )
    }
}

/// Inode number of a namespace file (/proc/PID/ns/net and the like).
fn ns_inode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// The agent's own network namespace.
fn own_net_ns() -> Option<u32> {
    ns_inode(Path::new("/proc/self/ns/net"))
}

/// The primary address inside the network namespace at `ns_path` (a
/// /proc/PID/ns/net link), checked to be namespace `inum`. The calling
/// thread enters the namespace for the getifaddrs call and comes back.
fn netns_local_ip(ns_path: &Path, inum: u32) -> Option<IpAddr> {
    use std::os::fd::AsRawFd;
    let target = std::fs::File::open(ns_path).ok()?;
    if ns_inode(ns_path) != Some(inum) {
        return None;
    }
    let own = std::fs::File::open("/proc/thread-self/ns/net").ok()?;
    // SAFETY: setns on valid namespace descriptors; only this thread moves.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    let ip = kestrel_event::host::local_ip();
    // SAFETY: as above, back to where the thread was.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // Staying in a foreign namespace would mislabel every later event.
        panic!(
            "cannot return to the agent's network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    ip
}
