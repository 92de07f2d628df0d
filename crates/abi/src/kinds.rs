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
}

impl Program {
    /// Whether its hook is a syscall tracepoint (`tracepoint/syscalls/...`).
    /// Attaching any one of them makes the kernel send every syscall of
    /// every task through its slow path (SYSCALL_WORK_SYSCALL_TRACEPOINT),
    /// which `--syscall-tracepoints off` exists to avoid.
    pub fn is_syscall_tracepoint(&self) -> bool {
        self.hook.starts_with("tracepoint/syscalls/")
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
        let Some(row) = programs().find(|t| t.name == name) else {
            return Err(format!(
                "the object has a program {name} that the table does not list \
                 (KESTREL_KINDS in kestrel_abi.h)"
            ));
        };
        if section != row.hook {
            return Err(format!(
                "program {name} is in section {section}, the table says {}",
                row.hook
            ));
        }
        seen.push(name.to_string());
    }
    if let Some(missing) = programs().find(|t| !seen.iter().any(|s| s == t.name)) {
        return Err(format!(
            "the table lists program {}, which the object lacks (no \
             SEC(\"{}\") function of that name in crates/probes/bpf/*.bpf.c)",
            missing.name, missing.hook
        ));
    }
    Ok(())
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
