//! The heartbeat: the agent's state as the server shows it, made from the
//! chain's counters and the host's facts.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kestrel_control::pb::{Heartbeat, ProbeStatus};

use super::commands::Runtime;
use crate::agent::counters::Counters;
use crate::hostinfo;

/// What heartbeats are made of; facts that do not change are read once.
pub struct Beat {
    pub rt: Arc<Runtime>,
    pub counters: Arc<Counters>,
    pub probes: Vec<ProbeStatus>,
    pub agent_id: String,
    pub hostname: String,
    pub heartbeat_secs: u64,
    pub started: Instant,
    os: String,
    kernel: String,
    /// The previous heartbeat's time, events and CPU ms, for the rates.
    prev: Mutex<(Instant, u64, u64)>,
}

impl Beat {
    pub fn new(
        rt: Arc<Runtime>,
        counters: Arc<Counters>,
        probes: Vec<ProbeStatus>,
        agent_id: String,
        hostname: String,
        heartbeat_secs: u64,
    ) -> Self {
        Beat {
            rt,
            counters,
            probes,
            agent_id,
            hostname,
            heartbeat_secs,
            started: Instant::now(),
            os: hostinfo::os_name(),
            kernel: hostinfo::kernel_release(),
            prev: Mutex::new((Instant::now(), 0, hostinfo::self_usage().0)),
        }
    }

    pub fn heartbeat(&self) -> Heartbeat {
        let s = self.counters.stats();
        let (cpu_ms, rss) = hostinfo::self_usage();
        let now = Instant::now();
        let (eps, cpu_pct) = {
            let mut p = self.prev.lock().unwrap();
            let secs = now.duration_since(p.0).as_secs_f64().max(0.001);
            let r = (
                s.emitted.saturating_sub(p.1) as f64 / secs,
                cpu_ms.saturating_sub(p.2) as f64 / 10.0 / secs,
            );
            *p = (now, s.emitted, cpu_ms);
            r
        };
        Heartbeat {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            ips: hostinfo::local_ips(),
            os: self.os.clone(),
            kernel: self.kernel.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            cpu_percent: cpu_pct,
            cpu_millis: cpu_ms,
            rss_bytes: rss,
            events_per_sec: eps,
            events_total: s.emitted,
            drops: s.kernel_lost + s.write_errors + s.spool_dropped,
            kernel_lost: s.kernel_lost,
            write_errors: s.write_errors,
            filtered: s.filtered,
            spool_bytes: s.spool_bytes,
            spool_dropped: s.spool_dropped,
            probes: self.probes.clone(),
            last_error: self.rt.last_error.lock().unwrap().clone(),
            heartbeat_secs: self.heartbeat_secs,
        }
    }
}
