//! Pipeline throughput: decode → enrich → detect → JSON, replayed and live.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kestrel_decode::decode;
use kestrel_enrich::Enricher;

use crate::agent::detect::{Detect, DetectSettings, Filter};
use crate::agent::enrich::EnrichSettings;
use crate::agent::output::encode;

use super::workloads::{Env, Kind};
use super::{progress, AgentProc, Plan};

/// Reads a `--record-raw` file: records, each a little-endian u32 length
/// and that many bytes.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        anyhow::ensure!(
            rest.len() >= 4,
            "{}: truncated record length at byte {}",
            path.display(),
            data.len() - rest.len()
        );
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        anyhow::ensure!(
            rest.len() >= 4 + n,
            "{}: record of {n} bytes truncated at byte {}",
            path.display(),
            data.len() - rest.len()
        );
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    Ok(out)
}

fn thread_cpu_ns() -> u64 {
    kestrel_event::host::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u64
}

/// The load that feeds the agent: mostly connects, one exec in 50, as fast
/// as possible or paced at `rate` operations per second, for `dur`.
/// Returns the operations done.
fn mixed_load(env: &Env, rate: Option<f64>, dur: Duration, threads: usize) -> Result<u64> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(move || -> Result<u64> {
                    let mut exec = env.op(Kind::Exec)?;
                    let mut connect = env.connect_op(false);
                    let start = Instant::now();
                    let per_thread = rate.map(|r| r / threads as f64);
                    let mut i = 0u64;
                    while start.elapsed() < dur {
                        if let Some(r) = per_thread {
                            let due = start + Duration::from_secs_f64(i as f64 / r);
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                        if i.is_multiple_of(50) {
                            exec(i)?;
                        } else {
                            connect(i)?;
                        }
                        i += 1;
                    }
                    Ok(i)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().expect("load thread panicked")?;
        }
        Ok(total)
    })
}

/// Records raw events from a short mixed load of every kind the agent
/// reports (exec, connect, DNS, file creation).
fn record(plan: &Plan, env: &Env, file: &Path) -> Result<()> {
    let agent = AgentProc::start(
        &plan.dir,
        "record",
        &["--record-raw".into(), file.display().to_string()],
    )?;
    let ops = plan.size(400, 20);
    for (kind, n) in [
        (Kind::Exec, ops),
        (Kind::Connect, ops * 10),
        (Kind::Dns, ops * 5),
        (Kind::FileCreate, ops * 5),
    ] {
        env.run(kind, n, None)?;
    }
    agent.stop()?;
    Ok(())
}

