//! The table of record kinds: for each kind, its name, its `data_type`
//! codes and the BPF programs that make its records. Declared once, as
//! `KESTREL_KINDS` in `include/kestrel_abi.h` beside the records; the build
//! (crates/abi/build.rs) writes [`Kind`], its rows and [`STATE_PROGRAMS`]
//! from it, and [`for_each_kind!`](crate::for_each_kind) for the crates
//! that have one module per kind.
//!
//! Everything that lists kinds or programs (loading and attaching, the
//! kernel counters and their totals, the metrics, docs/events.md) iterates
//! this table rather than keeping its own list. The agent's `counters` log
//! line, whose field names are fixed in its source, is checked against it
//! by crates/kestrel/tests/loss.rs.

use crate::KESTREL_KIND_MAX;

include!(concat!(env!("OUT_DIR"), "/kinds.rs"));

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
    /// The same program built for other backends (lib/syscall.h): a
    /// syscall tracepoint's program has an fentry and a kprobe twin on the
    /// syscall's function; any other program has none.
    pub alternatives: &'static [Alternative],
}

/// How a syscall hook is attached: the loader picks one per hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// fentry/fexit: a BPF trampoline on the syscall's function. Costs
    /// only that syscall (Linux 5.5+, and a kernel that allows it).
    Fentry,
    /// kprobe/kretprobe on the syscall's function. Costs only that
    /// syscall, more than fentry (an int3 or ftrace hop and pt_regs).
    Kprobe,
    /// The syscall tracepoint the table names. Costs every syscall of the
    /// host (SYSCALL_WORK_SYSCALL_TRACEPOINT), but every kernel has it.
    Tracepoint,
}

impl Backend {
    /// In the order the loader tries them.
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    /// Its name in logs, metrics, the heartbeat and `--hook-backend`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A program's twin for another [`Backend`].
#[derive(Debug, PartialEq, Eq)]
pub struct Alternative {
    /// fentry or kprobe.
    pub backend: Backend,
    /// Its function name: `fe_` or `kp_` where the tracepoint's is `handle_`.
    pub name: &'static str,
    /// Its `SEC()`: `fentry/`, `fexit/`, `kprobe/` or `kretprobe/` and the
    /// function.
    pub hook: &'static str,
    /// The kernel function it is attached to (`__x64_sys_<syscall>`).
    pub function: &'static str,
}

impl Program {
    /// Whether its hook is a syscall tracepoint (`tracepoint/syscalls/...`).
    /// Attaching any one of them makes the kernel send every syscall of
    /// every task through its slow path (SYSCALL_WORK_SYSCALL_TRACEPOINT),
    /// which `--syscall-tracepoints off` exists to avoid.
    pub fn is_syscall_tracepoint(&self) -> bool {
        self.hook.starts_with("tracepoint/syscalls/")
    }

    /// Its name, section and function on `backend`; for
    /// [`Backend::Tracepoint`] its own name and hook (no function). `None`
    /// when it has no twin for that backend (a tp_btf program).
    pub fn on(&self, backend: Backend) -> Option<(&'static str, &'static str, &'static str)> {
        match backend {
            Backend::Tracepoint => Some((self.name, self.hook, "")),
            b => self
                .alternatives
                .iter()
                .find(|a| a.backend == b)
                .map(|a| (a.name, a.hook, a.function)),
        }
    }

    /// Every name this program has in the object, its own first.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.alternatives.iter().map(|a| a.name))
    }
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

impl Kind {
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
        &TABLE[self.index()]
    }
}

/// Every program Kestrel attaches: each kind's, in table order, then the
/// [`STATE_PROGRAMS`].
pub fn programs() -> impl Iterator<Item = &'static Program> {
    Kind::ALL
        .iter()
        .flat_map(|k| k.spec().programs)
        .chain(STATE_PROGRAMS)
}

