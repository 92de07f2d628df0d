//! `kestrel rules`: check rule files, and replay recorded events through
//! them offline (what a rule author tests a rule with).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kestrel_detect::{Engine, EngineConfig, RuleSource};
use kestrel_event::Event;

use crate::agent::detect::RulesConfig;

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Load the rules and print one JSON line per rule: rule_id, title,
    /// source (builtin, custom, sigma), status (loaded, unsupported,
    /// disabled) and reason.
    /// Exits non-zero, naming file and line, on a file that does not
    /// parse or a rule that does not compile.
    Check(RuleArgs),

    /// Replay a JSON-lines event file (as the agent writes it) through
    /// the rules and print the alerts as JSON lines, in the agent's alert
    /// format (data_type 9000).
    Test {
        /// The events, one JSON object per line.
        #[arg(long, value_name = "FILE")]
        events: PathBuf,

        /// Seconds during which repeated alerts of one rule and key are
        /// counted instead of printed, as in the agent.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        alert_suppress_secs: u64,

        #[command(flatten)]
        rules: RuleArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// A directory of rule files (*.yaml); repeat for several.
    #[arg(long = "rules", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,

    /// A directory of Sigma rules (*.yml, *.yaml, subdirectories too);
    /// repeat for several.
    #[arg(long = "sigma", value_name = "DIR")]
    pub sigma: Vec<PathBuf>,

    /// Leave the built-in rule set out.
    #[arg(long)]
    pub no_builtin_rules: bool,
}

impl RuleArgs {
    fn config(&self) -> RulesConfig {
        RulesConfig {
            builtin: !self.no_builtin_rules,
            dirs: self.dirs.clone(),
            sigma: self.sigma.clone(),
        }
    }
}

pub fn run(cmd: RulesCmd) -> Result<()> {
    match cmd {
        RulesCmd::Check(args) => check(&args),
        RulesCmd::Test {
            events,
            alert_suppress_secs,
            rules,
        } => test(&rules, &events, alert_suppress_secs),
    }
}

fn check(args: &RuleArgs) -> Result<()> {
    // Each file parsed alone first: its own syntax errors, named.
    let sources: Vec<RuleSource> = args.config().sources(None)?;
    for s in &sources {
        kestrel_detect::parse(s)?;
    }
    let set = kestrel_detect::compile(&sources)?;
    let mut out = std::io::stdout().lock();
    for r in &set.report {
        // In this order (json! would sort the keys).
        #[derive(serde::Serialize)]
        struct Line<'a> {
            rule_id: &'a str,
            title: &'a str,
            source: &'a str,
            status: &'a str,
            reason: &'a str,
        }
        let line = serde_json::to_string(&Line {
            rule_id: &r.rule_id,
            title: &r.title,
            source: r.source.as_str(),
            status: r.status,
            reason: &r.reason,
        })?;
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Field names of the replayed events: `Event` keeps `&'static str`
/// names (the agent's are compiled in), so each distinct name read is
/// kept for the life of this one-shot command.
#[derive(Default)]
struct Names(HashMap<String, &'static str>);

impl Names {
    fn get(&mut self, k: &str) -> &'static str {
        if let Some(n) = self.0.get(k) {
            return n;
        }
        let n: &'static str = Box::leak(k.to_string().into_boxed_str());
        self.0.insert(k.to_string(), n);
        n
    }
}

fn test(args: &RuleArgs, events: &PathBuf, suppress_secs: u64) -> Result<()> {
    let set = kestrel_detect::compile(&args.config().sources(None)?)?;
    let mut engine = Engine::new(
        set,
        EngineConfig {
            suppress_ms: suppress_secs.saturating_mul(1000),
            alert_prefix: "replay".into(),
            ..Default::default()
        },
        Arc::default(),
    );
    let f = std::fs::File::open(events).with_context(|| format!("{}", events.display()))?;
    let mut names = Names::default();
    let mut alerts = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    let (mut n_events, mut n_alerts) = (0u64, 0u64);
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", events.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => bail!("{}:{}: not a JSON event: {e}", events.display(), i + 1),
        };
        let Some(obj) = v.as_object() else {
            bail!("{}:{}: not a JSON object", events.display(), i + 1);
        };
        let mut ev = Event::with_capacity(obj.len());
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ev.push(names.get(k), v);
        }
        n_events += 1;
        engine.process(&ev, &mut alerts);
        for mut a in alerts.drain(..) {
            a.push("event_id", format!("replay-{n_alerts}"));
            n_alerts += 1;
            buf.clear();
            a.write_json_line(&mut buf);
            out.write_all(&buf)?;
        }
    }
    out.flush()?;
    eprintln!(
        "{n_events} events replayed through {} rules: {n_alerts} alerts",
        engine.rules().count()
    );
    Ok(())
}
