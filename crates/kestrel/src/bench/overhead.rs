//! Workload overhead: no agent, Kestrel, Kestrel in lean mode
//! (`--syscall-tracepoints off`) or on each hook backend named, auditd,
//! interleaved.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::audit::Audit;
use super::hooks::BpfStats;
use super::workloads::{Env, Kind};
use super::{median, progress, AgentProc, Plan};

/// Arguments of the hidden `bench worker`: runs the workloads once in a
/// fresh process and prints "INDEX NS_PER_OP" lines.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    tcp: SocketAddr,
    #[arg(long)]
    dns: SocketAddr,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    existing: PathBuf,
    /// Before each workload, wait until this process (the agent, auditd)
    /// is idle.
    #[arg(long)]
    idle_pid: Option<u32>,
    /// Only these workloads, by index in the report order.
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
}

/// Body of `bench worker`.
pub fn worker(a: WorkerArgs) -> Result<()> {
    let env = Env::remote(a.tcp, a.dns, a.dir, a.existing);
    for (i, kind) in Kind::ALL.iter().enumerate() {
        if !a.only.is_empty() && !a.only.contains(&i) {
            continue;
        }
        let n = kind.iterations(a.quick);
        if let Some(pid) = a.idle_pid {
            super::agentproc::wait_idle(pid);
        }
        // Warm-up: page in the code paths, fill the dentry cache.
        env.run(*kind, (n / 50).max(1), None)?;
        let ns = env.measure(*kind, n)?;
        println!("{i} {ns}");
    }
    Ok(())
}

