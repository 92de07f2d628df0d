//! The table of record kinds: for each `enum kestrel_kind` of the header,
//! its name, its `data_type` codes and the BPF programs that make its
//! records. Written by hand, and tied to the header at compile time: a kind
//! added to the header without a row here does not build.
//!
//! Everything that lists kinds or programs (loading and attaching, the
//! kernel counters and their totals, the metrics, docs/events.md) iterates
//! this table rather than keeping its own list. The agent's `counters` log
//! line, whose field names are fixed in its source, is checked against it
//! by crates/kestrel/tests/loss.rs.

use crate::{
    KESTREL_KIND_CONNECT, KESTREL_KIND_CRED, KESTREL_KIND_DNS, KESTREL_KIND_EXEC,
    KESTREL_KIND_FILE, KESTREL_KIND_MAX, KESTREL_KIND_MODULE, KESTREL_KIND_PTRACE,
};

/// A kind of record, as `kestrel_header.kind` carries it.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A successful or failed exec.
    Exec = KESTREL_KIND_EXEC as u16,
    /// connect(2) on an inet socket.
    Connect = KESTREL_KIND_CONNECT as u16,
    /// ptrace(2) aimed at another process.
    Ptrace = KESTREL_KIND_PTRACE as u16,
    /// A DNS answer received.
    Dns = KESTREL_KIND_DNS as u16,
    /// A uid or euid that became 0.
    Cred = KESTREL_KIND_CRED as u16,
    /// A kernel module load.
    Module = KESTREL_KIND_MODULE as u16,
    /// A file created.
    File = KESTREL_KIND_FILE as u16,
}

/// What a kind is and where its records come from.
#[derive(Debug)]
pub struct KindSpec {
    /// The kind.
    pub kind: Kind,
    /// Its name: the prefix of its counters (`<name>_submitted`,
    /// `<name>_lost`) and its label in metrics.
    pub name: &'static str,
    /// The `data_type` of the events made from its records.
    pub data_types: &'static [&'static str],
    /// The programs whose own records these are.
    pub programs: &'static [Program],
    /// The programs of other kinds or of [`STATE_PROGRAMS`] that make
    /// records of this kind too.
    pub also_made_by: &'static [&'static str],
}

/// A BPF program, by its name in bpf/*.bpf.c.
#[derive(Debug, PartialEq, Eq)]
pub struct Program {
    /// Its function name (the kernel keeps the first 15 bytes).
    pub name: &'static str,
    /// Its `SEC()`: how libbpf attaches it.
    pub hook: &'static str,
    /// `None` when every supported kernel has its hook.
    pub requires: Option<Requirement>,
}

/// A hook some supported kernels lack: the program is left out there, and
/// said to be.
#[derive(Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The event under tracefs' `events/` that must exist.
    pub tracefs_event: &'static str,
    /// What is not seen without it.
    pub without: &'static str,
}

/// A row of a program list. Written as a literal so that the table's
/// slices are constants (a `const fn` call would not be).
macro_rules! program {
    ($name:literal, $hook:literal) => {
        Program {
            name: $name,
            hook: $hook,
            requires: None,
        }
    };
    // Kernels built without module support have no module syscalls.
    ($name:literal, $hook:literal, needs_modules $event:literal) => {
        Program {
            name: $name,
            hook: $hook,
            requires: Some(Requirement {
                tracefs_event: $event,
                without: "built without the feature it watches",
            }),
        }
    };
}

impl Kind {
    /// Every kind, in the header's order (`ALL[i]` is `i + 1`).
    pub const ALL: [Kind; 7] = [
        Kind::Exec,
        Kind::Connect,
        Kind::Ptrace,
        Kind::Dns,
        Kind::Cred,
        Kind::Module,
        Kind::File,
    ];

