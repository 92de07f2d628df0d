//! Turns decoded kernel records into reference-format events.
//!
//! The kernel side already captured what cannot wait (ids, names, argv,
//! environment, the process tree, the socket behind the session). This
//! stage adds what only user space can see cheaply: executable paths and
//! their MD5, working directory, stdin/stdout targets, user names and host
//! facts. Every cache is bounded. A process that exited before it could be
//! looked at still gives its event, with those fields empty, and is counted.

pub mod container;
pub mod cri;
mod filehash;
mod hash;
mod host;
mod procfs;
pub mod runtime;
mod users;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel_decode::{
    Connect, Cred, Dns, Exec, FileCreate, Module, Ptrace, Record, SockAddrs, Task,
};
use kestrel_event::{
    lossless_string, Event, DATA_TYPE_CONNECT, DATA_TYPE_CRED, DATA_TYPE_DNS, DATA_TYPE_EXEC,
    DATA_TYPE_FILE, DATA_TYPE_MODULE, DATA_TYPE_PTRACE,
};
use lru::LruCache;

pub use container::Container;
pub use filehash::{FileHashConfig, FileHasher};
pub use hash::{HashMiss, Md5Cache};
pub use host::{clock_ns, interface_addrs, Host, IfAddr};
pub use procfs::{LiveView, Procfs};
pub use runtime::{ContainerNames, NameResolver, RuntimeCounters, RuntimeSockets};
pub use users::Users;

/// Settings of the enrichment stage.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    /// Executables larger than this are not hashed (`exe_md5` is empty).
    pub exe_md5_max_bytes: u64,
    /// Processes whose executable and hash are remembered.
    pub process_cache_entries: usize,
    /// File hashes remembered.
    pub hash_cache_entries: usize,
    /// Cgroups (and network namespaces) whose container (address) is
    /// remembered.
    pub container_cache_entries: usize,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// The user database.
    pub passwd: PathBuf,
    /// Container runtime API sockets, for container names.
    pub runtime_sockets: RuntimeSockets,
    /// Programs whose setuid exec to root is expected (sudo, su, sshd):
    /// no credential change event for them.
    pub cred_allowlist: Vec<String>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            exe_md5_max_bytes: 64 << 20,
            process_cache_entries: 16384,
            hash_cache_entries: 4096,
            container_cache_entries: 4096,
            proc_root: PathBuf::from("/proc"),
            passwd: PathBuf::from("/etc/passwd"),
            runtime_sockets: RuntimeSockets::default(),
            cred_allowlist: DEFAULT_CRED_ALLOWLIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Programs that become root by design, at their usual paths.
pub const DEFAULT_CRED_ALLOWLIST: &[&str] = &[
    "/usr/bin/sudo",
    "/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/sbin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-session",
];

/// What enrichment could not do, counted since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EnrichCounters {
    /// Events whose process had exited (or whose pid was reused) before
    /// /proc could be read: proc-derived fields are empty.
    pub process_gone: u64,
    /// Hashes skipped because the file exceeded the size cap.
    pub md5_too_large: u64,
    /// Hashes that failed because the file could not be read.
    pub md5_unreadable: u64,
    /// DNS datagrams that did not parse (still emitted, with the
    /// question fields empty).
    pub dns_malformed: u64,
    /// Credential changes dropped because an allowlisted program was
    /// exec'd.
    pub cred_allowlisted: u64,
}

#[derive(Debug)]
struct ProcInfo {
    exe: String,
    exe_md5: String,
}

/// The enrichment stage. Not thread-safe by design: one pipeline thread
/// owns it, so its caches need no locks.
pub struct Enricher {
    cfg: EnrichConfig,
    procfs: Procfs,
    host: Host,
    users: Users,
    hashes: Md5Cache,
    /// (tgid, start_boottime) → executable. Keyed by start time so a
    /// reused pid never inherits another process's identity.
    processes: LruCache<(u32, u64), Arc<ProcInfo>>,
    /// cgroup id → the container it belongs to (None: not a container).
    containers: LruCache<u64, Option<Container>>,
    /// network namespace → its primary address, for namespaces other than
    /// the agent's.
    netns_ips: LruCache<u32, String>,
    host_net_ns: u32,
    names: NameResolver,
    counters: EnrichCounters,
}

