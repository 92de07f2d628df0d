//! `kestrel inventory`: the host's users, listening ports, packages and
//! scheduled jobs, one reference-format JSON event per item.
//!
//! data_type codes are those of Elkeid's collector, which grew out of the
//! reference, so its consumers understand them: 5051 listening ports, 5052
//! users, 5053 cron jobs, 5055 software packages.

use std::io::Write;
use std::path::Path;

use kestrel_event::{Event, Host, When};
use kestrel_inventory::{cron, dpkg, ports, rpm, users, Package, PackageSource, Warning};

/// What to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Local users and their password state, groups, sudo rights.
    Users,
    /// Listening TCP and bound UDP sockets with their process.
    Ports,
    /// Installed dpkg and rpm packages.
    Packages,
    /// cron, anacron and systemd timer jobs.
    Cron,
    /// All of the above.
    All,
}

/// Where rpm keeps its database, newest layout first.
const RPM_DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

/// Collects `what` and returns the events and the warnings met.
pub fn collect(what: What, host: &Host) -> (Vec<Event>, Vec<Warning>) {
    let mut events = Vec::new();
    let mut warnings = Vec::new();
    let all = what == What::All;
    let now = When::now();
    let push = |mut ev: Event, events: &mut Vec<Event>| {
        host.stamp(&mut ev, now);
        events.push(ev);
    };
    if all || what == What::Ports {
        let (socks, w) = ports::collect();
        warnings.extend(w);
        let mut names = kestrel_enrich::Users::new("/etc/passwd");
        for s in socks {
            let container = s
                .pid
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
                .and_then(|text| {
                    kestrel_enrich::container::path_from_proc_cgroup(&text)
                        .and_then(kestrel_enrich::container::from_cgroup_path)
                })
                .unwrap_or_default();
            let mut ev = Event::with_capacity(16);
            ev.push("data_type", "5051");
            ev.push("protocol", s.proto);
            ev.push("sa_family", if s.family == 4 { "2" } else { "10" });
            ev.push("sip", s.addr.to_string());
            ev.push("sport", s.port.to_string());
            ev.push("inode", s.inode.to_string());
            ev.push("uid", s.uid.to_string());
            ev.push("user", names.name(s.uid));
            ev.push("pid", s.pid.map(|p| p.to_string()).unwrap_or_default());
            ev.push("exe", s.exe);
            ev.push("cmdline", s.cmdline);
            ev.push("comm", s.comm);
            ev.push("container_id", container.id);
            ev.push("container_runtime", container.runtime);
            push(ev, &mut events);
        }
    }
    if all || what == What::Users {
        let (list, w) = users::collect(Path::new("/"));
        warnings.extend(w);
        for u in list {
            let mut ev = Event::with_capacity(18);
            ev.push("data_type", "5052");
            ev.push("username", u.name);
            ev.push("uid", u.uid.to_string());
            ev.push("gid", u.gid.to_string());
            ev.push("info", u.gecos);
            ev.push("home", u.home);
            ev.push("shell", u.shell);
            ev.push("groups", u.groups.join(","));
            ev.push("password", format!("{:?}", u.password).to_lowercase());
            ev.push("password_expired", u.password_expired.to_string());
            ev.push("sudo", u.sudo.to_string());
            ev.push(
                "last_change_days",
                u.last_change_days
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            );
            ev.push(
                "last_login",
                u.last_login
                    .map(|t| (t * 1000).to_string())
                    .unwrap_or_default(),
            );
            push(ev, &mut events);
        }
    }
    if all || what == What::Cron {
        let (jobs, w) = cron::collect(Path::new("/"));
        warnings.extend(w);
        for j in jobs {
            let mut ev = Event::with_capacity(12);
            ev.push("data_type", "5053");
            ev.push("schedule", j.schedule);
            ev.push("user", j.user);
            ev.push("command", j.command);
            ev.push("path", j.source.display().to_string());
            ev.push("line", j.line.map(|l| l.to_string()).unwrap_or_default());
            ev.push("type", j.kind);
            push(ev, &mut events);
        }
    }
    if all || what == What::Packages {
        let mut pkgs: Vec<Package> = Vec::new();
        let status = Path::new("/var/lib/dpkg/status");
        if status.exists() {
            match dpkg::read_status(status) {
                Ok((p, w)) => {
                    pkgs.extend(p);
                    warnings.extend(w);
                }
                Err(e) => {
                    tracing::warn!(path = %status.display(), error = %e, "cannot read the dpkg database")
                }
            }
        }
        if let Some(dir) = RPM_DIRS.iter().map(Path::new).find(|d| has_rpmdb(d)) {
            match rpm::read_db(dir) {
                Ok((p, w)) => {
                    pkgs.extend(p);
                    warnings.extend(w);
                }
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot read the rpm database")
                }
            }
        }
        for p in pkgs {
            let mut ev = Event::with_capacity(14);
            ev.push("data_type", "5055");
            ev.push("name", p.name);
            ev.push("version", p.version);
            ev.push("release", p.release);
            ev.push("epoch", p.epoch.map(|e| e.to_string()).unwrap_or_default());
            ev.push("arch", p.arch);
            ev.push("size", p.size.to_string());
            ev.push("vendor", p.vendor);
            ev.push(
                "install_time",
                p.install_time
                    .map(|t| (t * 1000).to_string())
                    .unwrap_or_default(),
            );
            ev.push(
                "type",
                match p.source {
                    PackageSource::Dpkg => "dpkg",
                    PackageSource::Rpm => "rpm",
                },
            );
            push(ev, &mut events);
        }
    }
    (events, warnings)
}

fn has_rpmdb(dir: &Path) -> bool {
    ["rpmdb.sqlite", "Packages.db", "Packages"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// `kestrel inventory`: events to stdout, warnings and a summary to stderr.
pub fn run(what: What) -> anyhow::Result<()> {
    let host = Host::new();
    let (events, warnings) = collect(what, &host);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::with_capacity(512);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for ev in &events {
        line.clear();
        ev.write_json_line(&mut line);
        out.write_all(&line)?;
        *counts
            .entry(ev.get("data_type").unwrap_or("").to_string())
            .or_default() += 1;
    }
    out.flush()?;
    for w in &warnings {
        eprintln!("kestrel: warning: {w}");
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "kestrel: inventory: {} items ({}), {} warnings",
        events.len(),
        summary.join(" "),
        warnings.len()
    );
    Ok(())
}
