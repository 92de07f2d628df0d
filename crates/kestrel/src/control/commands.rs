//! The server's `config KEY=VALUE` commands, and what they act on: each
//! belongs to the stage it changes, and [`Runtime`] holds a handle on it:
//! - the event filter: detection's (agent::detect);
//! - a pending output change, which the output thread applies between two
//!   batches after flushing the old sink (agent::output);
//! - file exclusions and watched paths, applied to the kernel maps by the
//!   collecting thread, which owns the probes.
//!
//! Changes made by commands last until the agent stops; the agent's flags
//! and config file stay the source of truth at start.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kestrel_probes::{DirKey, Probes, WatchPattern};
use kestrel_sinks::OutputSpec;

use crate::agent::detect::{RuleReloader, SharedFilter};
use crate::agent::output::{OutputPolicy, OutputSwitch, Reply};
use crate::excludes::FileExcludes;
use crate::watched::Watched;

enum ProbeRequest {
    /// A directory, and the key it names now (looked up by the control
    /// thread: a stat may hang, and the collecting thread must not).
    Exclude(PathBuf, DirKey),
    Include(PathBuf),
    Watch(WatchPattern),
    Unwatch(WatchPattern),
}

/// What the server's commands change, shared with the agent's threads.
pub struct Runtime {
    filter: Arc<SharedFilter>,
    output: Arc<OutputSwitch>,
    output_policy: OutputPolicy,
    probes: Mutex<Vec<(ProbeRequest, Reply)>>,
    rules: Option<RuleReloader>,
    pub(super) restart: AtomicBool,
    pub(super) last_error: Mutex<String>,
}

