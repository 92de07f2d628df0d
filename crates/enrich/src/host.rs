//! Facts about the host itself: its name, its address, and the offset that
//! turns the kernel's boot-time clock into wall-clock time.

use std::ffi::CStr;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refreshed at most this often: host names, addresses and the clock
/// offset (NTP steps) change rarely.
const REFRESH: Duration = Duration::from_secs(30);

/// Host facts shared by every event.
#[derive(Debug)]
pub struct Host {
    /// The host's name (the agent's own UTS namespace).
    pub hostname: String,
    /// The first non-loopback address of an interface that is up.
    pub local_ip: String,
    /// Wall-clock ns at boot: CLOCK_REALTIME - CLOCK_BOOTTIME.
    boot_epoch_ns: i128,
    refreshed: Instant,
}

impl Host {
    /// Reads the host facts now.
    pub fn new() -> Self {
        let mut h = Host {
            hostname: String::new(),
            local_ip: String::new(),
            boot_epoch_ns: 0,
            refreshed: Instant::now(),
        };
        h.refresh();
        h
    }

    /// Re-reads the facts when they are older than the refresh period.
    pub fn maybe_refresh(&mut self) {
        if self.refreshed.elapsed() >= REFRESH {
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        self.hostname = hostname();
        self.local_ip = local_ip().map(|ip| ip.to_string()).unwrap_or_default();
        self.boot_epoch_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        self.refreshed = Instant::now();
    }

    /// Wall-clock epoch milliseconds of a kernel boot-time timestamp.
    pub fn epoch_ms(&self, ktime_ns: u64) -> i64 {
        ((self.boot_epoch_ns + i128::from(ktime_ns)) / 1_000_000) as i64
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

/// The time of `clock` (CLOCK_BOOTTIME, CLOCK_REALTIME, a CPU-time clock...)
/// in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One address of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub ip: IpAddr,
    /// The interface is up.
    pub up: bool,
    /// The interface is a loopback one.
    pub loopback: bool,
}

/// Every IPv4 and IPv6 address of every interface, in getifaddrs order.
pub fn interface_addrs() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which struct it is.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        let flags = ifa.ifa_flags as libc::c_int;
        out.push(IfAddr {
            ip,
            up: flags & libc::IFF_UP != 0,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        });
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// The first IPv4 address of an up, non-loopback interface; an IPv6 global
/// address when there is no IPv4 one.
pub fn local_ip() -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = interface_addrs()
        .into_iter()
        .filter(|a| a.up && !a.loopback)
        .map(|a| a.ip)
        .collect();
    addrs.iter().find(|ip| ip.is_ipv4()).copied().or_else(|| {
        // Link-local addresses say nothing to a remote reader.
        addrs
            .iter()
            .find(|ip| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 != 0xfe80))
            .copied()
    })
}

/// Inode number of a namespace file (/proc/PID/ns/net and the like).
fn ns_inode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// The agent's own network namespace.
pub fn own_net_ns() -> Option<u32> {
    ns_inode(std::path::Path::new("/proc/self/ns/net"))
}

/// The primary address inside the network namespace at `ns_path` (a
/// /proc/PID/ns/net link), checked to be namespace `inum`. The calling
/// thread enters the namespace for the getifaddrs call and comes back.
pub fn netns_local_ip(ns_path: &std::path::Path, inum: u32) -> Option<IpAddr> {
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
    let ip = local_ip();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses_name_loopback_and_local_ip_skips_it() {
        let addrs = interface_addrs();
        assert!(
            addrs
                .iter()
                .any(|a| a.ip == IpAddr::from([127, 0, 0, 1]) && a.up && a.loopback),
            "{addrs:?}"
        );
        if let Some(ip) = local_ip() {
            assert!(!ip.is_loopback(), "{ip}");
            assert!(addrs.iter().any(|a| a.ip == ip && a.up && !a.loopback));
        }
    }
}