    /// The kind a record header names, if it is one.
    pub const fn from_raw(raw: u16) -> Option<Kind> {
        let i = raw.wrapping_sub(1) as usize;
        if i < Kind::ALL.len() {
            Some(Kind::ALL[i])
        } else {
            None
        }
    }

    /// Its position in [`Kind::ALL`].
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// Its name (see [`KindSpec::name`]).
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its row of the table.
    pub const fn spec(self) -> &'static KindSpec {
        match self {
            Kind::Exec => &KindSpec {
                kind: Kind::Exec,
                name: "exec",
                data_types: &["59"],
                programs: &[
                    program!("handle_exec", "tp_btf/sched_process_exec"),
                    program!("handle_execve_exit", "tracepoint/syscalls/sys_exit_execve"),
                    program!(
                        "handle_execveat_exit",
                        "tracepoint/syscalls/sys_exit_execveat"
                    ),
                ],
                also_made_by: &[],
            },
            Kind::Connect => &KindSpec {
                kind: Kind::Connect,
                name: "connect",
                data_types: &["42"],
                programs: &[
                    program!(
                        "handle_connect_exit",
                        "tracepoint/syscalls/sys_exit_connect"
                    ),
                    program!("handle_sendto_exit", "tracepoint/syscalls/sys_exit_sendto"),
                    program!(
                        "handle_sendmsg_exit",
                        "tracepoint/syscalls/sys_exit_sendmsg"
                    ),
                    program!(
                        "handle_sendmmsg_exit",
                        "tracepoint/syscalls/sys_exit_sendmmsg"
                    ),
                ],
                also_made_by: &[],
            },
            Kind::Ptrace => &KindSpec {
                kind: Kind::Ptrace,
                name: "ptrace",
                data_types: &["101"],
                programs: &[program!(
                    "handle_ptrace_exit",
                    "tracepoint/syscalls/sys_exit_ptrace"
                )],
                also_made_by: &[],
            },
            Kind::Dns => &KindSpec {
                kind: Kind::Dns,
                name: "dns",
                data_types: &["601"],
                programs: &[
                    program!(
                        "handle_recvfrom_exit",
                        "tracepoint/syscalls/sys_exit_recvfrom"
                    ),
                    program!(
                        "handle_recvmsg_exit",
                        "tracepoint/syscalls/sys_exit_recvmsg"
                    ),
                    program!(
                        "handle_recvmmsg_exit",
                        "tracepoint/syscalls/sys_exit_recvmmsg"
                    ),
                    Program {
                        name: "handle_sock_recv",
                        hook: "tp_btf/sock_recv_length",
                        requires: Some(Requirement {
                            tracefs_event: "sock/sock_recv_length",
                            without: "added in Linux 6.3: DNS answers taken with read(2) or \
                                      readv(2), as Go's resolver does, are not seen",
                        }),
                    },
                ],
                also_made_by: &[],
            },
            Kind::Cred => &KindSpec {
                kind: Kind::Cred,
                name: "cred",
                data_types: &["604"],
                programs: &[],
                // Each compares the process's uid and euid with those last
                // seen (kestrel_cred.trigger says which one noticed).
                also_made_by: &[
                    "handle_exec",
                    "handle_execve_exit",
                    "handle_execveat_exit",
                    "handle_connect_exit",
                    "handle_ptrace_exit",
                    "handle_fork",
                    "handle_exit",
                    "handle_dup_exit",
                    "handle_dup2_exit",
                    "handle_dup3_exit",
                ],
            },
            Kind::Module => &KindSpec {
                kind: Kind::Module,
                name: "module",
                data_types: &["603"],
                programs: &[
                    program!("handle_finit_module_exit", "tracepoint/syscalls/sys_exit_finit_module", needs_modules "syscalls/sys_exit_finit_module"),
                    program!("handle_init_module_exit", "tracepoint/syscalls/sys_exit_init_module", needs_modules "syscalls/sys_exit_init_module"),
                ],
                also_made_by: &[],
            },
            Kind::File => &KindSpec {
                kind: Kind::File,
                name: "file",
                data_types: &["602"],
                programs: &[
                    program!("handle_openat_exit", "tracepoint/syscalls/sys_exit_openat"),
                    program!("handle_open_exit", "tracepoint/syscalls/sys_exit_open"),
                    program!("handle_creat_exit", "tracepoint/syscalls/sys_exit_creat"),
                    program!(
                        "handle_openat2_exit",
                        "tracepoint/syscalls/sys_exit_openat2"
                    ),
                    program!(
                        "handle_mknodat_exit",
                        "tracepoint/syscalls/sys_exit_mknodat"
                    ),
                    program!("handle_mknod_exit", "tracepoint/syscalls/sys_exit_mknod"),
                    program!("handle_linkat_exit", "tracepoint/syscalls/sys_exit_linkat"),
                ],
                also_made_by: &[],
            },
        }
    }
}

