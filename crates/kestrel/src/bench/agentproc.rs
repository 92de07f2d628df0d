//! The real `kestrel agent`, run as a child of the benchmark.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running agent: this same executable, `agent` subcommand, events to
/// /dev/null, logs to a file the benchmark reads its counters from.
pub struct AgentProc {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProc {
    /// Starts the agent with `extra` flags and waits until its probes are
    /// attached ("kestrel agent started").
    pub fn start(dir: &Path, tag: &str, extra: &[String]) -> Result<AgentProc> {
        Self::spawn(dir, tag, "file:/dev/null", Stdio::null(), extra)
    }

    /// As [`AgentProc::start`], with the events and alerts on a pipe the
    /// caller reads (read it steadily: a full pipe stalls the agent).
    pub fn start_piped(
        dir: &Path,
        tag: &str,
        extra: &[String],
    ) -> Result<(AgentProc, std::process::ChildStdout)> {
        let mut a = Self::spawn(dir, tag, "stdout", Stdio::piped(), extra)?;
        let out = a
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .context("the agent's stdout pipe")?;
        Ok((a, out))
    }

    fn spawn(
        dir: &Path,
        tag: &str,
        output: &str,
        stdout: Stdio,
        extra: &[String],
    ) -> Result<AgentProc> {
        let log = dir.join(format!("agent-{tag}.log"));
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let exe = std::env::current_exe().context("finding the kestrel executable")?;
        let child = Command::new(exe)
            .args([
                "agent",
                "--output",
                output,
                "--inventory-interval-hours",
                "0",
                "--no-logins",
                "--stats-interval-secs",
                "3600",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(err)
            .spawn()
            .context("starting kestrel agent")?;
        let mut a = AgentProc {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if a.log_text().contains("kestrel agent started") {
                return Ok(a);
            }
            if let Some(st) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "kestrel agent exited with {st} before starting:\n{}",
                    a.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "kestrel agent did not start within 120 s:\n{}",
                    a.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// CPU time (user + system, all threads) used so far, in ns, from the
    /// scheduler's per-thread run times (nanosecond precision, unlike the
    /// clock ticks of /proc/PID/stat).
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns_of(self.pid())
    }

    /// (current RSS, peak RSS) in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, wait, and the numbers of the final counters line.
    pub fn stop(mut self) -> Result<HashMap<String, u64>> {
        let mut child = self.child.take().expect("agent already stopped");
        // SAFETY: kill with the pid of our own child and a valid signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().context("waiting for kestrel agent")?;
        if !st.success() {
            bail!("kestrel agent exited with {st}:\n{}", self.log_tail());
        }
        let text = self.log_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("when=\"final\"") || l.contains("when=final"))
            .with_context(|| format!("no final counters in the agent log:\n{}", self.log_tail()))?;
        Ok(line
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').parse().ok()?))
            })
            .collect())
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in stop().
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// CPU time of every thread of `pid`, in ns (first field of schedstat).
pub fn cpu_ns_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let p = t.ok()?.path().join("schedstat");
            std::fs::read_to_string(p)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Waits until `pid` has used under 1 ms of CPU in 100 ms (it has caught
/// up with earlier work), at most 10 s, so one workload's backlog is not
/// billed to the next.
pub fn wait_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_ns_of(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_ns_of(pid);
        if now.saturating_sub(last) < 1_000_000 {
            return;
        }
        last = now;
    }
}