/// Spawns a worker; returns ns/op per workload of `plan`.
fn spawn_worker(env: &Env, plan: &Plan, idle_pid: Option<u32>) -> Result<Vec<(Kind, f64)>> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "worker", "--tcp"])
        .arg(env.tcp.to_string())
        .arg("--dns")
        .arg(env.dns.to_string())
        .arg("--dir")
        .arg(&env.dir)
        .arg("--existing")
        .arg(&env.existing);
    if plan.quick {
        cmd.arg("--quick");
    }
    if let Some(pid) = idle_pid {
        cmd.arg("--idle-pid").arg(pid.to_string());
    }
    if plan.workloads.len() != Kind::ALL.len() {
        let only: Vec<String> = plan
            .workloads
            .iter()
            .map(|k| Kind::ALL.iter().position(|a| a == k).unwrap().to_string())
            .collect();
        cmd.arg("--only").arg(only.join(","));
    }
    let out = cmd.output().context("running the benchmark worker")?;
    if !out.status.success() {
        bail!(
            "benchmark worker failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res = Vec::new();
    for l in text.lines() {
        let (i, ns) = l.split_once(' ').context("bad worker output")?;
        let i: usize = i.parse()?;
        res.push((Kind::ALL[i], ns.parse()?));
    }
    if res.len() != plan.workloads.len() {
        bail!(
            "the worker measured {} workloads, not {}",
            res.len(),
            plan.workloads.len()
        );
    }
    Ok(res)
}

/// One column of the comparison.
struct Config {
    /// Its name in the table.
    label: String,
    what: Under,
}

enum Under {
    Nothing,
    /// Kestrel's agent with these flags.
    Agent(Vec<String>),
    Auditd,
}

/// The configurations `plan` compares: no agent; then Kestrel (default
/// settings) and lean mode, or one agent per `--backends` entry; then
/// auditd when it can be measured.
fn configs(plan: &Plan, audit: bool) -> Vec<Config> {
    let mut c = vec![Config {
        label: "none".into(),
        what: Under::Nothing,
    }];
    if plan.backends.is_empty() {
        c.push(Config {
            label: "Kestrel".into(),
            what: Under::Agent(Vec::new()),
        });
        c.push(Config {
            label: "lean".into(),
            what: Under::Agent(vec!["--syscall-tracepoints".into(), "off".into()]),
        });
    } else {
        for b in &plan.backends {
            c.push(Config {
                label: b.clone(),
                what: Under::Agent(vec!["--hook-backend".into(), b.clone()]),
            });
        }
    }
    if audit {
        c.push(Config {
            label: "auditd".into(),
            what: Under::Auditd,
        });
    }
    c
}

/// The getppid goal of a configuration, in percent over no agent: the
/// default agent's 5 % (it may run on syscall tracepoints), 3 % for those
/// that attach none.
fn getppid_goal(label: &str) -> Option<f64> {
    match label {
        "Kestrel" | "auto" => Some(5.0),
        "lean" | "fentry" | "kprobe" => Some(3.0),
        _ => None,
    }
}

/// `bench overhead`.
pub fn run(plan: &Plan, env: &Env) -> Result<String> {
    // Timing every BPF run would inflate Kestrel's cost: off while timing.
    let _stats = BpfStats::set(false)?;
    let audit_note;
    let mut audit = if plan.audit {
        match Audit::setup() {
            Ok(a) => {
                audit_note = format!("auditd: {}.", a.describe);
                Some(a)
            }
            Err(e) => {
                audit_note = format!(
                    "**auditd could not be measured on this machine**: {e:#}. Only no agent and Kestrel are compared."
                );
                progress(&audit_note);
                None
            }
        }
    } else {
        audit_note = "auditd left out (--no-audit).".into();
        None
    };
    let audit_lost_before = audit.as_ref().map(|_| Audit::lost());
    let configs = configs(plan, audit.is_some());
    let mut results: HashMap<(usize, Kind), Vec<f64>> = HashMap::new();
    let mut kestrel_lost = 0;
    let mut kestrel_events = 0;
    for round in 0..plan.runs {
        for (ci, cfg) in configs.iter().enumerate() {
            progress(format!(
                "overhead: run {}/{}, {}",
                round + 1,
                plan.runs,
                cfg.label
            ));
            let r = match &cfg.what {
                Under::Nothing => spawn_worker(env, plan, None)?,
                Under::Agent(args) => {
                    let tag = format!("overhead-{}", cfg.label.to_lowercase());
                    let agent = AgentProc::start(&plan.dir, &tag, args)?;
                    let r = spawn_worker(env, plan, Some(agent.pid()));
                    let c = agent.stop()?;
                    kestrel_lost += c.get("kernel_lost").copied().unwrap_or(0);
                    kestrel_events += c.get("received").copied().unwrap_or(0);
                    r?
                }
                Under::Auditd => {
                    let a = audit.as_mut().expect("auditd configured");
                    a.on()?;
                    let r = spawn_worker(env, plan, a.pid());
                    a.off()?;
                    r?
                }
            };
            for (k, ns) in r {
                results.entry((ci, k)).or_default().push(ns);
            }
        }
    }
    let audit_lost = audit_lost_before.map(|b| Audit::lost().saturating_sub(b));
    drop(audit);

    let labels: Vec<&str> = configs.iter().map(|c| c.label.as_str()).collect();
    let mut s = String::new();
    let _ = writeln!(s, "### 2. Workload overhead\n");
    let agents = if plan.backends.is_empty() {
        "Kestrel: the real agent, default settings, output to /dev/null, bpf_stats off; lean: \
         the same agent with `--syscall-tracepoints off` (no syscall tracepoint attached, file \
         creations from fanotify)."
            .to_string()
    } else {
        format!(
            "{}: the real agent, output to /dev/null, bpf_stats off, with `--hook-backend` set \
             to that backend for every syscall hook.",
            plan.backends.join(", ")
        )
    };
    let _ = writeln!(
        s,
        "Each workload timed in a fresh process as ns per operation, configurations interleaved \
         ({}), {} run(s) each; medians, and the ratio to no agent. {agents} Before each workload \
         the worker waits until the agent (or auditd) is idle, so one workload's backlog is not \
         billed to the next. {audit_note}\n",
        labels.join(" → "),
        plan.runs
    );
    let mut head = "| workload | ops/run | none ns/op |".to_string();
    let mut rule = "|---|---:|---:|".to_string();
    for l in &labels[1..] {
        let _ = write!(head, " {l} ns/op | {l}/none |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut getppid = vec![0.0; configs.len()];
    for kind in &plan.workloads {
        let mut med = |c: usize| median(results.get_mut(&(c, *kind)).map_or(&mut [][..], |v| v));
        let none = med(0);
        let _ = write!(
            s,
            "| {} | {} | {none:.0} |",
            kind.name(),
            kind.iterations(plan.quick)
        );
        for (ci, g) in getppid.iter_mut().enumerate().skip(1) {
            let v = med(ci);
            let _ = write!(s, " {v:.0} | {:.3} |", v / none);
            if *kind == Kind::Getppid {
                *g = v;
            }
        }
        s.push('\n');
        if *kind == Kind::Getppid {
            getppid[0] = none;
        }
    }
    if getppid[0] > 0.0 {
        let parts: Vec<String> = labels
            .iter()
            .enumerate()
            .skip(1)
            .map(|(ci, l)| {
                let pct = (getppid[ci] / getppid[0] - 1.0) * 100.0;
                let name = if *l == "Kestrel" {
                    "Kestrel's".to_string()
                } else {
                    l.to_string()
                };
                match getppid_goal(l) {
                    Some(goal) => format!(
                        "{name} getppid overhead: {pct:+.1} % (goal: within {goal:.0} %: {})",
                        if pct <= goal { "met" } else { "NOT met" }
                    ),
                    None => format!("{name} getppid overhead: {pct:+.1} %"),
                }
            })
            .collect();
        let _ = write!(s, "\n{}.", parts.join("; "));
    }
    let _ = writeln!(
        s,
        " Kestrel received {kestrel_events} records over its runs, every configuration, and the \
         kernel lost {kestrel_lost}.{}\n",
        match audit_lost {
            Some(l) => format!(" The kernel audit subsystem lost {l} records (`auditctl -s`)."),
            None => String::new(),
        }
    );
    Ok(s)
}
