//! The `kestrel` command.

mod agent;
mod bench;
mod config;
mod control;
mod excludes;
mod fancreate;
mod hostinfo;
mod identity;
mod inventory;
mod logins;
mod metrics;
mod rules;
mod scan;
mod seed;
mod usb;
mod watched;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use config::AgentSettings;

/// Kestrel: a host intrusion detection data collector for Linux.
///
/// Kestrel watches the host from inside the kernel with eBPF tracepoints
/// and reports process executions and outbound connections as JSON events
/// in the AgentSmith-HIDS reference format, one per line.
#[derive(Debug, Parser)]
#[command(name = "kestrel", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: load the BPF probes and print events until
    /// SIGINT or SIGTERM (needs root and a kernel with BTF, Linux >= 5.15).
    ///
    /// Settings come from flags, then from the TOML file given with
    /// --config (same names, in snake_case: `ring_buffer_bytes = 16777216`),
    /// then from the defaults shown. Counters are logged to stderr every
    /// --stats-interval-secs and at exit.
    Agent(Box<AgentCmd>),

    /// Print the host's inventory as JSON events, one per line: listening
    /// ports (data_type 5051), users (5052), cron jobs (5053) and installed
    /// packages (5055). Warnings about malformed files, naming file and
    /// line, and a summary go to stderr.
    Inventory {
        /// What to collect.
        #[arg(value_enum, default_value = "all")]
        what: inventory::What,
    },

    /// Run an on-demand scan and print its findings as JSON events, one
    /// per line; a one-line summary of what was checked goes to stderr.
    /// Exits 0 when the scan ran, whatever it found.
    Scan {
        #[command(subcommand)]
        what: scan::What,
    },

    /// Run the control server: agents connect over gRPC/TLS (--listen),
    /// operators use the HTTPS API and dashboard (--http). On first start
    /// it writes DATA/ca.pem, DATA/enroll.token and DATA/admin.token.
    Server(Box<kestrel_server::ServerArgs>),

    /// Detection rules: `rules check` loads and lists them, `rules test
    /// --events FILE` replays recorded events through them offline.
    #[command(subcommand)]
    Rules(rules::RulesCmd),

    /// Query and command the control server (needs its admin token).
    Ctl(kestrel_server::ctl::CtlArgs),

    /// Benchmarks: what Kestrel costs the host (needs root). `bench all`
    /// prints every table as Markdown for docs/performance.md.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

#[derive(Debug, clap::Args)]
struct AgentCmd {
    /// TOML file with agent settings; flags override its values.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: AgentSettings,
}

fn main() -> ExitCode {
    // The matches, not only the parsed command: the agent's settings need
    // to know which flags were given (config.rs).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Agent(_) | Command::Server(_)) {
        // A one-shot command piped into `head` should end quietly, as any
        // Unix tool does, not panic in println!. Rust ignores SIGPIPE; the
        // agent and server keep that, since a closed socket must not kill
        // them.
        // SAFETY: no other thread exists yet; SIG_DFL is always valid.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Agent(cmd) => exit(run_agent(
            *cmd,
            matches
                .subcommand_matches("agent")
                .expect("the agent command's matches"),
        )),
        Command::Inventory { what } => {
            init_logging("warn");
            exit(inventory::run(what))
        }
        Command::Scan { what } => {
            init_logging("warn");
            exit(scan::run(what))
        }
        Command::Server(args) => {
            init_logging(&args.log_level);
            exit(kestrel_server::run(*args))
        }
        Command::Rules(cmd) => {
            init_logging("warn");
            exit(rules::run(cmd))
        }
        Command::Ctl(args) => {
            init_logging("warn");
            exit(kestrel_server::ctl::run(args))
        }
        Command::Bench(cmd) => {
            init_logging("warn");
            exit(bench::run(cmd))
        }
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kestrel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(cmd: AgentCmd, flags: &clap::ArgMatches) -> anyhow::Result<()> {
    let settings = match &cmd.config {
        Some(p) => AgentSettings::from_file(p)?.with_flags(flags)?,
        None => cmd.settings,
    };
    let cfg = settings.resolve()?;
    init_logging(&cfg.general.log_level);
    agent::run(cfg)
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
