//! What detection costs: the replay pipeline with no rules, the built-in
//! set, and the built-in set with 150 Sigma rules, interleaved; and the
//! live agent with every rule loaded at 10,000 events/s: alert latency
//! (trigger event to the alert line leaving the agent) and memory.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use kestrel_decode::decode;
use kestrel_enrich::Enricher;

use crate::agent::detect::{Detect, DetectCounters, DetectSettings, Filter};
use crate::agent::enrich::EnrichSettings;
use crate::agent::output::encode;

use super::workloads::Env;
use super::{median, progress, AgentProc, Plan};

/// Sigma rules the benchmark writes: as many as the figure asks.
pub const SIGMA_RULES: usize = 150;

/// The rule the live load trips on purpose (every exec of /bin/true), so
/// that alerts flow at a known rate while the latency is measured.
const MARKER: &str = "6b657374-7265-6c00-0000-62656e63686d";

/// Writes `n` Sigma rules of the shapes real rule sets have (a tool's
/// image, command-line fragments, parent-child pairs, regexes, file
/// paths, ports, networks, host names, correlations) over every mapped
/// category, with values the benchmark's load never has, plus the marker
/// rule. Generated, so that the figures do not depend on a rule set this
/// repository does not ship.
pub fn write_sigma_corpus(dir: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::new();
    for i in 0..n {
        let id = format!("6b657374-7265-6c00-{:04x}-{:012x}", i % 10, i);
        let (category, detection) = match i % 10 {
            0 => (
                "process_creation",
                format!(
                    "  sel:\n    Image|endswith:\n      - /tool{i}\n      - /tool{i}-static\n      - /.x{i}\n  condition: sel\n"
                ),
            ),
            1 => (
                "process_creation",
                format!("  sel:\n    CommandLine|contains|all:\n      - ' --opt{i} '\n      - payload{i}\n  condition: sel\n"),
            ),
            2 => (
                "process_creation",
                format!(
                    "  sel:\n    ParentImage|endswith: /svc{i}\n    Image|endswith:\n      - /sh\n      - /bash\n      - /dash\n  filter:\n    User: nobody{i}\n  condition: sel and not filter\n"
                ),
            ),
            3 => (
                "process_creation",
                format!("  sel:\n    CommandLine|re: 'x{i}[0-9]+\\.(sh|py|pl)'\n  condition: sel\n"),
            ),
            4 => (
                "file_event",
                format!("  sel:\n    TargetFilename|startswith: /opt/app{i}/\n    TargetFilename|endswith: .so\n  condition: sel\n"),
            ),
            5 => (
                "file_event",
                format!("  sel:\n    TargetFilename|contains:\n      - /.cache{i}/\n      - /.local/share/k{i}/\n  condition: sel\n"),
            ),
            6 => (
                "network_connection",
                format!(
                    "  sel:\n    Initiated: 'true'\n    DestinationPort:\n      - {}\n      - {}\n  condition: sel\n",
                    40_000 + i,
                    45_000 + i
                ),
            ),
            7 => (
                "network_connection",
                format!("  sel:\n    DestinationIp|cidr: 203.0.{}.0/24\n  condition: sel\n", i % 256),
            ),
            8 => (
                "network_connection",
                format!("  sel:\n    DestinationHostname|endswith: .pool{i}.example\n  condition: sel\n"),
            ),
            _ => (
                "process_creation",
                format!(
                    "  sel1:\n    Image|startswith: /tmp/\n  sel2:\n    CommandLine|contains: tool{i}\n  condition: 1 of sel*\n"
                ),
            ),
        };
        let _ = write!(
            text,
            "title: Bench rule {i}\nid: {id}\nname: bench_{i}\nstatus: experimental\n\
             description: A rule of the benchmark's generated set.\n\
             logsource:\n  product: linux\n  category: {category}\n\
             detection:\n{detection}level: medium\ntags:\n  - attack.t1059.004\n---\n"
        );
        // A correlation on every 30th: counts of its base rule by user.
        if i % 30 == 29 {
            let _ = write!(
                text,
                "title: Bench correlation {i}\nid: 6b657374-7265-6c01-0000-{i:012x}\n\
                 correlation:\n  type: event_count\n  rules: [bench_{i}]\n  group-by: [User]\n\
                 \x20 timespan: 1m\n  condition: {{gte: 5}}\nlevel: high\n---\n"
            );
        }
    }
    let _ = write!(
        text,
        "title: Bench marker\nid: {MARKER}\nstatus: experimental\n\
         description: Every exec of /bin/true (the benchmark's own load).\n\
         logsource:\n  product: linux\n  category: process_creation\n\
         detection:\n  sel:\n    Image|endswith: /true\n  condition: sel\nlevel: low\n"
    );
    let path = dir.join("bench.yml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

struct Config {
    name: &'static str,
    detect: Detect,
    counters: Arc<DetectCounters>,
    ns: Vec<f64>,
    rules: u64,
    evals: u64,
    events: u64,
}

impl Config {
    fn new(name: &'static str, (detect, counters): (Detect, Arc<DetectCounters>)) -> Config {
        Config {
            name,
            detect,
            counters,
            ns: vec![],
            rules: 0,
            evals: 0,
            events: 0,
        }
    }
}

fn thread_cpu_ns() -> u64 {
    kestrel_event::host::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u64
}

/// The replay part: `records` through decode, enrich, detect and JSON, once
/// per rule configuration per round, the configurations interleaved.
pub fn replay(plan: &Plan, records: &[Vec<u8>], sigma: &Path) -> Result<String> {
    let settings =
        |builtin: bool, sigma: Option<PathBuf>| -> Result<(Detect, Arc<DetectCounters>)> {
            let cfg = DetectSettings {
                no_builtin_rules: Some(!builtin),
                sigma: sigma.map(|d| vec![d]),
                // As the agent runs by default: suppression on.
                ..Default::default()
            }
            .resolve()?;
            let counters = Arc::<DetectCounters>::default();
            Ok((
                Detect::new(&cfg, counters.clone(), "bench-1".into()),
                counters,
            ))
        };
    let mut configs = vec![
        Config::new("no rules", settings(false, None)?),
        Config::new("built-in set", settings(true, None)?),
        Config::new(
            "built-in set + Sigma",
            settings(true, Some(sigma.to_path_buf()))?,
        ),
    ];
    let mut enricher = Enricher::new(EnrichSettings::default().resolve(1)?.enrich);
    // Warm the enrichment caches, so that every configuration meets them
    // as a busy agent does.
    for r in records {
        if let Ok(rec) = decode(r) {
            let _ = enricher.enrich(&rec);
        }
    }
    let per_round = plan.size(200_000, 3_000).max(records.len() as u64);
    let rounds = plan.runs.max(3);
    progress(format!(
        "pipeline: detection, {rounds} rounds of {per_round} events per rule configuration"
    ));
    let filter = Filter::default();
    let mut buf = Vec::with_capacity(4096);
    for round in 0..rounds {
        // Rotate which goes first, so no configuration always follows
        // another's cache footprint.
        let order: Vec<usize> = (0..configs.len())
            .map(|k| (k + round) % configs.len())
            .collect();
        for k in order {
            let c = &mut configs[k];
            let counters = c.counters.engine.clone();
            let (e0, v0) = (
                counters.events.load(Relaxed),
                counters.rule_evaluations.load(Relaxed),
            );
            let c0 = thread_cpu_ns();
            let mut n = 0u64;
            'outer: loop {
                for r in records {
                    if n >= per_round {
                        break 'outer;
                    }
                    n += 1;
                    let Ok(rec) = decode(r) else { continue };
                    let Some(ev) = enricher.enrich(&rec) else {
                        continue;
                    };
                    c.detect.handle(ev, &filter, |ev| {
                        encode(&ev, &mut buf);
                        std::hint::black_box(&buf);
                        true
                    });
                }
            }
            c.ns.push((thread_cpu_ns() - c0) as f64 / n as f64);
            c.rules = counters.rules.load(Relaxed);
            c.events += counters.events.load(Relaxed) - e0;
            c.evals += counters.rule_evaluations.load(Relaxed) - v0;
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**Detection in the replay.** The same records through decode + enrich + detect + JSON \
         with three rule configurations, {rounds} rounds of {per_round} events each, interleaved \
         (the order rotating each round); CPU of the replaying thread, median of the rounds. \
         The Sigma set is {SIGMA_RULES} generated rules (`kestrel bench` writes them: images, \
         command-line fragments and regexes, parent-child pairs, file paths, ports, networks, \
         host names, {} event_count correlations) and one that fires on every exec of /bin/true. \
         Rule runs per event is what the data_type and field indexes leave of rules × events (docs/detections.md, Matching cost).\n",
        SIGMA_RULES / 30
    );
    let _ = writeln!(
        s,
        "| rules | rules in force | CPU ns/event (rounds) | median | events/s on one core | detect ns/event over \"no rules\" | rule runs per event |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|");
    let base = median(&mut configs[0].ns.clone());
    for c in &configs {
        let m = median(&mut c.ns.clone());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {m:.0} | {:.0} | {:.0} | {:.1} |",
            c.name,
            c.rules,
            c.ns.iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            1e9 / m.max(1.0),
            (m - base).max(0.0),
            c.evals as f64 / c.events.max(1) as f64
        );
    }
    s.push('\n');
    Ok(s)
}

/// What the live run saw of the agent's output.
#[derive(Default)]
struct Seen {
    lines: u64,
    latencies_ms: Vec<f64>,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The live part: the agent with every rule, events to a pipe this
/// process reads, under the mixed load at `rate` ops/s.
pub fn live(
    plan: &Plan,
    env: &Env,
    sigma: &Path,
    rate: f64,
    load: impl Fn(&Env, Option<f64>, Duration, usize) -> Result<u64>,
) -> Result<String> {
    let dur = Duration::from_millis(plan.size(15_000, 1_500));
    progress(format!(
        "pipeline: live load at {rate:.0} ops/s with every rule loaded"
    ));
    let (agent, out) = AgentProc::start_piped(
        &plan.dir,
        "detect",
        &["--sigma".into(), sigma.display().to_string()],
    )?;
    let reader = std::thread::spawn(move || -> Seen {
        let mut seen = Seen::default();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            seen.lines += 1;
            if !line.contains(MARKER) || !line.contains("\"9000\"") {
                continue;
            }
            let arrived = now_ms();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["data_type"] != "9000" || v["rule_id"] != MARKER {
                continue;
            }
            if let Some(t) = v["time"].as_str().and_then(|t| t.parse::<f64>().ok()) {
                seen.latencies_ms.push(arrived - t);
            }
        }
        seen
    });
    let c0 = agent.cpu_ns();
    let t0 = Instant::now();
    // Two threads: one alone does not reach 10,000 ops/s beside the
    // agent and this process's reader.
    let ops = load(env, Some(rate), dur, 2)?;
    std::thread::sleep(Duration::from_millis(500));
    let cpu = agent.cpu_ns() - c0;
    let wall = t0.elapsed().as_secs_f64();
    let (rss, hwm) = agent.rss_kib();
    let c = agent.stop()?;
    let mut seen = reader.join().expect("output reader panicked");
    let received = c.get("received").copied().unwrap_or(0);
    let secs = dur.as_secs_f64();
    let lat = &mut seen.latencies_ms;
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**Detection live.** The agent with the built-in set and the {SIGMA_RULES} Sigma rules \
         (plus the marker), events and alerts as JSON lines on a pipe this benchmark reads, under \
         the mixed load paced at {rate:.0} ops/s (two threads) for {secs:.1} s. Latency: from the trigger \
         event's `time` (the kernel's capture clock, in epoch ms) to the moment the alert line \
         is read from the agent's stdout, for every alert of the marker rule.\n"
    );
    let _ = writeln!(
        s,
        "| ops/s done | records/s received | lines out | marker alerts | latency p50 ms | p99 ms | max ms | agent CPU % of a core | RSS MiB | peak RSS MiB | kernel lost | rules in force | rules unsupported |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} |\n",
        ops as f64 / secs,
        received as f64 / secs,
        seen.lines,
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        cpu as f64 / wall / 1e7,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        c.get("kernel_lost").copied().unwrap_or(0),
        c.get("rules_loaded").copied().unwrap_or(0),
        c.get("rules_unsupported").copied().unwrap_or(0),
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::agent::detect::RulesConfig;

    /// Every generated rule must load: a rule the mapping skipped would
    /// make the figures those of a smaller set.
    #[test]
    fn the_generated_sigma_set_loads_whole() {
        let dir = std::env::temp_dir().join(format!("kbench-sigma-{}", std::process::id()));
        super::write_sigma_corpus(&dir, super::SIGMA_RULES).unwrap();
        let set = RulesConfig {
            builtin: false,
            dirs: vec![],
            sigma: vec![dir.clone()],
        }
        .load()
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let bad: Vec<_> = set.report.iter().filter(|r| r.status != "loaded").collect();
        assert!(bad.is_empty(), "{bad:?}");
        // Base rules, the correlations and the marker.
        let corr = super::SIGMA_RULES / 30;
        assert_eq!(set.report.len(), super::SIGMA_RULES + corr + 1);
        // In force: the single-event rules, the correlations (their base
        // rules folded into them, raising no alert of their own), the marker.
        assert_eq!(set.rules.len(), super::SIGMA_RULES + 1);
    }
}
