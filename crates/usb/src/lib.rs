//! USB devices plugged in and pulled out (data_type 610), from the kernel's
//! uevents: no BPF, no udev. The kernel announces every device it adds or
//! removes on a netlink multicast group; this crate listens there
//! ([`socket`]), refuses what the kernel did not send, parses the message
//! with bounds ([`uevent`]), and keeps a bounded table of devices so that a
//! removal names what was removed ([`track`]).

pub mod socket;
pub mod track;
pub mod uevent;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use socket::{Received, UeventSocket};
pub use track::{to_event, Report, Tracker, DATA_TYPE_USB};

/// What the listener counts (the `usb_*` counters).
#[derive(Debug, Default)]
pub struct UsbCounters {
    /// Kernel uevents read, of every subsystem.
    pub uevents: AtomicU64,
    /// Messages on the group that the kernel did not send (a local process
    /// with CAP_NET_ADMIN, or a unicast to our port): ignored.
    pub rejected: AtomicU64,
    /// Kernel messages that did not parse or were cut: ignored.
    pub malformed: AtomicU64,
    /// Times the socket's buffer overflowed: the kernel dropped uevents.
    pub overruns: AtomicU64,
    /// Devices forgotten because the table was full (their removal will
    /// carry only what its own uevent says).
    pub evicted: AtomicU64,
}

/// Longest wait for a message: how soon a stop request is seen.
const POLL: Duration = Duration::from_millis(200);
/// At most one warning per this period for each kind of refused message;
/// the counters have the totals.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Logs at most once per [`WARN_EVERY`], with how many were left unsaid.
struct RateLimit {
    last: Option<Instant>,
    quiet: u64,
}

impl RateLimit {
    fn new() -> Self {
        RateLimit {
            last: None,
            quiet: 0,
        }
    }

    /// Some(number suppressed since the last log) when it may log now.
    fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.quiet += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.quiet))
    }
}

/// Reads uevents until `stop`, handing each report to `send`; returns
/// when `send` says false (the chain is gone) or the socket fails.
pub fn run(
    sock: &UeventSocket,
    tracker: &mut Tracker,
    counters: &UsbCounters,
    stop: &AtomicBool,
    mut send: impl FnMut(Report) -> bool,
) -> Result<(), nix::errno::Errno> {
    let mut buf = vec![0u8; uevent::MAX_MESSAGE];
    let (mut warn_forged, mut warn_bad, mut warn_overrun) =
        (RateLimit::new(), RateLimit::new(), RateLimit::new());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = tracker
            .next_due()
            .map_or(POLL, |d| d.saturating_duration_since(now).min(POLL));
        sock.set_timeout(wait)?;
        let mut reports = Vec::new();
        match sock.recv(&mut buf)? {
            Received::Kernel(n) => {
                counters.uevents.fetch_add(1, Ordering::Relaxed);
                match uevent::parse(&buf[..n]) {
                    Ok(ev) => {
                        reports = tracker.on_uevent(&ev, Instant::now(), SystemTime::now());
                    }
                    Err(e) => {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                        if let Some(quiet) = warn_bad.allow() {
                            tracing::warn!(error = %e, bytes = n, not_logged = quiet, "usb: kernel uevent ignored");
                        }
                    }
                }
            }
            Received::Truncated => {
                counters.uevents.fetch_add(1, Ordering::Relaxed);
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                if let Some(quiet) = warn_bad.allow() {
                    tracing::warn!(
                        not_logged = quiet,
                        "usb: kernel uevent over {} bytes ignored",
                        uevent::MAX_MESSAGE
                    );
                }
            }
            Received::Forged { port, pid, uid } => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(quiet) = warn_forged.allow() {
                    tracing::warn!(
                        sender_port = port,
                        sender_pid = ?pid,
                        sender_uid = ?uid,
                        not_logged = quiet,
                        "usb: uevent not sent by the kernel rejected"
                    );
                }
            }
            Received::Overrun => {
                counters.overruns.fetch_add(1, Ordering::Relaxed);
                if let Some(quiet) = warn_overrun.allow() {
                    tracing::warn!(
                        not_logged = quiet,
                        "usb: uevent socket overrun: the kernel dropped uevents, devices may be missing"
                    );
                }
            }
            Received::Idle => {}
        }
        reports.extend(tracker.due(Instant::now()));
        counters.evicted.store(tracker.evicted(), Ordering::Relaxed);
        for r in reports {
            if !send(r) {
                return Ok(());
            }
        }
    }
    Ok(())
}
