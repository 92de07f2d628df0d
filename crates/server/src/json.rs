//! Heartbeats to and from JSON (the API and the stored history).

use kestrel_control::pb::{Heartbeat, ProbeStatus};
use serde_json::{json, Value};

/// A heartbeat as JSON.
pub fn heartbeat_json(h: &Heartbeat) -> Value {
    json!({
        "agent_id": h.agent_id,
        "hostname": h.hostname,
        "ips": h.ips,
        "os": h.os,
        "kernel": h.kernel,
        "version": h.version,
        "uptime_secs": h.uptime_secs,
        "cpu_percent": h.cpu_percent,
        "cpu_millis": h.cpu_millis,
        "rss_bytes": h.rss_bytes,
        "events_per_sec": h.events_per_sec,
        "events_total": h.events_total,
        "drops": h.drops,
        "kernel_lost": h.kernel_lost,
        "write_errors": h.write_errors,
        "filtered": h.filtered,
        "spool_bytes": h.spool_bytes,
        "spool_dropped": h.spool_dropped,
        "heartbeat_secs": h.heartbeat_secs,
        "last_error": h.last_error,
        "probes": h.probes.iter().map(|p| json!({
            "program": p.program, "hook": p.hook, "state": p.state, "reason": p.reason,
            "backend": p.backend, "backend_reason": p.backend_reason,
        })).collect::<Vec<_>>(),
    })
}

/// A heartbeat back from JSON; missing fields are zero.
pub fn heartbeat_from_json(v: &Value) -> Heartbeat {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    Heartbeat {
        agent_id: s("agent_id"),
        hostname: s("hostname"),
        ips: v
            .get("ips")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        os: s("os"),
        kernel: s("kernel"),
        version: s("version"),
        uptime_secs: u("uptime_secs"),
        cpu_percent: f("cpu_percent"),
        cpu_millis: u("cpu_millis"),
        rss_bytes: u("rss_bytes"),
        events_per_sec: f("events_per_sec"),
        events_total: u("events_total"),
        drops: u("drops"),
        kernel_lost: u("kernel_lost"),
        write_errors: u("write_errors"),
        filtered: u("filtered"),
        spool_bytes: u("spool_bytes"),
        spool_dropped: u("spool_dropped"),
        heartbeat_secs: u("heartbeat_secs"),
        last_error: s("last_error"),
        probes: v
            .get("probes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| {
                        let s =
                            |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        ProbeStatus {
                            program: s("program"),
                            hook: s("hook"),
                            state: s("state"),
                            reason: s("reason"),
                            backend: s("backend"),
                            backend_reason: s("backend_reason"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = Heartbeat {
            agent_id: "a".into(),
            hostname: "h".into(),
            ips: vec!["10.0.0.1".into()],
            uptime_secs: 5,
            cpu_percent: 1.5,
            probes: vec![ProbeStatus {
                program: "p".into(),
                hook: "t".into(),
                state: "not_applicable".into(),
                reason: "no such tracepoint".into(),
                backend: "none".into(),
                backend_reason: String::new(),
            }],
            ..Default::default()
        };
        assert_eq!(heartbeat_from_json(&heartbeat_json(&h)), h);
    }
}
