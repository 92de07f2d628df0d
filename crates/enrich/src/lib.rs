//! Turns decoded kernel records into reference-format events.
//!
//! The kernel side already captured what cannot wait (ids, names, argv,
//! environment, the process tree, the socket behind the session). This
//! stage adds what only user space can see cheaply: executable paths and
//! their MD5, working directory, stdin/stdout targets, user names,
//! containers and host facts. A process that exited before it could be
//! looked at still gives its event, with those fields empty, and is counted.
//!
//! The flow reads in the module tree: `lookup` holds the sources, each
//! with its bounded cache; `context` looks up once per event what the
//! event needs from them; `render` writes each kind's fields from the
//! record and that context; `filehash` hashes created files' content once
//! their creator had time to write it.

mod budget;
mod context;
mod filehash;
mod lookup;
mod render;

use std::path::PathBuf;

use kestrel_decode::Record;
use kestrel_event::{Event, Host};

use context::Lookups;

pub use filehash::{FileHashConfig, FileHashCounters, FileHasher, HashSkip};
pub use lookup::container::Container;
pub use lookup::hash::{HashMiss, Md5Cache};
pub use lookup::runtime::{ContainerNames, NameResolver, RuntimeCounters, RuntimeSockets};
pub use lookup::users::Users;
pub use lookup::{container, cri, runtime};

/// Settings of the enrichment stage.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    /// Executables larger than this are not hashed (`exe_md5` is empty).
    pub exe_md5_max_bytes: u64,
    /// Bytes of executables not yet in the hash cache read per second
    /// (at least `exe_md5_max_bytes`); past it, `exe_md5` is empty.
    pub exe_md5_bytes_per_sec: u64,
    /// Time the collecting thread may spend hashing executables per second.
    pub exe_md5_time_per_sec: std::time::Duration,
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
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            exe_md5_max_bytes: 64 << 20,
            exe_md5_bytes_per_sec: 64 << 20,
            exe_md5_time_per_sec: std::time::Duration::from_millis(500),
            process_cache_entries: 16384,
            hash_cache_entries: 4096,
            container_cache_entries: 4096,
            proc_root: PathBuf::from("/proc"),
            passwd: PathBuf::from("/etc/passwd"),
            runtime_sockets: RuntimeSockets::default(),
        }
    }
}

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
    /// Executables not hashed because the file at hand was not the one
    /// the kernel executed (replaced, or changed since the exec).
    pub md5_changed: u64,
    /// Executables not hashed because the second's budget was spent.
    pub md5_budget: u64,
    /// Exec events whose parent's argv and exe were unknown (`ppid_argv`
    /// and `parent_exe` empty): the parent's exec was not seen (or left
    /// the cache) and it was gone from /proc.
    pub parent_unknown: u64,
    /// Exec events whose process group leader's argv was unknown
    /// (`pgid_argv` empty).
    pub pgid_unknown: u64,
    /// DNS datagrams that did not parse (still emitted, with the
    /// question fields empty).
    pub dns_malformed: u64,
}

/// The enrichment stage. Not thread-safe by design: one pipeline thread
/// owns it, so its caches need no locks.
pub struct Enricher {
    cfg: EnrichConfig,
    host: Host,
    lookups: Lookups,
    dns_malformed: u64,
}

impl Enricher {
    /// A new stage with empty caches.
    pub fn new(cfg: EnrichConfig) -> Self {
        Enricher {
            host: Host::new(),
            lookups: Lookups::new(&cfg),
            dns_malformed: 0,
            cfg,
        }
    }

    /// Counters since start.
    pub fn counters(&self) -> EnrichCounters {
        let m = self.lookups.processes.misses;
        EnrichCounters {
            process_gone: m.process_gone,
            md5_too_large: m.md5_too_large,
            md5_unreadable: m.md5_unreadable,
            md5_changed: m.md5_changed,
            md5_budget: m.md5_budget,
            parent_unknown: m.parent_unknown,
            pgid_unknown: m.pgid_unknown,
            dns_malformed: self.dns_malformed,
        }
    }

    /// Container runtime lookup counters.
    pub fn runtime_counters(&self) -> &RuntimeCounters {
        self.lookups.names.counters()
    }

    /// The settings in use.
    pub fn config(&self) -> &EnrichConfig {
        &self.cfg
    }

    /// Turns one record into its event: its context looked up, then its
    /// kind's renderer. Every record kind gives an event; dropping one is
    /// policy, later in the pipeline.
    pub fn enrich(&mut self, rec: &Record) -> Option<Event> {
        self.host.maybe_refresh();
        if let Record::Dns(d) = rec {
            if d.message.is_err() {
                self.dns_malformed += 1;
            }
        }
        Some(render::event(rec, &mut self.lookups, &self.host))
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
    fn a_root_shell_by_an_expected_program_is_still_rendered() {
        let rec = raw::cred(
            raw::task(0x7fff_fff2, 1, 0, b"sudo"),
            1000,
            1000,
            1,
            b"/usr/bin/sudo",
        );
        let ev = enricher().enrich(&decode(&rec).unwrap()).unwrap();
        assert_eq!(ev.get("data_type"), Some("604"));
        assert_eq!(ev.get("trigger"), Some("exec"));
        assert_eq!(ev.get("filename"), Some("/usr/bin/sudo"));
    }
}