impl Enricher {
    /// A new stage with empty caches.
    pub fn new(cfg: EnrichConfig) -> Self {
        Enricher {
            procfs: Procfs::new(&cfg.proc_root),
            host: Host::new(),
            users: Users::new(&cfg.passwd),
            hashes: Md5Cache::new(cfg.hash_cache_entries, cfg.exe_md5_max_bytes),
            processes: LruCache::new(NonZeroUsize::new(cfg.process_cache_entries.max(1)).unwrap()),
            containers: LruCache::new(
                NonZeroUsize::new(cfg.container_cache_entries.max(1)).unwrap(),
            ),
            netns_ips: LruCache::new(
                NonZeroUsize::new(cfg.container_cache_entries.max(1)).unwrap(),
            ),
            host_net_ns: host::own_net_ns().unwrap_or(0),
            names: NameResolver::start(cfg.runtime_sockets.clone(), cfg.container_cache_entries),
            counters: EnrichCounters::default(),
            cfg,
        }
    }

    /// Counters since start.
    pub fn counters(&self) -> EnrichCounters {
        self.counters
    }

    /// Container runtime lookup counters.
    pub fn runtime_counters(&self) -> &RuntimeCounters {
        self.names.counters()
    }

    /// The settings in use.
    pub fn config(&self) -> &EnrichConfig {
        &self.cfg
    }

    /// Turns one record into its event; `None` for a record that policy
    /// drops (a credential change by an allowlisted program, counted).
    pub fn enrich(&mut self, rec: &Record) -> Option<Event> {
        self.host.maybe_refresh();
        Some(match rec {
            Record::Exec(e) => self.exec(e),
            Record::Connect(c) => self.connect(c),
            Record::Ptrace(p) => self.ptrace(p),
            Record::Dns(d) => self.dns(d),
            Record::Cred(c) => self.cred(c)?,
            Record::Module(m) => self.module(m),
            Record::File(f) => self.file(f),
        })
    }

    fn md5(&mut self, path: &Path) -> String {
        match self.hashes.md5_of(path) {
            Ok(h) => h,
            Err(HashMiss::TooLarge) => {
                self.counters.md5_too_large += 1;
                String::new()
            }
            Err(HashMiss::Missing | HashMiss::NotRegular) => String::new(),
            Err(HashMiss::Unreadable) => {
                self.counters.md5_unreadable += 1;
                String::new()
            }
        }
    }

    /// Executable and hash of a process, from cache or /proc.
    fn process(&mut self, pid: u32, start: Option<u64>) -> Option<Arc<ProcInfo>> {
        let start = match start {
            Some(s) => s,
            None => self.procfs.start_ticks(pid)?,
        };
        if let Some(p) = self.processes.get(&(pid, start)) {
            return Some(p.clone());
        }
        let exe = self.procfs.exe(pid, Some(start))?;
        let exe_md5 = self.md5(&self.procfs.path(pid, "exe"));
        let info = Arc::new(ProcInfo { exe, exe_md5 });
        self.processes.put((pid, start), info.clone());
        Some(info)
    }

    /// The process an event is about, counting it when it is gone.
    fn event_process(&mut self, t: &Task) -> Option<Arc<ProcInfo>> {
        let p = self.process(t.tgid, Some(t.start_boottime));
        if p.is_none() {
            self.counters.process_gone += 1;
        }
        p
    }

    fn common_head(&mut self, ev: &mut Event, t: &Task, data_type: &'static str) {
        ev.push("uid", t.uid.to_string());
        ev.push("data_type", data_type);
    }

    fn ids(ev: &mut Event, t: &Task) {
        ev.push("pid", t.pid.to_string());
        ev.push("ppid", t.ppid.to_string());
        ev.push("pgid", t.pgid.to_string());
        ev.push("tgid", t.tgid.to_string());
        ev.push("comm", lossless_string(&t.comm));
        ev.push("nodename", lossless_string(&t.nodename));
    }

