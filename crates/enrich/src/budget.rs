//! The bytes and time hashing may spend per second.
//!
//! Hashing is the one step whose cost an unprivileged user chooses: sparse
//! files of any size cost them nothing to make and the agent a full read
//! each. Both hashers (executables, on the collecting thread; created
//! files, on their own thread) spend from one of these.

use std::time::{Duration, Instant};

/// A file that takes longer than this to read (a slow or hostile file
/// system, a starved host) is given up on, whatever the budget says.
pub(crate) const FILE_TIME_MAX: Duration = Duration::from_secs(1);

/// Token buckets refilled continuously, holding one second's worth at
/// most. A file started within the time budget is finished (up to
/// [`FILE_TIME_MAX`]) even past it: aborting it would waste what was read.
/// The time it overran is owed, and no file starts until it is paid back.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes_per_sec: u64,
    ns_per_sec: i64,
    bytes: u64,
    /// Negative while a file's overrun is owed.
    ns: i64,
    last: Instant,
}

impl Budget {
    pub(crate) fn new(bytes_per_sec: u64, time_per_sec: Duration) -> Self {
        let ns_per_sec = time_per_sec.as_nanos().min(i64::MAX as u128) as i64;
        Budget {
            bytes_per_sec,
            ns_per_sec,
            bytes: bytes_per_sec,
            ns: ns_per_sec,
            last: Instant::now(),
        }
    }

    /// No limit: for callers that hash a few files they chose themselves.
    pub(crate) fn unlimited() -> Self {
        Budget::new(u64::MAX, Duration::from_secs(1 << 30))
    }

    /// Whether a file of `size` bytes may start now.
    pub(crate) fn allows(&mut self, size: u64) -> bool {
        self.refill();
        size <= self.bytes && self.ns > 0
    }

    /// Whether a read that has taken `total` bytes since `started` may go on.
    pub(crate) fn may_continue(&self, total: u64, started: Instant) -> bool {
        total <= self.bytes && started.elapsed() <= FILE_TIME_MAX
    }

    /// What one file cost, read to the end or not.
    pub(crate) fn spend(&mut self, bytes: u64, started: Instant) {
        self.bytes = self.bytes.saturating_sub(bytes);
        let spent = started.elapsed().as_nanos().min(i64::MAX as u128) as i64;
        self.ns = self.ns.saturating_sub(spent);
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let ns = now.duration_since(self.last).as_nanos();
        self.last = now;
        let add =
            |rate: u64| (u128::from(rate) * ns / 1_000_000_000).min(u128::from(u64::MAX)) as u64;
        self.bytes = (self.bytes.saturating_add(add(self.bytes_per_sec))).min(self.bytes_per_sec);
        let ns_add = add(self.ns_per_sec as u64).min(i64::MAX as u64) as i64;
        self.ns = self.ns.saturating_add(ns_add).min(self.ns_per_sec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_time_run_out_and_come_back() {
        let mut b = Budget::new(1000, Duration::from_millis(100));
        assert!(b.allows(1000));
        b.spend(1000, Instant::now());
        assert!(!b.allows(600));
        std::thread::sleep(Duration::from_millis(700));
        assert!(b.allows(600));
        // An overrun of the time budget is owed.
        b.spend(0, Instant::now() - Duration::from_millis(300));
        assert!(!b.allows(0));
    }
}
