//! `kestrel scan`: on-demand scans, findings as JSON events on stdout.

use std::io::Write;

use anyhow::Context;

/// Which scan to run.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum What {
    /// Look for kernel rootkits: hooked syscall table and dispatch code
    /// (701), interrupt table (703), /proc operations (700), hidden modules
    /// (702), module-owned ftrace hooks and kprobes (704). Needs root.
    Rootkit,
}

/// Runs the scan, prints its events and its summary.
pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Rootkit => {
            let report = kestrel_scan::rootkit::scan(&kestrel_scan::rootkit::Options::default())
                .context("rootkit scan could not run")?;
            for w in &report.warnings {
                tracing::warn!("rootkit scan: {w}");
            }
            tracing::debug!(bpf_runs = report.bpf_runs, "rootkit scan done");
            let mut buf = Vec::new();
            for ev in &report.events {
                ev.write_json_line(&mut buf);
            }
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
            eprintln!("{}", report.summary);
            Ok(())
        }
    }
}