/// Programs that make no records of their own: they keep the state other
/// programs read (the process table, the refused-connection map), and some
/// notice credential changes (see [`Kind::Cred`]'s `also_made_by`).
pub const STATE_PROGRAMS: &[Program] = &[
    // The local end of a refused connect, released before connect returns.
    program!("handle_sock_state", "tp_btf/inet_sock_set_state"),
    // The process table: made at fork, credentials checked at exit.
    program!("handle_fork", "tp_btf/sched_process_fork"),
    program!("handle_exit", "tp_btf/sched_process_exit"),
    // The namespace and cgroup caches of the process table.
    program!(
        "handle_unshare_exit",
        "tracepoint/syscalls/sys_exit_unshare"
    ),
    program!("handle_setns_exit", "tracepoint/syscalls/sys_exit_setns"),
    program!("handle_cgroup_attach", "tp_btf/cgroup_attach_task"),
    // Whether stdin or stdout is a socket, for exec records.
    program!("handle_dup_exit", "tracepoint/syscalls/sys_exit_dup"),
    program!("handle_dup2_exit", "tracepoint/syscalls/sys_exit_dup2"),
    program!("handle_dup3_exit", "tracepoint/syscalls/sys_exit_dup3"),
];

/// Every program Kestrel attaches: each kind's, in table order, then the
/// [`STATE_PROGRAMS`].
pub fn programs() -> impl Iterator<Item = &'static Program> {
    Kind::ALL
        .iter()
        .flat_map(|k| k.spec().programs)
        .chain(STATE_PROGRAMS)
}

// The table covers the header's kinds exactly, in its order: a kind added
// to `enum kestrel_kind` (and KESTREL_KIND_MAX moved) without its row, or a
// row out of place, stops the build here.
const _: () = {
    assert!(
        Kind::ALL.len() == KESTREL_KIND_MAX as usize - 1,
        "enum kestrel_kind and Kind::ALL differ: add the kind's row to crates/abi/src/kinds.rs"
    );
    let mut i = 0;
    while i < Kind::ALL.len() {
        let k = Kind::ALL[i];
        assert!(
            k as usize == i + 1,
            "Kind::ALL must list the kinds in header order"
        );
        assert!(
            k.spec().kind as u16 == k as u16,
            "a row of the table names another kind"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_raw(k as u16), Some(k));
            assert_eq!(Kind::ALL[k.index()], k);
        }
        assert_eq!(Kind::from_raw(0), None);
        assert_eq!(Kind::from_raw(KESTREL_KIND_MAX as u16), None);
    }

    #[test]
    fn names_and_programs_are_unique() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        let mut progs: Vec<_> = programs().map(|p| p.name).collect();
        let n = progs.len();
        progs.sort();
        progs.dedup();
        assert_eq!(progs.len(), n, "a program is listed twice");
        for k in Kind::ALL {
            for p in k.spec().also_made_by {
                assert!(progs.contains(p), "{}: no program {p}", k.name());
            }
        }
    }
}