    fn common_tail(&mut self, ev: &mut Event, t: &Task, ktime_ns: u64, sip: Option<IpAddr>) {
        ev.push("user", self.users.name(t.uid).to_string());
        ev.push("time", self.host.epoch_ms(ktime_ns).to_string());
        let local_ip = self.local_ip(t, sip);
        ev.push("local_ip", local_ip);
        ev.push("hostname", self.host.hostname.clone());
    }

    /// The address of the network the event happened in: the host's, or
    /// for a process in another network namespace, that namespace's.
    fn local_ip(&mut self, t: &Task, sip: Option<IpAddr>) -> String {
        if t.net_ns == 0 || t.net_ns == self.host_net_ns {
            return self.host.local_ip.clone();
        }
        if let Some(ip) = self.netns_ips.get(&t.net_ns) {
            return ip.clone();
        }
        if let Some(ip) = host::netns_local_ip(&self.procfs.path(t.tgid, "ns/net"), t.net_ns) {
            let ip = ip.to_string();
            self.netns_ips.put(t.net_ns, ip.clone());
            return ip;
        }
        // The process is gone: its socket's own address is the best left.
        sip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    }

    /// The container of a task, from its cgroup path when the kernel sent
    /// one, else from the cache or /proc/PID/cgroup.
    fn container(&mut self, t: &Task, cgroup_path: Option<&[u8]>) -> Option<Container> {
        if let Some(path) = cgroup_path {
            let c = container::from_cgroup_path(&lossless_string(path));
            self.containers.put(t.cgroup_id, c.clone());
            return c;
        }
        if let Some(c) = self.containers.get(&t.cgroup_id) {
            return c.clone();
        }
        let text = std::fs::read_to_string(self.procfs.path(t.tgid, "cgroup")).ok()?;
        let c = container::path_from_proc_cgroup(&text).and_then(container::from_cgroup_path);
        self.containers.put(t.cgroup_id, c.clone());
        c
    }

    /// Namespace and container fields, on every kernel event.
    fn where_fields(&mut self, ev: &mut Event, t: &Task, cgroup_path: Option<&[u8]>) {
        ev.push("pid_ns", t.pid_ns.to_string());
        ev.push("mnt_ns", t.mnt_ns.to_string());
        ev.push("net_ns", t.net_ns.to_string());
        ev.push("ns_pid", t.ns_pid.to_string());
        ev.push("cgroup_id", t.cgroup_id.to_string());
        let c = self.container(t, cgroup_path).unwrap_or_default();
        let names = self.names.lookup(c.runtime, &c.id).unwrap_or_default();
        ev.push("container_id", c.id);
        ev.push("container_runtime", c.runtime);
        ev.push("pod_uid", c.pod_uid);
        ev.push("container_name", names.name);
        ev.push("image", names.image);
        ev.push("pod_name", names.pod_name);
        ev.push("pod_namespace", names.pod_namespace);
    }