impl Runtime {
    /// A runtime acting on detection's filter and the output's switch,
    /// within what `output_policy` lets the server choose.
    pub fn new(
        filter: Arc<SharedFilter>,
        output: Arc<OutputSwitch>,
        output_policy: OutputPolicy,
        rules: Option<RuleReloader>,
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            filter,
            output,
            output_policy,
            probes: Mutex::default(),
            rules,
            restart: AtomicBool::new(false),
            last_error: Mutex::default(),
        })
    }

    /// Applies waiting file exclusion and watched path changes; called by
    /// the thread that owns the probes.
    pub fn serve_probes(
        &self,
        probes: &Probes,
        excludes: &mut FileExcludes,
        watched: &mut Watched,
    ) {
        let reqs = std::mem::take(&mut *self.probes.lock().unwrap());
        for (req, reply) in reqs {
            let r = match &req {
                ProbeRequest::Exclude(d, key) => {
                    excludes.add(d, *key, probes).map_err(|e| e.to_string())
                }
                ProbeRequest::Include(d) => excludes.remove(d, probes).map_err(|e| e.to_string()),
                ProbeRequest::Watch(p) => watched.add(p, probes),
                ProbeRequest::Unwatch(p) => watched.remove(p, probes),
            };
            let _ = reply.send(r);
        }
    }

    /// The reload-rules command: the rule files compiled here, handed to
    /// the detect stage; a message with the rule count, or why not.
    pub fn reload_rules(&self) -> Result<String, String> {
        let r = self
            .rules
            .as_ref()
            .ok_or_else(|| "this agent runs no detect stage".to_string())?;
        r.request().map(|n| {
            format!(
                "{n} rules compiled; the detect stage takes them before its next event, \
                 keeping the state of the rules that did not change"
            )
        })
    }

    /// Records the agent's last error, reported in heartbeats.
    pub fn set_error(&self, e: impl Into<String>) {
        *self.last_error.lock().unwrap() = e.into();
    }

    /// Whether a `restart` command asked the agent to re-execute itself.
    pub fn restart_requested(&self) -> bool {
        self.restart.load(Ordering::Relaxed)
    }

    /// Applies one `config KEY=VALUE` command; returns what changed.
    pub fn apply_config(&self, kv: &str) -> Result<String, String> {
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("config needs KEY=VALUE, got {kv:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        let list = || -> BTreeSet<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let show = |s: &BTreeSet<String>| {
            if s.is_empty() {
                "none".to_string()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(",")
            }
        };
        match key {
            "disable" | "enable" => {
                let types = list();
                if types.is_empty() || !types.iter().all(|t| t.parse::<u32>().is_ok()) {
                    return Err(format!("{key} needs data_type codes, e.g. {key}=59,42"));
                }
                let f = self.filter.edit(|f| {
                    for t in &types {
                        if key == "disable" {
                            f.disabled.insert(t.clone());
                        } else {
                            f.disabled.remove(t);
                        }
                    }
                });
                Ok(format!(
                    "{key}d data_type {}; disabled now: {}",
                    show(&types),
                    show(&f.disabled)
                ))
            }
            "exclude_exe" | "include_exe" | "exclude_comm" | "include_comm" => {
                let items = list();
                if items.is_empty() {
                    return Err(format!("{key} needs a value"));
                }
                let f = self.filter.edit(|f| {
                    let set = if key.ends_with("exe") {
                        &mut f.exes
                    } else {
                        &mut f.comms
                    };
                    for i in &items {
                        if key.starts_with("exclude") {
                            set.insert(i.clone());
                        } else {
                            set.remove(i);
                        }
                    }
                });
                Ok(format!(
                    "excluded executables: {}; excluded comms: {}",
                    show(&f.exes),
                    show(&f.comms)
                ))
            }
            "exclude_path" | "include_path" => {
                let dir = PathBuf::from(value);
                if !dir.is_absolute() {
                    return Err(format!("{key} needs an absolute directory"));
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let req = if key == "exclude_path" {
                    match DirKey::of(&dir) {
                        Ok(k) => ProbeRequest::Exclude(dir.clone(), k),
                        Err(e) => return Err(format!("{key} {}: {e}", dir.display())),
                    }
                } else {
                    ProbeRequest::Include(dir.clone())
                };
                self.probes.lock().unwrap().push((req, tx));
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(Ok(())) => Ok(format!(
                        "file creations under {} {}",
                        dir.display(),
                        if key == "exclude_path" {
                            "excluded"
                        } else {
                            "reported again"
                        }
                    )),
                    Ok(Err(e)) => Err(format!("{key} {}: {e}", dir.display())),
                    Err(_) => Err("the collecting thread did not answer".into()),
                }
            }
            "watch_path" | "unwatch_path" => {
                let p: WatchPattern = value.parse().map_err(|e| format!("{key}: {e}"))?;
                let (tx, rx) = crossbeam_channel::bounded(1);
                let req = if key == "watch_path" {
                    ProbeRequest::Watch(p.clone())
                } else {
                    ProbeRequest::Unwatch(p.clone())
                };
                self.probes.lock().unwrap().push((req, tx));
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(Ok(())) => Ok(format!(
                        "{p} {}",
                        if key == "watch_path" {
                            "watched"
                        } else {
                            "no longer watched"
                        }
                    )),
                    Ok(Err(e)) => Err(format!("{key} {p}: {e}")),
                    Err(_) => Err("the collecting thread did not answer".into()),
                }
            }
            "output" => {
                let spec: OutputSpec = value.parse().map_err(|e| format!("output: {e}"))?;
                if let Err(why) = self.output_policy.check(&spec) {
                    tracing::warn!(output = %spec, reason = %why, "the server's output change refused");
                    return Err(format!(
                        "output {spec} refused: {why}; the old output is kept"
                    ));
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                self.output.request(spec.clone(), tx);
                match rx.recv_timeout(Duration::from_secs(15)) {
                    Ok(Ok(())) => Ok(format!("output is now {spec}")),
                    Ok(Err(e)) => Err(format!("output {spec}: {e}; the old output is kept")),
                    Err(_) => Err("the output thread did not answer".into()),
                }
            }
            _ => Err(format!(
                "unknown config key {key:?}: use disable, enable, exclude_exe, include_exe, \
                 exclude_comm, include_comm, exclude_path, include_path, watch_path, \
                 unwatch_path or output"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::detect::tests::ev;
    use crate::agent::detect::Filter;
    use kestrel_event::Event;

    fn runtime() -> (Arc<Runtime>, Arc<SharedFilter>) {
        let filter = Arc::new(SharedFilter::default());
        let policy = OutputPolicy {
            host: "file:/var/log/kestrel/events.json".parse().unwrap(),
            allow: vec!["/var/log/kestrel-extra".into()],
        };
        (
            Runtime::new(filter.clone(), Arc::default(), policy, None),
            filter,
        )
    }

    #[test]
    fn config_commands_change_the_filter() {
        let (rt, filter) = runtime();
        let drops = |e: &Event| filter.current().drops(e);
        let exec = ev(&[
            ("data_type", "59"),
            ("exe", "/usr/bin/true"),
            ("comm", "true"),
        ]);
        let conn = ev(&[
            ("data_type", "42"),
            ("exe", "/usr/bin/curl"),
            ("comm", "curl"),
        ]);
        assert!(!drops(&exec));
        rt.apply_config("disable=59").unwrap();
        assert!(drops(&exec) && !drops(&conn));
        rt.apply_config("enable=59").unwrap();
        assert!(!drops(&exec));
        rt.apply_config("exclude_comm=curl").unwrap();
        assert!(drops(&conn) && !drops(&exec));
        rt.apply_config("include_comm=curl").unwrap();
        rt.apply_config("exclude_exe=/usr/bin/true").unwrap();
        assert!(drops(&exec) && !drops(&conn));
    }

    #[test]
    fn bad_config_commands_fail_clearly() {
        let (rt, filter) = runtime();
        assert!(rt
            .apply_config("nonsense")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(rt
            .apply_config("colour=blue")
            .unwrap_err()
            .contains("unknown config key"));
        assert!(rt
            .apply_config("disable=exec")
            .unwrap_err()
            .contains("data_type codes"));
        assert!(rt
            .apply_config("exclude_path=relative")
            .unwrap_err()
            .contains("absolute"));
        assert!(rt
            .apply_config("watch_path=etc/x")
            .unwrap_err()
            .contains("watch_path: watched path \"etc/x\": use an absolute path"));
        assert!(rt
            .apply_config("output=kafka:x")
            .unwrap_err()
            .contains("output"));
        assert_eq!(*filter.current(), Filter::default());
    }

    #[test]
    fn the_server_cannot_choose_where_the_agent_writes() {
        let (rt, _) = runtime();
        for bad in [
            "output=file:/etc/profile.d/x.sh",
            "output=file:/etc/ld.so.preload",
            "output=file:/var/log/kestrel-extra/../../../etc/x",
            "output=file:/var/log/kestrel-extra/sub/x",
            "output=kafka://10.0.0.1:9092/t?sasl_password_file=/etc/shadow",
            "output=kafka://10.0.0.1:9092/t?spool_dir=/etc",
            "output=kafka://10.0.0.1:9092/t?tls_cert=/tmp/c.pem&tls_key=/root/.ssh/id_ed25519",
        ] {
            let e = rt.apply_config(bad).unwrap_err();
            assert!(
                e.contains("refused") && e.contains("--output-allow"),
                "{bad}: {e}"
            );
        }
        let p = OutputPolicy {
            host: "file:/var/log/kestrel/events.json".parse().unwrap(),
            allow: vec!["/var/log/kestrel-extra".into()],
        };
        for good in [
            "stdout",
            "file:/var/log/kestrel/events.json",
            "file:/var/log/kestrel-extra/b.json",
            "kafka://10.0.0.1:9092/t",
            "kafka://10.0.0.1:9092/t?spool_dir=/var/log/kestrel-extra/spool",
        ] {
            p.check(&good.parse().unwrap()).unwrap();
        }
    }
}
