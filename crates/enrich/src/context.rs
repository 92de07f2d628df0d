//! The per-event context: everything user space adds to a record, looked
//! up once per event from the sources in [`crate::lookup`], before any
//! field is written. Renderers only read it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel_decode::{ExeId, Exec, Module, Task};
use kestrel_event::lossless_string;

use crate::lookup::container::{Container, Containers};
use crate::lookup::hash::{Expect, Md5Cache};
use crate::lookup::modinfo;
use crate::lookup::netns::NetnsAddrs;
use crate::lookup::process::{cut, Lineage, Md5Status, Process, Processes, LINEAGE_ARGV_MAX};
use crate::lookup::procfs::Procfs;
use crate::lookup::runtime::{ContainerNames, NameResolver};
use crate::lookup::users::Users;
use crate::EnrichConfig;

/// What every kernel event gets from user space.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The process's executable and hash; `None` when it was gone.
    pub(crate) process: Option<Arc<Process>>,
    /// The name of the task's uid (shared with the user table: every
    /// event carries one).
    pub(crate) user: Arc<str>,
    /// The address of the task's network when it is not the host's.
    pub(crate) foreign_ip: Option<String>,
    /// The task's container (empty when none).
    pub(crate) container: Container,
    /// What its runtime calls it, when already known.
    pub(crate) names: ContainerNames,
    /// For an exec: the ancestor holding the session's socket, when the
    /// kernel found one and it could be looked up.
    pub(crate) socket_holder: Option<Arc<Process>>,
}

impl Context {
    /// The executable, "" when unknown.
    pub(crate) fn exe(&self) -> &str {
        self.process.as_ref().map_or("", |p| p.exe.as_str())
    }

    /// The executable's MD5, "" when unknown.
    pub(crate) fn exe_md5(&self) -> &str {
        self.process.as_ref().map_or("", |p| p.exe_md5.as_str())
    }

    /// What the MD5 is, or why it is empty ("gone" with no process).
    pub(crate) fn exe_md5_status(&self) -> &'static str {
        self.process
            .as_ref()
            .map_or(Md5Status::Gone, |p| p.md5_status)
            .as_str()
    }
}

/// What an exec event adds: the new image's view from the kernel and /proc.
#[derive(Debug, Default)]
pub(crate) struct ExecView {
    /// Working directory.
    pub(crate) cwd: String,
    /// What fd 0 and fd 1 refer to.
    pub(crate) stdio: [String; 2],
    /// The watched environment variables, in `WATCHED_ENV` order.
    pub(crate) env: [String; 2],
    /// The real parent's executable and arguments, and the process group
    /// leader's (empty when unknown, and counted).
    pub(crate) parent: Lineage,
    pub(crate) pgid: Lineage,
}

/// What a module load adds: the file loaded from.
#[derive(Debug, Default)]
pub(crate) struct ModuleFile {
    /// The file's path, "" for init_module.
    pub(crate) path: String,
    /// Its MD5.
    pub(crate) md5: String,
    /// The name in its `.modinfo`.
    pub(crate) name: String,
}

/// Every lookup source, with its cache.
pub(crate) struct Lookups {
    pub(crate) processes: Processes,
    users: Users,
    containers: Containers,
    netns: NetnsAddrs,
    pub(crate) names: NameResolver,
    pub(crate) answers: crate::lookup::answers::DnsAnswers,
    /// The agent's mount namespace (inode; 0 when unknown): a path the
    /// kernel walked in another one names another file here.
    own_mnt_ns: u64,
}

