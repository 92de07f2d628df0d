//! The addresses each process was given by DNS, so that its later
//! connection to one of them names the host it asked for (`dip_hostname`
//! on 42, Sigma's `DestinationHostname`). Bounded: the least recently
//! used go first, and an answer older than [`MAX_AGE_NS`] is not used
//! (the address may serve another name by then).

use std::net::IpAddr;
use std::num::NonZeroUsize;

use kestrel_decode::Task;
use lru::LruCache;

/// Entries remembered for all processes together.
pub(crate) const ENTRIES: usize = 8192;

/// An hour: longer than most TTLs, and what a program that caches its
/// lookups may keep connecting to.
pub(crate) const MAX_AGE_NS: u64 = 3_600 * 1_000_000_000;

/// A process (tgid and start time: a reused pid is another process) and
/// an address it was given.
type Key = (u32, u64, IpAddr);

pub(crate) struct DnsAnswers {
    names: LruCache<Key, (String, u64)>,
}

/// An IPv4-mapped IPv6 address is its IPv4 address (a dual-stack socket
/// connects to `::ffff:a.b.c.d` after an A answer).
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl DnsAnswers {
    pub(crate) fn new(entries: usize) -> Self {
        DnsAnswers {
            names: LruCache::new(NonZeroUsize::new(entries.max(1)).expect("not zero")),
        }
    }

    /// `t` was told `query` is at `addrs`, at `ktime_ns`.
    pub(crate) fn learn(&mut self, t: &Task, query: &str, addrs: &[IpAddr], ktime_ns: u64) {
        if query.is_empty() {
            return;
        }
        for a in addrs {
            self.names.put(
                (t.tgid, t.start_boottime, plain(*a)),
                (query.to_string(), ktime_ns),
            );
        }
    }

    /// The name `t` last looked up that gave `ip`, if recent; else empty.
    pub(crate) fn name_of(&mut self, t: &Task, ip: IpAddr, ktime_ns: u64) -> String {
        match self.names.get(&(t.tgid, t.start_boottime, plain(ip))) {
            Some((name, at)) if ktime_ns.saturating_sub(*at) <= MAX_AGE_NS => name.clone(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tgid: u32, start: u64) -> Task {
        Task {
            tgid,
            start_boottime: start,
            ..Default::default()
        }
    }

    #[test]
    fn per_process_bounded_and_aged() {
        let mut a = DnsAnswers::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        a.learn(&task(10, 1), "pool.example", &[ip], 100);
        assert_eq!(a.name_of(&task(10, 1), ip, 200), "pool.example");
        // Through a dual-stack socket.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(a.name_of(&task(10, 1), mapped, 200), "pool.example");
        // Another process, or the same pid reused, was not told.
        assert_eq!(a.name_of(&task(11, 1), ip, 200), "");
        assert_eq!(a.name_of(&task(10, 2), ip, 200), "");
        // Too old.
        assert_eq!(a.name_of(&task(10, 1), ip, 100 + MAX_AGE_NS + 1), "");
        // Bounded: the least recently used goes.
        a.learn(
            &task(12, 1),
            "b.example",
            &["192.0.2.8".parse().unwrap()],
            100,
        );
        a.learn(
            &task(13, 1),
            "c.example",
            &["192.0.2.9".parse().unwrap()],
            100,
        );
        assert_eq!(a.name_of(&task(10, 1), ip, 200), "");
    }
}