/// Compares a BPF object's programs, as (function name, section), with
/// the table: the table is what everything else iterates, so a program it
/// misses would never be attached, and one it lists but the object lacks
/// would fail to attach. Run when crates/probes builds the object and
/// again before it is loaded.
pub fn check_object_programs<N, S>(object: impl IntoIterator<Item = (N, S)>) -> Result<(), String>
where
    N: AsRef<str>,
    S: AsRef<str>,
{
    let mut seen = Vec::new();
    for (name, section) in object {
        let (name, section) = (name.as_ref(), section.as_ref());
        let Some(hook) = every_name().find(|(n, _)| *n == name).map(|(_, h)| h) else {
            return Err(format!(
                "the object has a program {name} that the table does not list \
                 (KESTREL_KINDS in kestrel_abi.h)"
            ));
        };
        if section != hook {
            return Err(format!(
                "program {name} is in section {section}, the table says {hook}"
            ));
        }
        seen.push(name.to_string());
    }
    if let Some((name, hook)) = every_name().find(|(n, _)| !seen.iter().any(|s| s == n)) {
        return Err(format!(
            "the table lists program {name}, which the object lacks (no \
             SEC(\"{hook}\") function of that name in crates/probes/bpf/*.bpf.c; \
             a syscall's fe_ and kp_ twins come from KESTREL_SYSCALL_ENTER/EXIT in \
             lib/syscall.h)"
        ));
    }
    Ok(())
}

/// Every program name of the object with its section: the table's
/// programs and their twins.
fn every_name() -> impl Iterator<Item = (&'static str, &'static str)> {
    programs().flat_map(|p| {
        std::iter::once((p.name, p.hook)).chain(p.alternatives.iter().map(|a| (a.name, a.hook)))
    })
}

// The table is what the header made: `ALL[i]` is kind `i + 1` and every
// row names its own kind.
const _: () = {
    assert!(Kind::ALL.len() == KESTREL_KIND_MAX as usize - 1);
    let mut i = 0;
    while i < Kind::ALL.len() {
        let k = Kind::ALL[i];
        assert!(k as usize == i + 1 && TABLE[i].kind as u16 == k as u16);
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
    fn syscall_tracepoints_are_told_by_their_section() {
        let find = |n: &str| programs().find(|p| p.name == n).unwrap();
        assert!(find("handle_execve_exit").is_syscall_tracepoint());
        assert!(find("handle_fchmodat2_exit").is_syscall_tracepoint());
        assert!(!find("handle_exec").is_syscall_tracepoint());
        assert!(!find("handle_sock_state").is_syscall_tracepoint());
        // Lean mode keeps what is left: the process table and exec.
        assert!(programs().any(|p| !p.is_syscall_tracepoint()));
    }

    #[test]
    fn every_syscall_tracepoint_has_an_fentry_and_a_kprobe_twin() {
        for p in programs() {
            let fe = p.on(Backend::Fentry);
            let kp = p.on(Backend::Kprobe);
            if !p.is_syscall_tracepoint() {
                assert!(fe.is_none() && kp.is_none(), "{}", p.name);
                continue;
            }
            let (sys, edge) = p.hook["tracepoint/syscalls/sys_".len()..]
                .split_once('_')
                .map(|(e, s)| (s, e))
                .unwrap();
            let func = format!("__x64_sys_{sys}");
            let (fname, fhook, ffn) = fe.unwrap();
            let (kname, khook, kfn) = kp.unwrap();
            let ffunc = if sys == "setsid" {
                "__do_sys_setsid".to_string()
            } else {
                func.clone()
            };
            assert_eq!((ffn, kfn), (ffunc.as_str(), func.as_str()));
            assert_eq!(fname, format!("fe_{sys}_{edge}"));
            assert_eq!(kname, format!("kp_{sys}_{edge}"));
            let (f, k) = if edge == "exit" {
                ("fexit", "kretprobe")
            } else {
                ("fentry", "kprobe")
            };
            assert_eq!(fhook, format!("{f}/{ffunc}"));
            assert_eq!(khook, format!("{k}/{func}"));
        }
        let exec = programs().find(|p| p.name == "handle_execve_exit").unwrap();
        assert_eq!(
            exec.on(Backend::Fentry).unwrap().1,
            "fexit/__x64_sys_execve"
        );
    }

    #[test]
    fn names_and_programs_are_unique() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        let mut progs: Vec<_> = programs().flat_map(|p| p.names()).collect();
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
