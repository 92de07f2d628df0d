//! /proc/kallsyms: symbols, their owners, and the kernel's text ranges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

/// Lowest kernel-space address on x86-64.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// One /proc/kallsyms line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sym {
    /// Address.
    pub addr: u64,
    /// Type letter (`T`, `t`, `D`, ...).
    pub kind: char,
    /// Name.
    pub name: String,
    /// Owning module for module symbols (`[name]` on the line).
    pub module: Option<String>,
}

/// The kernel's symbol map, sorted by address.
#[derive(Debug, Default)]
pub struct Symbols {
    sorted: Vec<Sym>,
    /// Core-kernel symbols by name (first wins: duplicates of local
    /// symbols exist, the checked ones are unique).
    core: HashMap<String, u64>,
}

impl Symbols {
    /// Parses /proc/kallsyms text; malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut sorted = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(a), Some(k), Some(n)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(a, 16) else {
                continue;
            };
            let module = it
                .next()
                .and_then(|m| m.strip_prefix('[').and_then(|m| m.strip_suffix(']')))
                .map(str::to_string);
            sorted.push(Sym {
                addr,
                kind: k.chars().next().unwrap_or('?'),
                name: n.to_string(),
                module,
            });
        }
        sorted.sort_by_key(|s| s.addr);
        let mut core = HashMap::new();
        for s in &sorted {
            if s.module.is_none() {
                core.entry(s.name.clone()).or_insert(s.addr);
            }
        }
        Symbols { sorted, core }
    }

    /// True when every address is zero (kptr_restrict hides them).
    pub fn addresses_hidden(&self) -> bool {
        self.sorted.iter().all(|s| s.addr == 0)
    }

    /// Address of a core-kernel symbol.
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.core.get(name).copied()
    }

    /// Bytes from `name` to the next symbol at a higher address: the size
    /// of a function, or an upper bound for a data object.
    pub fn extent(&self, name: &str) -> Option<u64> {
        let a = self.addr(name)?;
        let i = self.sorted.partition_point(|s| s.addr <= a);
        self.sorted.get(i).map(|s| s.addr - a)
    }

    /// All symbols at exactly `addr`.
    pub fn exact(&self, addr: u64) -> &[Sym] {
        let lo = self.sorted.partition_point(|s| s.addr < addr);
        let hi = self.sorted.partition_point(|s| s.addr <= addr);
        &self.sorted[lo..hi]
    }

    /// The symbol containing `addr` (the last one at or below it) and the
    /// offset into it.
    pub fn containing(&self, addr: u64) -> Option<(&Sym, u64)> {
        let i = self.sorted.partition_point(|s| s.addr <= addr);
        let s = self.sorted.get(i.checked_sub(1)?)?;
        Some((s, addr - s.addr))
    }

    /// `name+0xoff [module]` for a report, or the bare address.
    pub fn describe(&self, addr: u64) -> String {
        // Per-cpu symbols sit at small offsets: never name a non-kernel
        // address after them.
        if addr < KERNEL_HALF {
            return format!("{addr:#x}");
        }
        match self.containing(addr) {
            Some((s, off)) if off < 1 << 20 => match &s.module {
                Some(m) => format!("{}+{off:#x} [{m}]", s.name),
                None => format!("{}+{off:#x}", s.name),
            },
            _ => format!("{addr:#x}"),
        }
    }

    /// Names of the modules that own symbols.
    pub fn module_names(&self) -> BTreeSet<String> {
        self.sorted
            .iter()
            .filter_map(|s| s.module.clone())
            .filter(|m| !is_pseudo_module(m))
            .collect()
    }

    /// Lowest and highest symbol address of each module: a lower bound of
    /// its text for modules listed nowhere else.
    pub fn module_spans(&self) -> BTreeMap<String, Range<u64>> {
        let mut out: BTreeMap<String, Range<u64>> = BTreeMap::new();
        for s in &self.sorted {
            if let Some(m) = s.module.as_ref().filter(|m| !is_pseudo_module(m)) {
                let r = out.entry(m.clone()).or_insert(s.addr..s.addr + 1);
                r.start = r.start.min(s.addr);
                r.end = r.end.max(s.addr + 1);
            }
        }
        out
    }
}

/// kallsyms tags that are not modules: JIT-ed BPF programs (`[bpf]`),
/// ftrace and kprobe trampolines (`[__builtin__ftrace]`, ...).
pub fn is_pseudo_module(name: &str) -> bool {
    name == "bpf" || name.starts_with("__builtin__")
}

/// The kernel's init text (`_sinittext`..`_einittext`): freed after boot,
/// but the early IDT handlers of never-used vectors still point there.
pub fn init_text(syms: &Symbols) -> Option<Range<u64>> {
    let (s, e) = (syms.addr("_sinittext")?, syms.addr("_einittext")?);
    (s < e).then_some(s..e)
}

/// The core kernel's text: `_stext`..`_etext`.
pub fn core_text(syms: &Symbols) -> Option<Range<u64>> {
    let (s, e) = (syms.addr("_stext")?, syms.addr("_etext")?);
    (s < e).then_some(s..e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::*;

    #[test]
    fn kallsyms_lookups() {
        let s = syms();
        assert_eq!(s.addr("x64_sys_call"), Some(0xffffffff81100000));
        assert_eq!(s.addr("rk_hook"), None, "module symbols are not core");
        assert_eq!(s.extent("sys_call_table"), Some(0x1000));
        assert_eq!(s.describe(0xffffffffc0000010), "rk_hook+0x10 [rk]");
        assert_eq!(core_text(&s), Some(0xffffffff81000000..0xffffffff82000000));
        assert_eq!(
            s.module_names().into_iter().collect::<Vec<_>>(),
            ["ext4", "rk"],
            "BPF programs and trampolines are not modules"
        );
        assert_eq!(s.module_spans().len(), 2);
        assert!(!s.addresses_hidden());
        assert!(Symbols::parse("0000000000000000 T _stext\n").addresses_hidden());
    }
}
