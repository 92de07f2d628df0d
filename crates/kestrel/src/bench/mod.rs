//! `kestrel bench`: what Kestrel costs the host it protects.
//!
//! Every measurement runs real workloads (written here in Rust, timed
//! in-process as nanoseconds per operation) against the real `kestrel
//! agent` binary, and prints Markdown tables ready for
//! docs/performance.md. `bench all` runs everything in one go; `--quick`
//! shrinks every size so the test suite can prove the suite works in
//! well under a minute (its figures mean nothing).

mod agentproc;
mod audit;
mod detect;
mod hooks;
mod overhead;
mod pipeline;
mod scaling;
mod workloads;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

pub use agentproc::AgentProc;

/// The benchmarks. Each prints a Markdown section on stdout (and to
/// --out); progress goes to stderr.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Everything below, in one run: one Markdown section with the machine,
    /// kernel, date, command and every table.
    All(Opts),
    /// Cost of every Kestrel BPF program per run (kernel.bpf_stats_enabled),
    /// per workload, beside the reference's handler latencies.
    Hooks(Opts),
    /// Workloads timed without any agent, with Kestrel and with auditd,
    /// interleaved, medians and ratios.
    Overhead(Opts),
    /// Events per second through decode, enrich and JSON encoding (replay
    /// of recorded raw events), and the agent under a real load.
    Pipeline(PipelineOpts),
    /// Agent CPU and memory against the number of live processes.
    Scaling(Opts),
    /// Simulate N agents, each over its own TLS connection, against a
    /// control server; check all are online and a command reaches all.
    Server(kestrel_server::bench::BenchArgs),
    /// Internal: times every workload in a fresh process for `overhead`.
    #[command(hide = true)]
    Worker(overhead::WorkerArgs),
}

/// Options every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Small sizes and few runs: proves the suite works (used by the test
    /// suite); the figures are not meaningful.
    #[arg(long)]
    pub quick: bool,
    /// Also write the Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Runs per configuration in the overhead benchmark, and rounds of
    /// every workload in the per-hook benchmark (at least 5 for published
    /// figures). [default: 5, or 2 with --quick]
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Leave auditd out of the overhead comparison.
    #[arg(long)]
    pub no_audit: bool,
    /// Scratch directory (created, and removed at the end).
    #[arg(long, value_name = "DIR", default_value = "/tmp/kbench-run")]
    pub work_dir: PathBuf,
    /// Only these workloads, by id (exec, connect, dns, file-create,
    /// open-existing, getppid, ...; `kestrel bench` lists them on a bad
    /// one). Every workload by default.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// The overhead benchmark's Kestrel configurations: one agent per
    /// hook backend named (auto, fentry, kprobe, tracepoint), each with
    /// `--hook-backend` set so, instead of the default and lean modes.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub backends: Vec<String>,
}

/// Options of `bench pipeline`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineOpts {
    #[command(flatten)]
    pub opts: Opts,
    /// Replay this file of raw records (written by `kestrel agent
    /// --record-raw FILE`) instead of recording a fresh one.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

/// Sizes of one benchmark run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub runs: usize,
    pub audit: bool,
    pub dir: PathBuf,
    /// The workloads to run, in report order.
    pub workloads: Vec<workloads::Kind>,
    /// `--backends`: hook backends to compare in `overhead`.
    pub backends: Vec<String>,
}