    fn exec(&mut self, e: &Exec) -> Event {
        let t = &e.task;
        let mut ev = Event::with_capacity(40);
        let stdio_known = [0, 1].map(|i| e.stdio[i].describe());
        let want = [
            e.cwd_truncated,
            stdio_known[0].is_none(),
            stdio_known[1].is_none(),
        ];
        let live = self.procfs.live_view(t.tgid, t.start_boottime, want);
        if live.is_none() {
            self.counters.process_gone += 1;
        }
        let live = live.unwrap_or_default();
        let filename = lossless_string(&e.filename);
        // The kernel's view, captured at exec time, is exact even for a
        // process that is gone; /proc fills in what it could not see.
        let cwd = match (e.cwd_truncated, live.cwd.is_empty()) {
            (true, false) => live.cwd.clone(),
            // Deeper than the kernel walks: the innermost part, marked.
            (true, true) => format!("...{}", lossless_string(&e.cwd)),
            (false, _) => lossless_string(&e.cwd),
        };
        let [known_in, known_out] = stdio_known;
        let stdio = [
            known_in.unwrap_or_else(|| live.stdin.clone()),
            known_out.unwrap_or_else(|| live.stdout.clone()),
        ];

        // A successful exec is about the new image: /proc/PID/exe names
        // it and opening that link hashes exactly that file. A failed one
        // is about the path that was refused; the caller's image is not.
        let (exe, md5_path) = if e.res == 0 && !live.exe.is_empty() {
            (live.exe.clone(), Some(self.procfs.path(t.tgid, "exe")))
        } else {
            let abs = absolute(&filename, &cwd);
            let p = abs.clone().map(PathBuf::from);
            (abs.unwrap_or_else(|| filename.clone()), p)
        };
        let exe_md5 = md5_path.map(|p| self.md5(&p)).unwrap_or_default();
        // Later events of this process (its connects) reuse what the exec
        // found, even once the process is gone from /proc.
        if e.res == 0 {
            self.processes.put(
                (t.tgid, t.start_boottime),
                Arc::new(ProcInfo {
                    exe: exe.clone(),
                    exe_md5: exe_md5.clone(),
                }),
            );
        }

        self.common_head(&mut ev, t, DATA_TYPE_EXEC);
        ev.push("run_path", cwd);
        ev.push("exe", exe);
        ev.push("argv", join_argv(&e.argv));
        Self::ids(&mut ev, t);
        let [stdin, stdout] = stdio;
        ev.push("stdin", stdin);
        ev.push("stdout", stdout);
        ev.push("sessionid", t.sessionid.to_string());

        let socket = e.socket.as_ref();
        let addrs = socket.map(|(_, a)| a);
        push_addrs(&mut ev, addrs);
        ev.push("pid_tree", pid_tree(e));
        ev.push("tty_name", lossless_string(&e.tty));
        let sock_proc = socket.and_then(|(anc, _)| self.process(anc.pid, anc.start_boottime));
        ev.push(
            "socket_process_pid",
            socket.map(|(a, _)| a.pid.to_string()).unwrap_or_default(),
        );
        ev.push(
            "socket_process_exe",
            sock_proc
                .as_ref()
                .map(|p| p.exe.clone())
                .unwrap_or_default(),
        );

        // The kernel copied a bounded prefix of the environment: a variable
        // pushed past it is looked up in /proc while the process lives.
        for (i, name) in kestrel_decode::WATCHED_ENV.iter().enumerate() {
            let mut value = e.env[i].clone();
            if value.is_none() && e.env_truncated && !live.exe.is_empty() {
                value = self.procfs.environ_var(t.tgid, name);
            }
            ev.push(name, value.map(|v| lossless_string(&v)).unwrap_or_default());
        }
        self.common_tail(&mut ev, t, e.ktime_ns, None);
        ev.push("exe_md5", exe_md5);
        ev.push(
            "socket_process_exe_md5",
            sock_proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        // Kestrel's additions, beside the reference fields.
        ev.push("res", e.res.to_string());
        ev.push("argc", e.argc.to_string());
        ev.push("argv_truncated", bool_str(e.argv_truncated));
        ev.push("pid_tree_truncated", bool_str(e.pid_tree_truncated));
        ev.push("filename", filename);
        ev.push("euid", t.euid.to_string());
        ev.push("sid", t.sid.to_string());
        self.where_fields(&mut ev, t, Some(&e.cgroup));
        ev
    }

    fn connect(&mut self, c: &Connect) -> Event {
        let t = &c.task;
        let mut ev = Event::with_capacity(26);
        let proc = self.event_process(t);
        self.common_head(&mut ev, t, DATA_TYPE_CONNECT);
        ev.push("sa_family", c.addrs.family.to_string());
        ev.push("fd", c.fd.to_string());
        ev.push("dport", c.addrs.dport.to_string());
        ev.push("dip", c.addrs.dip.to_string());
        ev.push(
            "exe",
            proc.as_ref().map(|p| p.exe.clone()).unwrap_or_default(),
        );
        Self::ids(&mut ev, t);
        ev.push("sip", ip_or_empty(c.addrs.sip));
        ev.push("sport", c.addrs.sport.to_string());
        ev.push("res", c.res.to_string());
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, c.ktime_ns, Some(c.addrs.sip));
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        ev.push("euid", t.euid.to_string());
        self.where_fields(&mut ev, t, None);
        ev
    }
}

