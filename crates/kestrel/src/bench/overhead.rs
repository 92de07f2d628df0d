//! Workload overhead: no agent, Kestrel, Kestrel in lean mode
//! (`--syscall-tracepoints off`), auditd, interleaved.

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

/// Arguments of the hidden `bench worker`: runs every workload once in a
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
}

/// Body of `bench worker`.
pub fn worker(a: WorkerArgs) -> Result<()> {
    let env = Env::remote(a.tcp, a.dns, a.dir, a.existing);
    for (i, kind) in Kind::ALL.iter().enumerate() {
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

/// Spawns a worker; returns ns/op per workload.
fn spawn_worker(env: &Env, quick: bool, idle_pid: Option<u32>) -> Result<Vec<(Kind, f64)>> {
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
    if quick {
        cmd.arg("--quick");
    }
    if let Some(pid) = idle_pid {
        cmd.arg("--idle-pid").arg(pid.to_string());
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
    if res.len() != Kind::ALL.len() {
        bail!(
            "the worker measured {} workloads, not {}",
            res.len(),
            Kind::ALL.len()
        );
    }
    Ok(res)
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
    let mut configs: Vec<&'static str> = vec!["none", "kestrel", "lean"];
    if audit.is_some() {
        configs.push("auditd");
    }
    let mut results: HashMap<(&'static str, Kind), Vec<f64>> = HashMap::new();
    let mut kestrel_lost = 0;
    let mut kestrel_events = 0;
    for round in 0..plan.runs {
        for cfg in &configs {
            progress(format!("overhead: run {}/{}, {cfg}", round + 1, plan.runs));
            let r = match *cfg {
                "none" => spawn_worker(env, plan.quick, None)?,
                "kestrel" | "lean" => {
                    let lean = ["--syscall-tracepoints".to_string(), "off".to_string()];
                    let agent = if *cfg == "lean" {
                        AgentProc::start(&plan.dir, "overhead-lean", &lean)?
                    } else {
                        AgentProc::start(&plan.dir, "overhead", &[])?
                    };
                    let r = spawn_worker(env, plan.quick, Some(agent.pid()));
                    let c = agent.stop()?;
                    kestrel_lost += c.get("kernel_lost").copied().unwrap_or(0);
                    kestrel_events += c.get("received").copied().unwrap_or(0);
                    r?
                }
                _ => {
                    let a = audit.as_mut().expect("auditd configured");
                    a.on()?;
                    let r = spawn_worker(env, plan.quick, a.pid());
                    a.off()?;
                    r?
                }
            };
            for (k, ns) in r {
                results.entry((*cfg, k)).or_default().push(ns);
            }
        }
    }
    let audit_lost = audit_lost_before.map(|b| Audit::lost().saturating_sub(b));
    drop(audit);

    let mut s = String::new();
    let _ = writeln!(s, "### 2. Workload overhead\n");
    let _ = writeln!(
        s,
        "Each workload timed in a fresh process as ns per operation, configurations interleaved \
         ({}), {} run(s) each; medians, and the ratio to no agent. Kestrel: the real agent, \
         default settings, output to /dev/null, bpf_stats off; lean: the same agent with \
         `--syscall-tracepoints off` (no syscall tracepoint attached, file creations from \
         fanotify). Before each workload the worker \
         waits until the agent (or auditd) is idle, so one workload's backlog is not billed to the \
         next. {audit_note}\n",
        configs.join(" → "),
        plan.runs
    );
    let mut head = "| workload | ops/run | none ns/op | Kestrel ns/op | Kestrel/none | lean ns/op \
                    | lean/none |"
        .to_string();
    let mut rule = "|---|---:|---:|---:|---:|---:|---:|".to_string();
    let with_audit = configs.contains(&"auditd");
    if with_audit {
        head.push_str(" auditd ns/op | auditd/none |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut getppid = (0.0, 0.0, 0.0);
    for kind in Kind::ALL {
        let mut med =
            |c: &'static str| median(results.get_mut(&(c, kind)).map_or(&mut [][..], |v| v));
        let none = med("none");
        let k = med("kestrel");
        let l = med("lean");
        let _ = write!(
            s,
            "| {} | {} | {none:.0} | {k:.0} | {:.3} | {l:.0} | {:.3} |",
            kind.name(),
            kind.iterations(plan.quick),
            k / none,
            l / none
        );
        if with_audit {
            let a = med("auditd");
            let _ = write!(s, " {a:.0} | {:.3} |", a / none);
        }
        s.push('\n');
        if kind == Kind::Getppid {
            getppid = (none, k, l);
        }
    }
    let pct = (getppid.1 / getppid.0 - 1.0) * 100.0;
    let lean_pct = (getppid.2 / getppid.0 - 1.0) * 100.0;
    let _ = writeln!(
        s,
        "\nKestrel's getppid overhead: {pct:+.1} % (goal: within 5 %: {}); in lean mode \
         {lean_pct:+.1} % (goal: within 3 %: {}). Kestrel received {kestrel_events} records over \
         its runs, both modes, and the kernel lost {kestrel_lost}.{}\n",
        if pct <= 5.0 { "met" } else { "NOT met" },
        if lean_pct <= 3.0 { "met" } else { "NOT met" },
        match audit_lost {
            Some(l) => format!(" The kernel audit subsystem lost {l} records (`auditctl -s`)."),
            None => String::new(),
        }
    );
    Ok(s)
}