impl Lookups {
    pub(crate) fn new(cfg: &EnrichConfig) -> Self {
        Lookups {
            processes: Processes::new(
                Procfs::new(&cfg.proc_root),
                Md5Cache::new(cfg.hash_cache_entries, cfg.exe_md5_max_bytes)
                    .with_budget(cfg.exe_md5_bytes_per_sec, cfg.exe_md5_time_per_sec),
                cfg.process_cache_entries,
            ),
            users: Users::new(&cfg.passwd),
            containers: Containers::new(cfg.container_cache_entries),
            netns: NetnsAddrs::new(cfg.container_cache_entries),
            names: NameResolver::start(cfg.runtime_sockets.clone(), cfg.container_cache_entries),
            answers: crate::lookup::answers::DnsAnswers::new(crate::lookup::answers::ENTRIES),
            own_mnt_ns: std::fs::metadata(cfg.proc_root.join("self/ns/mnt"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0),
        }
    }

    /// The context of an event about `t`. `sip` is the event's socket
    /// address, if any: the stand-in for the address of a network that
    /// cannot be entered any more.
    pub(crate) fn context(&mut self, t: &Task, sip: Option<IpAddr>) -> Context {
        let process = self.processes.of_task(t);
        self.around(t, process, None, sip)
    }

    /// User, network and container of `t`, around its process.
    fn around(
        &mut self,
        t: &Task,
        process: Option<Arc<Process>>,
        cgroup_path: Option<&[u8]>,
        sip: Option<IpAddr>,
    ) -> Context {
        let user = self.users.name(t.uid);
        let foreign_ip = self.netns.foreign_ip(&self.processes.procfs, t, sip);
        let container = self
            .containers
            .of_task(&self.processes.procfs, t, cgroup_path)
            .unwrap_or_default();
        let names = self
            .names
            .lookup(container.runtime, &container.id)
            .unwrap_or_default();
        Context {
            process,
            user,
            foreign_ip,
            container,
            names,
            socket_holder: None,
        }
    }

    /// The context of an exec and its view. The kernel's view, captured at
    /// exec time, is exact even for a process that is gone; /proc fills in
    /// what it could not see.
    pub(crate) fn exec(&mut self, e: &Exec) -> (Context, ExecView) {
        let t = &e.task;
        let procfs = &self.processes.procfs;
        let known = [0, 1].map(|i| e.stdio[i].describe());
        let want = [e.cwd_truncated, known[0].is_none(), known[1].is_none()];
        let live = procfs.live_view(t.tgid, t.start_boottime, want);
        if live.is_none() {
            self.processes.misses.process_gone += 1;
        }
        let live = live.unwrap_or_default();
        let filename = lossless_string(&e.filename);
        let cwd = match (e.cwd_truncated, live.cwd.is_empty()) {
            (true, false) => live.cwd.clone(),
            // Deeper than the kernel walks: the innermost part, marked.
            (true, true) => format!("...{}", lossless_string(&e.cwd)),
            (false, _) => lossless_string(&e.cwd),
        };
        let [known_in, known_out] = known;
        let stdio = [
            known_in.unwrap_or_else(|| live.stdin.clone()),
            known_out.unwrap_or_else(|| live.stdout.clone()),
        ];

        let (exe, exe_md5, md5_status) = match (e.res, &t.exe) {
            (0, Some(id)) => {
                let here = u64::from(t.mnt_ns) == self.own_mnt_ns;
                self.executed(e, id, &live.exe, t.tgid, here)
            }
            // A failed exec is about the path that was refused; the
            // caller's image is not. (And an exec whose process entry the
            // kernel could not make: as before the identity existed.)
            _ => {
                let (exe, md5_path) = if e.res == 0 && !live.exe.is_empty() {
                    (live.exe.clone(), Some(procfs.path(t.tgid, "exe")))
                } else {
                    let abs = absolute(&filename, &cwd);
                    let p = abs.clone().map(PathBuf::from);
                    (abs.unwrap_or(filename), p)
                };
                let (md5, status) = match md5_path {
                    Some(p) => self.processes.md5_checked(&p, None),
                    None => (String::new(), Md5Status::Gone),
                };
                (exe, md5, status)
            }
        };
        let argv = cut(crate::render::exec::join_argv(&e.argv), LINEAGE_ARGV_MAX);
        let (parent, pgid) = self.lineage(e, &exe, &argv);
        let process = Arc::new(Process {
            exe,
            exe_md5,
            md5_status,
            id: if e.res == 0 { t.exe } else { None },
            argv: Some(argv),
        });
        if e.res == 0 {
            self.processes.remember(t, process.clone());
        }
        let socket_holder = e
            .socket
            .as_ref()
            .and_then(|(anc, _)| self.processes.get(anc.pid, anc.start_boottime));

        // The kernel copied a bounded prefix of the environment: a variable
        // pushed past it is looked up in /proc while the process lives.
        let env = [0, 1].map(|i| {
            let mut value = e.env[i].clone();
            if value.is_none() && e.env_truncated && !live.exe.is_empty() {
                let name = kestrel_decode::WATCHED_ENV[i];
                value = self.processes.procfs.environ_var(t.tgid, name);
            }
            value.map(|v| lossless_string(&v)).unwrap_or_default()
        });
        let cx = Context {
            socket_holder,
            ..self.around(t, Some(process), Some(&e.cgroup), None)
        };
        (
            cx,
            ExecView {
                cwd,
                stdio,
                env,
                parent,
                pgid,
            },
        )
    }

    /// The parent's and the process group leader's executable and
    /// arguments, for an exec of `exe` with arguments `argv`. A process
    /// that leads its own group is named by this exec (by its image when
    /// the exec failed). A kernel thread parent (a user-mode helper's) has
    /// neither: empty, and not a miss.
    fn lineage(&mut self, e: &Exec, exe: &str, argv: &str) -> (Lineage, Lineage) {
        let t = &e.task;
        let parent = match e.ancestors.first() {
            _ if e.parent_kthread => Some(Lineage::default()),
            Some(p) if p.pid == t.ppid => self.processes.lineage(p.pid, p.start_boottime),
            _ => None,
        };
        if parent.is_none() {
            self.processes.misses.parent_unknown += 1;
        }
        let pgid = if t.pgid == t.ppid {
            parent.clone()
        } else if t.pgid == t.tgid && e.res != 0 {
            // A failed exec leaves the caller's image: its own arguments
            // are the ones given to the exec that failed.
            self.processes.lineage(t.pgid, Some(t.start_boottime))
        } else if t.pgid == t.tgid {
            Some(Lineage {
                exe: exe.to_string(),
                argv: argv.to_string(),
            })
        } else {
            self.processes.lineage(t.pgid, None)
        };
        if pgid.is_none() {
            self.processes.misses.pgid_unknown += 1;
        }
        (parent.unwrap_or_default(), pgid.unwrap_or_default())
    }

    /// The executable of a successful exec, from the kernel's walk of the
    /// file it mapped, and the hash of that very file: through
    /// /proc/PID/exe while the process lives, else by its path, each
    /// checked against the identity the kernel took (`id`), never the
    /// path given to exec (a symlink, /proc/self/fd/N, /dev/fd/N/name,
    /// something renamed over it since). By path only when the process is
    /// in the agent's mount namespace (`here`).
    fn executed(
        &mut self,
        e: &Exec,
        id: &ExeId,
        live_exe: &str,
        pid: u32,
        here: bool,
    ) -> (String, String, Md5Status) {
        let walked = lossless_string(&e.exe_path);
        let live_path = live_exe.strip_suffix(" (deleted)").unwrap_or(live_exe);
        let path = if walked.is_empty() {
            live_path.to_string()
        } else if e.exe_truncated {
            // Deeper than the kernel walks: /proc names it whole while the
            // process lives (and still runs it), else the innermost part,
            // marked.
            if !live_path.is_empty() && live_path.ends_with(&walked) {
                live_path.to_string()
            } else {
                format!("...{walked}")
            }
        } else {
            walked
        };
        let exe = if id.deleted && !path.is_empty() {
            format!("{path} (deleted)")
        } else {
            path.clone()
        };
        let mut status = Md5Status::Gone;
        if !live_exe.is_empty() {
            let link = self.processes.procfs.path(pid, "exe");
            let expect = Expect {
                id,
                via_proc_link: true,
            };
            let (md5, s) = self.processes.md5_checked(&link, Some(expect));
            if !md5.is_empty() || !matches!(s, Md5Status::Gone | Md5Status::Changed) {
                return (exe, md5, s);
            }
            status = s;
        }
        if here && path.starts_with('/') && !id.deleted {
            let expect = Expect {
                id,
                via_proc_link: false,
            };
            let (md5, s) = self.processes.md5_checked(Path::new(&path), Some(expect));
            if !md5.is_empty() || s != Md5Status::Gone {
                status = s;
                if s == Md5Status::Changed {
                    self.processes.count_changed();
                }
                return (exe, md5, status);
            }
        }
        if status == Md5Status::Changed {
            self.processes.count_changed();
        }
        (exe, String::new(), status)
    }

    /// The context of a module load and the file it loaded.
    pub(crate) fn module(&mut self, m: &Module) -> (Context, ModuleFile) {
        let cx = self.context(&m.task, None);
        let path = lossless_string(&m.path);
        let file = if path.is_empty() {
            ModuleFile::default()
        } else {
            let p = Path::new(&path);
            ModuleFile {
                md5: self.processes.md5_exempt(p),
                name: modinfo::module_name(p).unwrap_or_default(),
                path,
            }
        };
        (cx, file)
    }
}

/// `path` made absolute against `cwd`; `None` when that cannot be known.
fn absolute(path: &str, cwd: &str) -> Option<String> {
    if path.starts_with('/') {
        Some(path.to_string())
    } else if cwd.starts_with('/') && !path.is_empty() {
        Some(Path::new(cwd).join(path).to_string_lossy().into_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(absolute("x", "/tmp").as_deref(), Some("/tmp/x"));
        assert_eq!(absolute("/bin/x", "").as_deref(), Some("/bin/x"));
        assert_eq!(absolute("x", ""), None);
    }
}