impl Enricher {
    /// A created file. `create_file_md5` is left empty: the content is
    /// hashed later, once the creator had time to write it (the agent's
    /// file hashing stage).
    fn file(&mut self, f: &FileCreate) -> Event {
        let t = &f.task;
        let proc = self.event_process(t);
        let mut ev = Event::with_capacity(32);
        self.common_head(&mut ev, t, DATA_TYPE_FILE);
        ev.push(
            "exe",
            proc.as_ref().map(|p| p.exe.clone()).unwrap_or_default(),
        );
        let path = lossless_string(&f.path);
        ev.push(
            "file_path",
            if f.path_truncated {
                format!("...{path}")
            } else {
                path
            },
        );
        Self::ids(&mut ev, t);
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, f.ktime_ns, None);
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        ev.push("create_file_md5", "");
        // Kestrel's additions.
        ev.push(
            "create_type",
            if f.tmpfile {
                "tmpfile"
            } else if f.mknod {
                "mknod"
            } else {
                "open"
            },
        );
        ev.push("mode", format!("{:o}", f.mode));
        ev.push("euid", t.euid.to_string());
        self.where_fields(&mut ev, t, None);
        ev
    }

    fn module(&mut self, m: &Module) -> Event {
        let t = &m.task;
        let proc = self.event_process(t);
        let lkm_file = lossless_string(&m.path);
        let (md5, name) = if lkm_file.is_empty() {
            (String::new(), String::new())
        } else {
            let path = Path::new(&lkm_file);
            (self.md5(path), module_name(path).unwrap_or_default())
        };
        let mut ev = Event::with_capacity(30);
        self.common_head(&mut ev, t, DATA_TYPE_MODULE);
        ev.push(
            "exe",
            proc.as_ref().map(|p| p.exe.clone()).unwrap_or_default(),
        );
        ev.push("lkm_file", lkm_file);
        Self::ids(&mut ev, t);
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, m.ktime_ns, None);
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        ev.push("load_file_md5", md5);
        // Kestrel's additions.
        ev.push("module_name", name);
        ev.push("res", m.res.to_string());
        ev.push(
            "syscall",
            if m.fd >= 0 {
                "finit_module"
            } else {
                "init_module"
            },
        );
        ev.push("flags", m.flags.to_string());
        ev.push("image_len", m.image_len.to_string());
        ev.push("euid", t.euid.to_string());
        self.where_fields(&mut ev, t, None);
        ev
    }

    fn cred(&mut self, c: &Cred) -> Option<Event> {
        let t = &c.task;
        let filename = lossless_string(&c.filename);
        const AT_EXEC: u32 = 1;
        if c.trigger == AT_EXEC && self.cfg.cred_allowlist.contains(&filename) {
            self.counters.cred_allowlisted += 1;
            return None;
        }
        let proc = self.event_process(t);
        let mut ev = Event::with_capacity(28);
        self.common_head(&mut ev, t, DATA_TYPE_CRED);
        ev.push(
            "exe",
            proc.as_ref()
                .map(|p| p.exe.clone())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| filename.clone()),
        );
        Self::ids(&mut ev, t);
        ev.push("old_uid", c.old_uid.to_string());
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, c.ktime_ns, None);
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        // Kestrel's additions.
        ev.push("old_euid", c.old_euid.to_string());
        ev.push("euid", t.euid.to_string());
        ev.push(
            "trigger",
            match c.trigger {
                1 => "exec",
                2 => "exec_failed",
                3 => "connect",
                4 => "ptrace",
                6 => "fork",
                7 => "exit",
                8 => "dup",
                _ => "",
            },
        );
        ev.push("filename", filename);
        self.where_fields(&mut ev, t, None);
        Some(ev)
    }

    fn dns(&mut self, d: &Dns) -> Event {
        let t = &d.task;
        let mut ev = Event::with_capacity(36);
        let proc = self.event_process(t);
        let msg = kestrel_decode::dns::parse(&d.payload);
        if msg.is_err() {
            self.counters.dns_malformed += 1;
        }
        self.common_head(&mut ev, t, DATA_TYPE_DNS);
        ev.push("sa_family", d.addrs.family.to_string());
        ev.push("fd", d.fd.to_string());
        ev.push("dport", d.addrs.dport.to_string());
        ev.push("dip", ip_or_empty(d.addrs.dip));
        ev.push(
            "exe",
            proc.as_ref().map(|p| p.exe.clone()).unwrap_or_default(),
        );
        Self::ids(&mut ev, t);
        ev.push("sip", ip_or_empty(d.addrs.sip));
        ev.push("sport", d.addrs.sport.to_string());
        let (qr, opcode, rcode, query, qtype) = match &msg {
            Ok(m) => (
                u8::from(m.qr).to_string(),
                m.opcode.to_string(),
                m.rcode.to_string(),
                m.query.clone(),
                m.qtype.to_string(),
            ),
            Err(_) => Default::default(),
        };
        ev.push("qr", qr);
        ev.push("opcode", opcode);
        ev.push("rcode", rcode);
        ev.push("query", query);
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, d.ktime_ns, Some(d.addrs.sip));
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        // Kestrel's additions.
        ev.push("qtype", qtype);
        ev.push(
            "malformed",
            msg.err().map(|e| e.to_string()).unwrap_or_default(),
        );
        ev.push("euid", t.euid.to_string());
        self.where_fields(&mut ev, t, None);
        ev
    }

    fn ptrace(&mut self, p: &Ptrace) -> Event {
        let t = &p.task;
        let mut ev = Event::with_capacity(30);
        let proc = self.event_process(t);
        self.common_head(&mut ev, t, DATA_TYPE_PTRACE);
        ev.push("ptrace_request", p.request.to_string());
        ev.push("target_pid", p.target_pid.to_string());
        // Zero-padded hex, as in the reference.
        ev.push("addr", format!("{:016x}", p.addr));
        ev.push("data", format!("{:016x}", p.data));
        ev.push(
            "exe",
            proc.as_ref().map(|p| p.exe.clone()).unwrap_or_default(),
        );
        Self::ids(&mut ev, t);
        ev.push("sessionid", t.sessionid.to_string());
        self.common_tail(&mut ev, t, p.ktime_ns, None);
        ev.push(
            "exe_md5",
            proc.map(|p| p.exe_md5.clone()).unwrap_or_default(),
        );
        ev.push("res", p.res.to_string());
        ev.push("euid", t.euid.to_string());
        self.where_fields(&mut ev, t, None);
        ev
    }
}

