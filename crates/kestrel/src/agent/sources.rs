//! User-space sources: events the agent makes itself rather than reads
//! from the kernel — logins (logins.rs), the host inventory, anti-rootkit
//! scans, and both of the latter on the control server's command.
//!
//! Their events are finished when made (host facts included), so they
//! join the chain where enrichment hands over: every source sends through
//! one [`Inject`], which counts them (`userspace_events`), and from there
//! they meet detection's policies and the output like every other event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use kestrel_event::Event;
use serde::Deserialize;

use super::{Closed, Link};
use crate::config::range;

/// Settings of the periodic sources.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct SourceSettings {
    /// Hours between two inventories (users, ports, packages, cron) sent
    /// with the events; the first is taken at start. 0 turns it off.
    /// [default: 24]
    #[arg(long, value_name = "HOURS")]
    pub inventory_interval_hours: Option<u64>,

    /// Hours between two anti-rootkit scans (data_type 700-704, as
    /// `kestrel scan rootkit`) sent with the events; the first runs at
    /// start. 0 turns it off. [default: 24]
    #[arg(long, value_name = "HOURS")]
    pub rootkit_scan_interval_hours: Option<u64>,

    /// Turn off the USB device events (data_type 610, from the kernel's
    /// uevents), which are on by default.
    // No value on the command line, as --no-logins.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_usb: Option<bool>,
}

/// The periodic sources, resolved: None is off.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub inventory_interval: Option<Duration>,
    pub rootkit_scan_interval: Option<Duration>,
    /// Whether the USB device monitor runs.
    pub usb: bool,
}

impl SourceSettings {
    pub fn resolve(self) -> Result<SourceConfig> {
        let every = |key: &str, v: Option<u64>| -> Result<Option<Duration>> {
            Ok(match range(key, v.unwrap_or(24), 0, 24 * 365)? {
                0 => None,
                h => Some(Duration::from_secs(h * 3600)),
            })
        };
        Ok(SourceConfig {
            inventory_interval: every("inventory_interval_hours", self.inventory_interval_hours)?,
            rootkit_scan_interval: every(
                "rootkit_scan_interval_hours",
                self.rootkit_scan_interval_hours,
            )?,
            usb: self.no_usb != Some(true),
        })
    }
}

/// What the sources count.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Events made in user space.
    pub userspace: AtomicU64,
    /// Anti-rootkit scans that could not run (the reason is logged).
    pub rootkit_scan_failures: AtomicU64,
}

/// The way into the chain for user-space sources.
#[derive(Clone)]
pub struct Inject {
    link: Link,
    counters: Arc<SourceCounters>,
}

impl Inject {
    pub fn new(link: Link, counters: Arc<SourceCounters>) -> Self {
        Inject { link, counters }
    }

    /// Sends one event, waiting while the chain is behind. Err: the agent
    /// is stopping and takes no more.
    pub fn send(&self, ev: Event) -> Result<(), Closed> {
        self.link.send(ev)?;
        self.counters.userspace.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the agent is stopping.
    pub fn stopping(&self) -> bool {
        self.link.stop.load(Ordering::Relaxed)
    }
}

/// What one inventory sent.
pub struct InventorySent {
    pub items: usize,
    /// Items per data_type.
    pub by_type: BTreeMap<String, u64>,
    pub warnings: usize,
    pub took: Duration,
}

/// Takes the host inventory and sends it; warnings go to the log.
pub fn inventory(inject: &Inject) -> Result<InventorySent> {
    let host = kestrel_event::Host::new();
    let started = Instant::now();
    let (events, warnings) = crate::inventory::collect(crate::inventory::What::All, &host);
    for w in &warnings {
        tracing::warn!("inventory: {w}");
    }
    let mut by_type = BTreeMap::<String, u64>::new();
    let items = events.len();
    for ev in events {
        *by_type
            .entry(ev.get("data_type").unwrap_or("?").to_string())
            .or_default() += 1;
        inject
            .send(ev)
            .map_err(|_| anyhow!("the agent is stopping: inventory not sent"))?;
    }
    Ok(InventorySent {
        items,
        by_type,
        warnings: warnings.len(),
        took: started.elapsed(),
    })
}

/// Scans for rootkits and sends the findings; returns the summary. A scan
/// that cannot run is counted.
pub fn rootkit_scan(inject: &Inject) -> Result<String> {
    let report = match kestrel_scan::rootkit::scan(&kestrel_scan::rootkit::Options::default()) {
        Ok(r) => r,
        Err(e) => {
            inject
                .counters
                .rootkit_scan_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(anyhow!("the rootkit scan could not run: {e}"));
        }
    };
    for w in &report.warnings {
        tracing::warn!("rootkit scan: {w}");
    }
    let findings = report.events.len();
    for ev in report.events {
        inject
            .send(ev)
            .map_err(|_| anyhow!("the agent is stopping: findings not sent"))?;
    }
    tracing::info!(findings, "{}", report.summary);
    Ok(report.summary)
}

/// Starts the periodic sources that `cfg` turns on.
pub fn start(cfg: &SourceConfig, inject: &Inject, stop: &Arc<AtomicBool>) -> Result<()> {
    if let Some(every) = cfg.inventory_interval {
        let (inject, stop) = (inject.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kestrel-inventory".into())
            .spawn(move || {
                periodically(every, &stop, || match inventory(&inject) {
                    Ok(sent) => {
                        tracing::info!(
                            items = sent.items,
                            warnings = sent.warnings,
                            secs = sent.took.as_secs_f64(),
                            "inventory sent"
                        );
                        true
                    }
                    Err(_) => false,
                })
            })
            .context("starting the inventory thread")?;
    }
    if let Some(every) = cfg.rootkit_scan_interval {
        let (inject, stop) = (inject.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kestrel-rootkit".into())
            .spawn(move || {
                periodically(every, &stop, || match rootkit_scan(&inject) {
                    Ok(_) => true,
                    Err(_) if inject.stopping() => false,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        true
                    }
                })
            })
            .context("starting the rootkit scan thread")?;
    }
    Ok(())
}

/// Runs `once` at start and every `every` until `stop`, or until `once`
/// returns false (the chain is gone).
fn periodically(every: Duration, stop: &AtomicBool, mut once: impl FnMut() -> bool) {
    loop {
        if !once() {
            return;
        }
        let next = Instant::now() + every;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