impl Plan {
    fn from(o: &Opts) -> Result<Plan> {
        let runs = o.runs.unwrap_or(if o.quick { 2 } else { 5 });
        anyhow::ensure!(runs >= 1, "--runs must be at least 1");
        let ids = || {
            workloads::Kind::ALL
                .iter()
                .map(|k| k.id())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for w in &o.workloads {
            anyhow::ensure!(
                workloads::Kind::ALL.iter().any(|k| k.id() == w),
                "--workloads: no workload {w:?}; the workloads are {}",
                ids()
            );
        }
        let workloads = workloads::Kind::ALL
            .into_iter()
            .filter(|k| o.workloads.is_empty() || o.workloads.iter().any(|w| w == k.id()))
            .collect();
        for b in &o.backends {
            anyhow::ensure!(
                kestrel_probes::HookBackend::parse(b).is_some(),
                "--backends: {b:?} is none of auto, fentry, kprobe, tracepoint"
            );
        }
        Ok(Plan {
            quick: o.quick,
            runs,
            audit: !o.no_audit,
            dir: o.work_dir.clone(),
            workloads,
            backends: o.backends.clone(),
        })
    }

    /// `full` normally, `quick` with --quick.
    pub fn size(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Runs one `kestrel bench` command.
pub fn run(cmd: BenchCmd) -> Result<()> {
    let cmd = match cmd {
        BenchCmd::Worker(w) => return overhead::worker(w),
        BenchCmd::Server(args) => return kestrel_server::bench::run(args),
        other => other,
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("kestrel bench needs root: it loads the BPF probes and changes audit rules");
    }

    let (opts, what) = match &cmd {
        BenchCmd::All(o) => (o.clone(), "all"),
        BenchCmd::Hooks(o) => (o.clone(), "hooks"),
        BenchCmd::Overhead(o) => (o.clone(), "overhead"),
        BenchCmd::Pipeline(p) => (p.opts.clone(), "pipeline"),
        BenchCmd::Scaling(o) => (o.clone(), "scaling"),
        BenchCmd::Worker(_) | BenchCmd::Server(_) => unreachable!("handled above"),
    };
    let plan = Plan::from(&opts)?;
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("creating {}", plan.dir.display()))?;
    let mut md = header(&plan, what);
    let replay = match &cmd {
        BenchCmd::Pipeline(p) => p.replay.clone(),
        _ => None,
    };
    let all = what == "all";
    let env = workloads::Env::start(&plan.dir)?;
    if all || what == "hooks" {
        md.push_str(&hooks::run(&plan, &env)?);
    }
    if all || what == "overhead" {
        md.push_str(&overhead::run(&plan, &env)?);
    }
    if all || what == "pipeline" {
        md.push_str(&pipeline::run(&plan, &env, replay.as_deref())?);
    }
    if all || what == "scaling" {
        md.push_str(&scaling::run(&plan, &env)?);
    }
    drop(env);
    print!("{md}");
    if let Some(out) = &opts.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    let _ = std::fs::remove_dir_all(&plan.dir);
    Ok(())
}

/// Machine, kernel, date and the command that reproduces the figures.
fn header(plan: &Plan, what: &str) -> String {
    let mut s = String::new();
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or(0.0, |kb| kb as f64 / (1 << 20) as f64);
    let os = crate::hostinfo::os_pretty_name().unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let build = if cfg!(debug_assertions) {
        "debug build (figures not representative)"
    } else {
        "release build"
    };
    let _ = writeln!(s, "## Benchmark results ({what})\n");
    if plan.quick {
        let _ = writeln!(
            s,
            "**Quick mode**: tiny sizes, {} run(s) per configuration; these figures only show that the suite works.\n",
            plan.runs
        );
    }
    let _ = writeln!(
        s,
        "- Machine: {cpu}, {cores} CPUs, {mem_gib:.1} GiB RAM; {os}"
    );
    let _ = writeln!(s, "- Kernel: {uname}");
    let _ = writeln!(s, "- Date: {date}; load average at start: {load}; {build}");
    // The options as given, minus where the output went.
    let mut args = Vec::new();
    let mut it = std::env::args().skip_while(|a| a != what).skip(1);
    while let Some(a) = it.next() {
        if a == "--out" || a == "--work-dir" {
            it.next();
        } else if !a.starts_with("--out=") && !a.starts_with("--work-dir=") {
            args.push(a);
        }
    }
    let args: String = args.iter().map(|a| format!(" {a}")).collect();
    let script = if what == "all" {
        format!("`scripts/bench{args}` (= `kestrel bench all{args}`)")
    } else {
        format!("`kestrel bench {what}{args}`")
    };
    let _ = writeln!(s, "- Command (as root, from the repository): {script}\n");
    s
}

/// Median of `v` (sorted in place); 0 when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Progress line on stderr.
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("kestrel bench: {msg}");
}
