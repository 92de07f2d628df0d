//! Watched paths (data_types 608, 609, 90, 92): the defaults, and the set
//! the kernel holds, which the server's `watch_path` / `unwatch_path`
//! commands change at run time.

use kestrel_probes::{Probes, WatchPattern};

/// What is watched unless `no_default_watch_paths`: credentials,
/// persistence and logs.
pub const DEFAULTS: &[&str] = &[
    // Credentials.
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d/",
    "/root/.ssh/authorized_keys*",
    "/root/.ssh/id_*",
    "/home/*/.ssh/authorized_keys*",
    "/home/*/.ssh/id_*",
    // Persistence.
    "/etc/cron*",
    "/var/spool/cron/",
    "/etc/systemd/system/",
    "/usr/lib/systemd/system/",
    "/etc/init.d/",
    "/etc/rc.local",
    "/etc/profile",
    "/etc/profile.d/",
    "/etc/bash.bashrc",
    "/etc/zsh/",
    "/root/.bashrc",
    "/root/.bash_profile",
    "/root/.profile",
    "/root/.zshrc",
    "/home/*/.bashrc",
    "/home/*/.bash_profile",
    "/home/*/.profile",
    "/home/*/.zshrc",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf.d/",
    "/etc/pam.d/",
    "/etc/passwd",
    "/etc/group",
    // Logs.
    "/var/log/",
    // Container escapes: what a write there makes the host run as root
    // (a crash's core handler; a cgroup v1 release agent). Opens under
    // /proc and /sys pay the pattern test beyond the first name for it.
    "/proc/sys/kernel/core_pattern",
    "/sys/fs/cgroup/*/release_agent",
];

/// The default patterns, parsed.
pub fn defaults() -> Vec<WatchPattern> {
    DEFAULTS
        .iter()
        .map(|s| s.parse().expect("a default watched path"))
        .collect()
}

/// The watched set, as the kernel holds it.
pub struct Watched {
    patterns: Vec<WatchPattern>,
}

impl Watched {
    /// Hands `patterns` to the kernel.
    pub fn start(patterns: &[WatchPattern], probes: &Probes) -> anyhow::Result<Watched> {
        probes
            .set_watched(patterns)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(patterns = patterns.len(), "watched paths set");
        Ok(Watched {
            patterns: patterns.to_vec(),
        })
    }

    /// Watches `p` too (the `watch_path` command).
    pub fn add(&mut self, p: &WatchPattern, probes: &Probes) -> Result<(), String> {
        if self.patterns.contains(p) {
            return Ok(());
        }
        let mut next = self.patterns.clone();
        next.push(p.clone());
        probes.set_watched(&next)?;
        tracing::info!(pattern = %p, "watched path added");
        self.patterns = next;
        Ok(())
    }

    /// Stops watching `p` (the `unwatch_path` command); a pattern that was
    /// not watched is not an error.
    pub fn remove(&mut self, p: &WatchPattern, probes: &Probes) -> Result<(), String> {
        let next: Vec<WatchPattern> = self.patterns.iter().filter(|q| *q != p).cloned().collect();
        if next.len() == self.patterns.len() {
            return Ok(());
        }
        probes.set_watched(&next)?;
        tracing::info!(pattern = %p, "watched path removed");
        self.patterns = next;
        Ok(())
    }
}