/// The module's name from its `.modinfo` strings ("name=foo"), read from
/// the first 64 MiB of an uncompressed .ko; `None` otherwise.
fn module_name(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 << 20)
        .read_to_end(&mut data)
        .ok()?;
    let at = data.windows(6).position(|w| w == b"\0name=")? + 6;
    let end = data[at..].iter().position(|&b| b == 0)?;
    Some(lossless_string(&data[at..at + end]))
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn ip_or_empty(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        String::new()
    } else {
        ip.to_string()
    }
}

/// The exec event's `dip dport sip sport sa_family`, in the reference's
/// order: remote end first (the peer behind the session).
fn push_addrs(ev: &mut Event, a: Option<&SockAddrs>) {
    match a {
        Some(a) => {
            ev.push("dip", ip_or_empty(a.dip));
            ev.push("dport", a.dport.to_string());
            ev.push("sip", ip_or_empty(a.sip));
            ev.push("sport", a.sport.to_string());
            ev.push("sa_family", a.family.to_string());
        }
        None => {
            for k in ["dip", "dport", "sip", "sport", "sa_family"] {
                ev.push(k, "");
            }
        }
    }
}

/// Arguments joined by spaces, as in the reference. `argc` and
/// `argv_truncated` beside it say whether all of them are here.
fn join_argv(argv: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&lossless_string(a));
    }
    s
}

