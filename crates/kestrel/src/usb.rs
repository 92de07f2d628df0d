//! The agent's USB device monitor (data_type 610): the kernel's uevents
//! through kestrel-usb, sent into the chain like the other user-space
//! sources. On by default; `--no-usb` (`no_usb = true`) turns it off.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use kestrel_event::Host;
use kestrel_usb::{Tracker, UeventSocket, UsbCounters};

use crate::agent::sources::Inject;

/// Socket buffer for a burst of uevents (a hub full of devices, a
/// controller reset): the kernel drops what does not fit, counted in
/// `usb_overruns`.
const RCVBUF: usize = 1 << 20;

/// Opens the socket and starts the monitor's thread. A socket that cannot
/// be opened is logged and leaves the monitor off; the agent goes on.
pub fn start(inject: Inject, counters: Arc<UsbCounters>, stop: Arc<AtomicBool>) -> Result<()> {
    let sock = match UeventSocket::open(RCVBUF) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the kernel's uevent socket: USB device events (610) will be missing");
            return Ok(());
        }
    };
    // After the socket is open, so a device plugged meanwhile is seen by
    // one or the other (or both: a re-add is harmless).
    let mut tracker = Tracker::new("/sys", kestrel_usb::track::DEFAULT_CAPACITY);
    let known = tracker.seed();
    tracing::info!(devices = known, "USB monitor listening to kernel uevents");
    std::thread::Builder::new()
        .name("kestrel-usb".into())
        .spawn(move || {
            let mut host = Host::new();
            let sent = kestrel_usb::run(&sock, &mut tracker, &counters, &stop, |r| {
                host.maybe_refresh();
                inject.send(kestrel_usb::to_event(&r, &host)).is_ok()
            });
            if let Err(e) = sent {
                tracing::error!(error = %e, "reading the kernel's uevents failed: USB device events (610) will be missing");
            }
        })
        .context("starting the USB monitor thread")?;
    Ok(())
}
