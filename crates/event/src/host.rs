//! Facts about the host itself, stamped on every event whatever its source
//! (kernel events, logins, inventory, scans): its name, its address, and
//! the time, with the offset that turns the kernel's boot-time clock into
//! wall-clock time.

use std::ffi::CStr;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Event;

/// Refreshed at most this often: host names, addresses and the clock
/// offset (NTP steps) change rarely.
const REFRESH: Duration = Duration::from_secs(30);

/// When an event happened, in its source's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// A kernel capture time: ns since boot (CLOCK_BOOTTIME).
    Boot(u64),
    /// A wall-clock time (a log line's own time, a scan's start).
    Wall(SystemTime),
}

impl When {
    /// The wall clock now.
    pub fn now() -> Self {
        When::Wall(SystemTime::now())
    }
}

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
    /// Name and address were given, not read: a refresh keeps them.
    fixed: bool,
}

impl Host {
    /// Reads the host facts now.
    pub fn new() -> Self {
        let mut h = Host {
            hostname: String::new(),
            local_ip: String::new(),
            boot_epoch_ns: 0,
            refreshed: Instant::now(),
            fixed: false,
        };
        h.refresh();
        h
    }

    /// Given facts instead of the machine's, for replays and tests; the
    /// clock offset is still read.
    pub fn fixed(hostname: impl Into<String>, local_ip: impl Into<String>) -> Self {
        let mut h = Host::new();
        h.hostname = hostname.into();
        h.local_ip = local_ip.into();
        h.fixed = true;
        h
    }

    /// Re-reads the facts when they are older than the refresh period.
    pub fn maybe_refresh(&mut self) {
        if self.refreshed.elapsed() >= REFRESH {
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        if !self.fixed {
            self.hostname = hostname();
            self.local_ip = local_ip().map(|ip| ip.to_string()).unwrap_or_default();
        }
        self.boot_epoch_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        self.refreshed = Instant::now();
    }

    /// Wall-clock epoch milliseconds of a time (0 before the epoch).
    pub fn epoch_ms(&self, when: When) -> i64 {
        match when {
            When::Boot(ktime_ns) => {
                ((self.boot_epoch_ns + i128::from(ktime_ns)) / 1_000_000) as i64
            }
            When::Wall(t) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }

    /// Appends `time`, `local_ip` and `hostname`, the fields every event
    /// ends its reference part with, in that order.
    pub fn stamp(&self, ev: &mut Event, when: When) {
        self.stamp_with_ip(ev, when, &self.local_ip);
    }

    /// [`Host::stamp`] for an event from another network than the host's
    /// (a container's namespace): `local_ip` is that network's address.
    pub fn stamp_with_ip(&self, ev: &mut Event, when: When, local_ip: &str) {
        ev.push_int("time", self.epoch_ms(when));
        ev.push("local_ip", local_ip);
        ev.push("hostname", &self.hostname);
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

    #[test]
    fn stamps_time_address_and_name_in_order() {
        let host = Host::fixed("h1", "192.0.2.7");
        let mut ev = Event::default();
        let at = UNIX_EPOCH + Duration::from_millis(1_795_749_121_123);
        host.stamp(&mut ev, When::Wall(at));
        host.stamp_with_ip(&mut ev, When::Wall(at), "10.0.0.2");
        let fields: Vec<_> = ev.fields().collect();
        assert_eq!(
            fields,
            [
                ("time", "1795749121123"),
                ("local_ip", "192.0.2.7"),
                ("hostname", "h1"),
                ("time", "1795749121123"),
                ("local_ip", "10.0.0.2"),
                ("hostname", "h1"),
            ]
        );
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let wall = host.epoch_ms(When::now());
        assert!((host.epoch_ms(When::Boot(boot)) - wall).abs() < 1000);
    }
}