/// `1(systemd)->1384(sshd)->...->PID(comm)`: root first, the process last.
fn pid_tree(e: &Exec) -> String {
    let mut s = String::new();
    for a in e.ancestors.iter().rev() {
        s.push_str(&format!("{}({})->", a.pid, lossless_string(&a.comm)));
    }
    s.push_str(&format!(
        "{}({})",
        e.task.tgid,
        lossless_string(&e.task.comm)
    ));
    s
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
    use kestrel_decode::{decode, raw};

    fn enricher() -> Enricher {
        Enricher::new(EnrichConfig::default())
    }

    #[test]
    fn exec_of_a_gone_process_still_gives_an_event() {
        // pid 0x7ffffff0 does not exist: everything from /proc is empty.
        let rec = raw::exec(
            raw::task(0x7fff_fff0, 1, 0, b"ghost"),
            b"/bin/sh",
            &[b"var", b"tmp"],
            &[b"kubepods.slice", b"kubepods-besteffort.slice", b"kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice", b"cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"],
            &[b"sh", b"-c", b"a b"],
            &[b"LD_PRELOAD=/evil.so"],
            &[(1, b"systemd"), (0x7fff_ff00, b"bash")],
        );
        let mut en = enricher();
        let ev = en.enrich(&decode(&rec).unwrap()).unwrap();
        assert_eq!(ev.get("data_type"), Some("59"));
        assert_eq!(ev.get("exe"), Some("/bin/sh"));
        assert_eq!(ev.get("argv"), Some("sh -c a b"));
        assert_eq!(ev.get("run_path"), Some("/var/tmp"));
        assert_eq!(ev.get("LD_PRELOAD"), Some("/evil.so"));
        assert_eq!(ev.get("SSH_CONNECTION"), Some(""));
        assert_eq!(
            ev.get("pid_tree"),
            Some("2147483392(bash)->1(systemd)->2147483632(ghost)")
        );
        assert_eq!(ev.get("user"), Some("root"));
        assert_eq!(en.counters().process_gone, 1);
        assert_eq!(ev.get("container_runtime"), Some("containerd"));
        assert_eq!(
            ev.get("pod_uid"),
            Some("1a2b3c4d-0000-1111-2222-333344445555")
        );
        assert_eq!(
            ev.get("container_id"),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        // Every value is a string and every reference field is present.
        for f in [
            "uid",
            "data_type",
            "run_path",
            "exe",
            "argv",
            "pid",
            "ppid",
            "pgid",
            "tgid",
            "comm",
            "nodename",
            "stdin",
            "stdout",
            "sessionid",
            "dip",
            "dport",
            "sip",
            "sport",
            "sa_family",
            "pid_tree",
            "tty_name",
            "socket_process_pid",
            "socket_process_exe",
            "SSH_CONNECTION",
            "LD_PRELOAD",
            "user",
            "time",
            "local_ip",
            "hostname",
            "exe_md5",
            "socket_process_exe_md5",
        ] {
            assert!(ev.get(f).is_some(), "missing {f}");
        }
    }

    #[test]
    fn connect_fields() {
        let rec = raw::connect(raw::task(0x7fff_fff1, 1, 0, b"curl"), 0, [10, 1, 2, 3], 80);
        let ev = enricher().enrich(&decode(&rec).unwrap()).unwrap();
        assert_eq!(ev.get("data_type"), Some("42"));
        assert_eq!(ev.get("dip"), Some("10.1.2.3"));
        assert_eq!(ev.get("dport"), Some("80"));
        assert_eq!(ev.get("sip"), Some("127.0.0.1"));
        assert_eq!(ev.get("sport"), Some("40000"));
        assert_eq!(ev.get("sa_family"), Some("2"));
        assert_eq!(ev.get("res"), Some("0"));
    }

    #[test]
    fn relative_paths() {
        assert_eq!(absolute("x", "/tmp").as_deref(), Some("/tmp/x"));
        assert_eq!(absolute("/bin/x", "").as_deref(), Some("/bin/x"));
        assert_eq!(absolute("x", ""), None);
    }
}