/// `bench pipeline`.
pub fn run(plan: &Plan, env: &Env, replay: Option<&Path>) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "### 3. Pipeline\n");

    // Replay: the agent's own stages (decode, enrich, detect, encode) with
    // their default settings, fed from memory at full speed, on one
    // thread, without the queues between them.
    let recorded = plan.dir.join("raw.rec");
    let file = match replay {
        Some(f) => f.to_path_buf(),
        None => {
            progress("pipeline: recording raw events from a mixed load");
            record(plan, env, &recorded)?;
            recorded
        }
    };
    let records = read_records(&file)?;
    anyhow::ensure!(!records.is_empty(), "{}: no records", file.display());
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    for r in &records {
        let k = match decode(r) {
            Ok(kestrel_decode::Record::Exec(_)) => "exec",
            Ok(kestrel_decode::Record::Connect(_)) => "connect",
            Ok(kestrel_decode::Record::Dns(_)) => "dns",
            Ok(kestrel_decode::Record::File(_)) => "file",
            Ok(_) => "other",
            Err(_) => "undecodable",
        };
        *kinds.entry(k).or_default() += 1;
    }
    let target = plan.size(300_000, 5_000).max(records.len() as u64);
    progress(format!(
        "pipeline: replaying {} records ({target} events per stage)",
        records.len()
    ));
    let mut enricher = Enricher::new(EnrichSettings::default().resolve(1)?.enrich);
    // The built-in rule set loaded, as the agent runs by default.
    let mut detect = Detect::new(
        &DetectSettings::default().resolve()?,
        Default::default(),
        "bench-1".into(),
    );
    // The server's filter as an agent without --server has it: empty.
    let filter = Filter::default();
    let mut buf = Vec::with_capacity(4096);
    let mut stages = Vec::new();
    const FULL: &str = "decode + enrich + detect + JSON";
    // The first pass meets every process and executable for the first
    // time (cold caches); the later stages run warm, as a busy agent does.
    for stage in [
        "decode + enrich, first pass (cold caches)",
        "decode",
        "decode + enrich",
        FULL,
    ] {
        let target = if stage.contains("cold") {
            records.len() as u64
        } else {
            target
        };
        let (t0, c0) = (Instant::now(), thread_cpu_ns());
        let mut n = 0u64;
        let mut bytes = 0u64;
        'outer: loop {
            for r in &records {
                if n >= target {
                    break 'outer;
                }
                n += 1;
                let Ok(rec) = decode(r) else { continue };
                if stage == "decode" {
                    black_box(&rec);
                    continue;
                }
                let Some(ev) = enricher.enrich(&rec) else {
                    continue;
                };
                if stage != FULL {
                    black_box(&ev);
                    continue;
                }
                detect.handle(ev, &filter, |ev| {
                    encode(&ev, &mut buf);
                    bytes += buf.len() as u64;
                    true
                });
            }
        }
        let (wall, cpu) = (t0.elapsed(), thread_cpu_ns() - c0);
        stages.push((stage, n, wall, cpu, bytes));
    }
    // JSON encoding alone, on events enriched once.
    let events: Vec<kestrel_event::Event> = records
        .iter()
        .filter_map(|r| enricher.enrich(&decode(r).ok()?))
        .collect();
    {
        let (t0, c0) = (Instant::now(), thread_cpu_ns());
        let mut n = 0u64;
        let mut bytes = 0u64;
        'enc: while !events.is_empty() {
            for ev in &events {
                if n >= target {
                    break 'enc;
                }
                n += 1;
                buf.clear();
                ev.write_json_line(&mut buf);
                bytes += buf.len() as u64;
            }
        }
        let (wall, cpu) = (t0.elapsed(), thread_cpu_ns() - c0);
        stages.push(("JSON alone", n.max(1), wall, cpu, bytes));
    }
    let _ = writeln!(
        s,
        "**Replay.** {} raw records recorded by `kestrel agent --record-raw` during a mixed load ({}), \
         replayed in a loop on one thread through the agent's own stages: `decode`, `Enricher::enrich`, \
         detection's policies and the output's encoding (no kernel, no queues, no output I/O). The recorded processes have exited, so \
         enrichment takes its /proc-miss path for them, as it does for short-lived processes.\n",
        records.len(),
        kinds
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "| stage | events | wall s | events/s | CPU ns/event | JSON bytes/event |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    let mut per_event = Vec::new();
    for (stage, n, wall, cpu, bytes) in &stages {
        let ns = *cpu as f64 / *n as f64;
        per_event.push(ns);
        let _ = writeln!(
            s,
            "| {stage} | {n} | {:.3} | {:.0} | {ns:.0} | {} |",
            wall.as_secs_f64(),
            *n as f64 / wall.as_secs_f64(),
            if *bytes > 0 {
                format!("{:.0}", *bytes as f64 / *n as f64)
            } else {
                "-".into()
            }
        );
    }
    let parts = [
        ("decode", per_event[1]),
        ("enrich", (per_event[2] - per_event[1]).max(0.0)),
        (
            "detect and event_id",
            (per_event[3] - per_event[2] - per_event[4]).max(0.0),
        ),
        ("JSON encoding", per_event[4]),
    ];
    let total = per_event[3].max(1.0);
    let worst = parts
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("four parts");
    let _ = writeln!(
        s,
        "\nPer event (decode alone, enrich = decode + enrich minus decode, detect = the whole \
         pipeline minus decode + enrich and JSON alone, JSON alone): {}. The bottleneck of the user-space pipeline is **{}** ({:.0} % of its CPU); \
         the full pipeline sustains {:.0} events/s on one core.\n",
        parts
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} ns"))
            .collect::<Vec<_>>()
            .join(", "),
        worst.0,
        worst.1 / total * 100.0,
        1e9 / total
    );

    // Detection's own cost, and the agent with every rule loaded.
    let sigma = plan.dir.join("sigma");
    super::detect::write_sigma_corpus(&sigma, super::detect::SIGMA_RULES)?;
    s.push_str(&super::detect::replay(plan, &records, &sigma)?);
    s.push_str(&super::detect::live(
        plan,
        env,
        &sigma,
        plan.size(10_000, 1_000) as f64,
        mixed_load,
    )?);

    // Live: the real agent under a real exec/connect load.
    let dur = Duration::from_millis(plan.size(10_000, 1_500));
    let rates: Vec<Option<f64>> = if plan.quick {
        vec![Some(1_000.0), None]
    } else {
        vec![Some(1_000.0), Some(10_000.0), None]
    };
    let _ = writeln!(
        s,
        "**Live.** The agent (default settings, output to /dev/null) under a load of TCP \
         connect+close with one exec of /bin/true in 50 operations, paced at a target rate or \
         unpaced on 2 threads (\"max\"), {:.1} s each. Records/s is what the agent received \
         from the ring buffer over its whole life (start, load, drain; the host's other activity \
         included) divided by the load's duration; CPU is the agent's (all threads, from schedstat); lost is the \
         kernel's count of records the ring buffer could not take.\n",
        dur.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| target ops/s | ops/s done | records/s received | agent CPU % of a core | agent CPU µs/record | RSS MiB | peak RSS MiB | kernel lost | emitted |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rate in rates {
        let label = rate.map_or("max".to_string(), |r| format!("{r:.0}"));
        progress(format!("pipeline: live load at {label} ops/s"));
        let agent = AgentProc::start(&plan.dir, "live", &[])?;
        let c0 = agent.cpu_ns();
        let t0 = Instant::now();
        let ops = mixed_load(env, rate, dur, if rate.is_some() { 1 } else { 2 })?;
        // Let the agent drain what the load produced before reading its CPU.
        std::thread::sleep(Duration::from_millis(300));
        let cpu = agent.cpu_ns() - c0;
        let wall = t0.elapsed().as_secs_f64();
        let (rss, hwm) = agent.rss_kib();
        let c = agent.stop()?;
        let received = c.get("received").copied().unwrap_or(0);
        let secs = dur.as_secs_f64();
        let _ = writeln!(
            s,
            "| {label} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            ops as f64 / secs,
            received as f64 / secs,
            cpu as f64 / wall / 1e7,
            cpu as f64 / received.max(1) as f64 / 1e3,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            c.get("kernel_lost").copied().unwrap_or(0),
            c.get("emitted").copied().unwrap_or(0),
        );
    }
    s.push('\n');
    Ok(s)
}
