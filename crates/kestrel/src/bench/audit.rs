//! Linux audit (auditd) as the classic way a HIDS collects the same data.
//!
//! Linux decides at fork whether a task is audited: once audit has ever
//! been enabled, every new task gets an audit context (and the slow
//! syscall path) unless a `never,task` rule says otherwise. So the
//! benchmark measures each configuration in a freshly spawned worker,
//! keeps `-a never,task` loaded while audit is meant to be off, and
//! loads the syscall rules only around the audited runs.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The rule recording the syscalls Kestrel watches.
const RULE: &[&str] = &[
    "-a",
    "always,exit",
    "-F",
    "arch=b64",
    "-S",
    "execve,execveat,connect,recvfrom,recvmsg,openat,open,creat,ptrace,init_module,finit_module",
    "-k",
    "kestrel-bench",
];
const NEVER_TASK: &[&str] = &["-a", "never,task"];

/// Adds `-a never,task` unless an earlier run left it in place.
fn never_task() -> Result<()> {
    match auditctl(NEVER_TASK) {
        Err(e) if format!("{e}").contains("exists") => Ok(()),
        r => r.map(drop),
    }
}

fn auditctl(args: &[&str]) -> Result<String> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .context("running auditctl (apt install auditd)")?;
    if !out.status.success() {
        bail!(
            "auditctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fields of `auditctl -s`.
fn status() -> Result<(u64, u64, u64)> {
    let s = auditctl(&["-s"])?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((get("enabled "), get("pid "), get("backlog_limit ")))
}

/// auditd running, rules loaded on demand; the host's audit state put
/// back when dropped.
pub struct Audit {
    old_enabled: u64,
    old_backlog: u64,
    started_auditd: Option<u32>,
    rules_on: bool,
    /// What `auditctl -s` said at start, for the report.
    pub describe: String,
}

impl Audit {
    /// Checks that the kernel audit subsystem answers, starts auditd if
    /// none runs, and turns audit off for new tasks until `on`.
    pub fn setup() -> Result<Audit> {
        let (old_enabled, pid, old_backlog) =
            status().context("the kernel audit subsystem does not answer")?;
        let mut a = Audit {
            old_enabled,
            old_backlog,
            started_auditd: None,
            rules_on: false,
            describe: String::new(),
        };
        if pid == 0 {
            // No systemd needed: auditd daemonizes and registers itself.
            let st = Command::new("auditd")
                .status()
                .context("starting auditd (apt install auditd)")?;
            if !st.success() {
                bail!("auditd failed to start: {st}");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, pid, _) = status()?;
                if pid != 0 {
                    a.started_auditd = Some(pid as u32);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("auditd did not register with the kernel within 10 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // The default backlog of 64 overflows under a storm; 8192 is what
        // distributions' rule files set.
        auditctl(&["-b", "8192"])?;
        never_task()?;
        auditctl(&["-e", "0"])?;
        let (_, pid, _) = status()?;
        a.describe = format!(
            "auditd pid {pid} ({}), log /var/log/audit/audit.log, backlog 8192",
            if a.started_auditd.is_some() {
                "started by the benchmark"
            } else {
                "already running"
            }
        );
        Ok(a)
    }

    /// Loads the syscall rule and enables audit: tasks forked from now on
    /// are audited.
    pub fn on(&mut self) -> Result<()> {
        let _ = auditctl(&["-d", NEVER_TASK[1]]);
        auditctl(RULE)?;
        self.rules_on = true;
        auditctl(&["-e", "1"])?;
        Ok(())
    }

    /// Removes the rule and disables audit for new tasks.
    pub fn off(&mut self) -> Result<()> {
        auditctl(&["-e", "0"])?;
        if self.rules_on {
            let mut del = RULE.to_vec();
            del[0] = "-d";
            auditctl(&del)?;
            self.rules_on = false;
        }
        never_task()?;
        Ok(())
    }

    /// The auditd process the kernel sends records to.
    pub fn pid(&self) -> Option<u32> {
        status()
            .ok()
            .map(|(_, pid, _)| pid as u32)
            .filter(|p| *p != 0)
    }

    /// Records lost by the kernel so far (backlog overflow).
    pub fn lost() -> u64 {
        auditctl(&["-s"])
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("lost "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let _ = self.off();
        let _ = auditctl(&["-b", &self.old_backlog.to_string()]);
        let _ = auditctl(&["-e", &self.old_enabled.to_string()]);
        if self.old_enabled != 0 {
            // Audit was in use before: leave its rules as they were.
            let _ = auditctl(&["-d", NEVER_TASK[1]]);
        }
        // Audit was off before: `never,task` stays, so tasks started from
        // now on do not take the audited syscall path, which Linux would
        // otherwise give every new task until reboot.
        if let Some(pid) = self.started_auditd {
            // SAFETY: kill with the pid of the auditd we started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}
