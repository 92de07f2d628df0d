//! The anti-rootkit decisions, as pure functions over tables read from the
//! kernel and symbol maps read from /proc/kallsyms. Nothing here touches
//! the running kernel, so every rule is unit tested with synthetic input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

/// Fixed address of the read-only IDT alias in the cpu_entry_area on
/// x86-64 (CPU_ENTRY_AREA_RO_IDT): usable when `idt_table` is not listed.
pub const CEA_RO_IDT: u64 = 0xfffffe00_00000000;
/// Lowest kernel-space address on x86-64.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// Gates in the IDT.
pub const IDT_ENTRIES: usize = 256;
/// Bytes of one 64-bit gate descriptor.
pub const GATE_SIZE: usize = 16;

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

/// What each view of the kernel says about one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    /// Module name.
    pub name: String,
    /// Listed in /proc/modules (the `modules` list).
    pub listed: bool,
    /// Has a loaded-module kobject under /sys/module (an `initstate` file).
    pub sysfs: bool,
    /// Owns symbols in /proc/kallsyms.
    pub kallsyms: bool,
    /// In the module address tree (`mod_tree`).
    pub mod_tree: bool,
    /// Address ranges known to belong to it.
    pub ranges: Vec<Range<u64>>,
}

impl Module {
    /// Missing from the module list while another view shows it.
    pub fn hidden(&self) -> bool {
        !self.listed
    }

    /// The views that show it, for reports.
    pub fn views(&self) -> String {
        let mut v = Vec::new();
        if self.listed {
            v.push("proc_modules");
        }
        if self.sysfs {
            v.push("sysfs");
        }
        if self.kallsyms {
            v.push("kallsyms");
        }
        if self.mod_tree {
            v.push("mod_tree");
        }
        v.join(",")
    }
}

/// All modules seen by any view.
#[derive(Debug, Default)]
pub struct Modules {
    /// By name.
    pub by_name: BTreeMap<String, Module>,
    /// False on a kernel built without module support.
    pub supported: bool,
    /// What became of the module address tree view.
    pub tree: TreeView,
}

/// The module address tree view of one scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum TreeView {
    /// The kernel has no module address tree.
    #[default]
    Absent,
    /// Walked: this many nodes.
    Walked(usize),
    /// Could not be read (why).
    Failed(String),
}

impl Modules {
    /// Entry for `name`, created empty.
    pub fn entry(&mut self, name: &str) -> &mut Module {
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| Module {
                name: name.to_string(),
                ..Module::default()
            })
    }

    /// The module whose memory holds `addr`.
    pub fn owner(&self, addr: u64) -> Option<&Module> {
        self.by_name
            .values()
            .find(|m| m.ranges.iter().any(|r| r.contains(&addr)))
    }

    /// Modules some view shows but another misses: hidden from the list
    /// (listed=false) or from sysfs (a listed module without kobject).
    pub fn inconsistent(&self) -> Vec<&Module> {
        self.by_name
            .values()
            .filter(|m| !m.listed || !m.sysfs)
            .collect()
    }
}

/// Parses /proc/modules: `name size refs deps state address [taint]`.
/// Returns (name, address range).
pub fn parse_proc_modules(text: &str) -> Vec<(String, Range<u64>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.first()?.to_string();
            let size: u64 = f.get(1)?.parse().ok()?;
            let base = f
                .get(5)
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            Some((name, base..base + size))
        })
        .collect()
}

/// Who owns an address outside core kernel text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Module name, or "unknown" when no view knows the memory.
    pub module_name: String,
    /// The owner is missing from the module list (or unknown to all).
    pub hidden: bool,
}

/// Resolves `addr` to a module: by module memory ranges, then by the
/// nearest module symbol. Memory no view accounts for is "unknown" and
/// counted as hidden: something placed it there and hid from every list.
pub fn owner(addr: u64, modules: &Modules, syms: &Symbols) -> Owner {
    if let Some(m) = modules.owner(addr) {
        return Owner {
            module_name: m.name.clone(),
            hidden: m.hidden(),
        };
    }
    if let Some((s, off)) = syms.containing(addr) {
        if let (Some(m), true) = (&s.module, off < 1 << 20) {
            let hidden = modules.by_name.get(m).is_none_or(Module::hidden);
            return Owner {
                module_name: m.clone(),
                hidden,
            };
        }
    }
    Owner {
        module_name: "unknown".to_string(),
        hidden: true,
    }
}

/// Trailing zero words: the padding between a syscall table and the next
/// symbol (kallsyms gives no object sizes). A real entry is never zero.
pub fn trim_padding(entries: &mut Vec<u64>) {
    while entries.len() > 1 && entries.last() == Some(&0) {
        entries.pop();
    }
}

/// Indexes of a pointer table whose entries leave core kernel text.
pub fn stray_entries(entries: &[u64], text: &Range<u64>) -> Vec<(usize, u64)> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, a)| !text.contains(a))
        .map(|(i, a)| (i, *a))
        .collect()
}

/// One decoded interrupt gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Vector number.
    pub vector: usize,
    /// Handler address.
    pub handler: u64,
    /// The present bit.
    pub present: bool,
}

/// Decodes 64-bit IDT gate descriptors (Intel SDM vol. 3, 6.14.1).
pub fn decode_idt(raw: &[u8]) -> Vec<Gate> {
    raw.chunks_exact(GATE_SIZE)
        .take(IDT_ENTRIES)
        .enumerate()
        .map(|(vector, g)| {
            let lo = u64::from(u16::from_le_bytes([g[0], g[1]]));
            let mid = u64::from(u16::from_le_bytes([g[6], g[7]]));
            let hi = u64::from(u32::from_le_bytes([g[8], g[9], g[10], g[11]]));
            Gate {
                vector,
                handler: lo | mid << 16 | hi << 32,
                present: g[5] & 0x80 != 0,
            }
        })
        .collect()
}

/// Present gates whose handler is outside the kernel's own text (core
/// text, or init text where early boot handlers of reserved vectors stay).
pub fn stray_gates(gates: &[Gate], text: &Range<u64>, init: Option<&Range<u64>>) -> Vec<Gate> {
    gates
        .iter()
        .filter(|g| {
            g.present && !text.contains(&g.handler) && !init.is_some_and(|i| i.contains(&g.handler))
        })
        .copied()
        .collect()
}

/// Result of checking a syscall dispatch function's code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// Direct call/jmp targets that are the expected syscall functions.
    pub good: usize,
    /// Helpers the compiler calls (return/indirect thunks), not counted.
    pub helpers: usize,
    /// (instruction address, target) of every other outside target.
    pub bad: Vec<(u64, u64)>,
}

/// Compiler-emitted helpers a dispatch function may branch to.
fn is_helper(name: &str) -> bool {
    name.starts_with("__x86_return_thunk")
        || name.starts_with("__x86_indirect_")
        || name.starts_with("__SCT__")
        || name.starts_with("srso_")
        || name.starts_with("its_")
        || name.starts_with("retbleed_")
        || name.starts_with("entry_untrain_ret")
        || name == "__stack_chk_fail"
        || name.starts_with("__ubsan_")
        || name.starts_with("__fentry__")
}

/// Decodes the machine code of `x64_sys_call`/`ia32_sys_call` (loaded at
/// `base`) and checks every direct call/jmp leaving the function: it must
/// land exactly on a symbol named `prefix...` (`__x64_`, `__ia32_`). This
/// catches a patched call into a module ("FlipSwitch") and a call
/// redirected to any other kernel function.
pub fn check_dispatch(code: &[u8], base: u64, prefix: &str, syms: &Symbols) -> Dispatch {
    use iced_x86::{Decoder, DecoderOptions, OpKind};
    let mut out = Dispatch::default();
    let end = base + code.len() as u64;
    let mut dec = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    while dec.can_decode() {
        let insn = dec.decode();
        // Only direct near branches (call, jmp, jcc, loop) have this kind.
        if !matches!(insn.op0_kind(), OpKind::NearBranch64) {
            continue;
        }
        let target = insn.near_branch64();
        if (base..end).contains(&target) {
            continue;
        }
        let at = syms.exact(target);
        if at
            .iter()
            .any(|s| s.module.is_none() && s.name.starts_with(prefix))
        {
            out.good += 1;
        } else if at.iter().any(|s| s.module.is_none() && is_helper(&s.name)) {
            out.helpers += 1;
        } else {
            out.bad.push((insn.ip(), target));
        }
    }
    out
}

/// Where struct module keeps its memory areas (see [`ModLayout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModAreas {
    /// Linux 6.4+: `mem[count]`, `stride` bytes apart from offset `off`.
    Mem {
        /// Offset of `mem`.
        off: u64,
        /// Size of one `struct module_memory`.
        stride: u64,
        /// Entries of `mem`.
        count: u64,
    },
    /// Before 6.4: `core_layout` and `init_layout`, at these offsets.
    Layouts {
        /// Offset of `core_layout`.
        core: u64,
        /// Offset of `init_layout`.
        init: u64,
    },
}

/// Offsets, from the running kernel's BTF, for walking the module address
/// tree (`mod_tree`) with plain reads. That tree is how the kernel finds
/// the module behind a code address; a module that takes itself off the
/// module list and out of sysfs is still in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModLayout {
    /// Offset of `root.tree[0]` in `struct mod_tree_root`.
    pub root_tree: u64,
    /// Offset of `node` in `struct mod_tree_node`.
    pub mtn_node: u64,
    /// Offset of `mod` in `struct mod_tree_node`.
    pub mtn_mod: u64,
    /// Offset and size of `name` in `struct module`.
    pub name: u64,
    /// Size of `name`.
    pub name_len: u64,
    /// Where the memory areas are.
    pub areas: ModAreas,
    /// Offsets of `base`, `size` (u32) and `mtn` in one memory area.
    pub area_base: u64,
    /// See `area_base`.
    pub area_size: u64,
    /// See `area_base`.
    pub area_mtn: u64,
}

/// A module's name and one of its memory areas, as a tree node names them.
pub type ModArea = (String, Range<u64>);

/// Most tree nodes walked (modules times memory areas): more means the
/// reads are not following a tree.
pub const MOD_TREE_MAX_NODES: usize = 8192;

/// Every module in the module address tree whose root (`struct
/// mod_tree_root`) is at `tree`, with the memory area each node stands for
/// (empty when the node matches none of the module's areas). `mem(addr,
/// len)` reads kernel memory.
pub fn walk_mod_tree(
    l: &ModLayout,
    tree: u64,
    mem: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<Vec<ModArea>, String> {
    fn word(
        mem: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, String>,
        addr: u64,
        len: usize,
    ) -> Result<u64, String> {
        let b = mem(addr, len)?;
        let mut w = [0u8; 8];
        w[..len].copy_from_slice(&b[..len]);
        Ok(u64::from_le_bytes(w))
    }
    let mut out = Vec::new();
    let mut stack = vec![word(mem, tree + l.root_tree, 8)?];
    let mut walked = 0;
    while let Some(node) = stack.pop() {
        if node == 0 {
            continue;
        }
        walked += 1;
        if walked > MOD_TREE_MAX_NODES {
            return Err(format!("more than {MOD_TREE_MAX_NODES} nodes: not a tree"));
        }
        // struct rb_node: __rb_parent_color, rb_right, rb_left.
        stack.push(word(mem, node + 8, 8)?);
        stack.push(word(mem, node + 16, 8)?);
        let mtn = node - l.mtn_node;
        let module = word(mem, mtn + l.mtn_mod, 8)?;
        let raw = mem(module + l.name, l.name_len as usize)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        // What the kernel accepts as a module name. Anything else means the
        // reads are not following the layout BTF described (a kernel this
        // code has not met): say so rather than report a hidden module.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "implausible module name {name:?} at {module:#x}: the tree does not read as BTF describes it"
            ));
        }
        let areas: Vec<u64> = match l.areas {
            ModAreas::Mem { off, stride, count } => {
                (0..count).map(|i| module + off + i * stride).collect()
            }
            ModAreas::Layouts { core, init } => vec![module + core, module + init],
        };
        let range = match areas.into_iter().find(|a| a + l.area_mtn == mtn) {
            Some(a) => {
                let base = word(mem, a + l.area_base, 8)?;
                base..base + word(mem, a + l.area_size, 4)?
            }
            None => 0..0,
        };
        out.push((name, range));
    }
    Ok(out)
}

/// One registered kprobe, read from the kernel's kprobe_table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KprobeRec {
    /// Address of the struct kprobe.
    pub kp: u64,
    /// Probed address.
    pub addr: u64,
    /// `pre_handler`.
    pub pre: u64,
    /// `post_handler`.
    pub post: u64,
    /// `handler` of the enclosing kretprobe (valid for kretprobes only).
    pub ret_handler: u64,
    /// Next hlist node in the hash bucket (0 at the end).
    pub hnext: u64,
    /// Address of this kprobe's `list` member.
    pub list: u64,
    /// `list.next`: the probes an aggregated kprobe holds.
    pub lnext: u64,
}

/// A registered kprobe and its handlers: (role, address), zeros left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kprobe {
    /// Probed address.
    pub addr: u64,
    /// ("pre_handler" | "post_handler" | "kretprobe_handler", address).
    pub handlers: Vec<(&'static str, u64)>,
}

/// Upper bound on kprobes walked: the lists are read without the
/// kernel's lock, so a list changing under the walk must not loop forever.
pub const MAX_KPROBES: usize = 16384;

/// Walks the kernel's kprobe hash table (`heads`: its bucket heads) with
/// `fetch(node, is_list_node)`, descending into aggregated kprobes (whose
/// pre_handler is `aggr_pre`) and looking through kretprobes (whose
/// pre_handler is `kret_pre`) to their own handler.
pub fn walk_kprobes(
    heads: &[u64],
    aggr_pre: Option<u64>,
    kret_pre: Option<u64>,
    mut fetch: impl FnMut(u64, bool) -> Option<KprobeRec>,
) -> Vec<Kprobe> {
    let mut out = Vec::new();
    let mut budget = MAX_KPROBES;
    let push = |r: &KprobeRec, out: &mut Vec<Kprobe>| {
        let mut handlers = Vec::new();
        if kret_pre.is_some_and(|k| k == r.pre) {
            handlers.push(("kretprobe_handler", r.ret_handler));
        } else {
            handlers.push(("pre_handler", r.pre));
        }
        handlers.push(("post_handler", r.post));
        handlers.retain(|(_, a)| *a != 0);
        out.push(Kprobe {
            addr: r.addr,
            handlers,
        });
    };
    for &head in heads {
        let mut node = head;
        while node != 0 && budget > 0 {
            budget -= 1;
            let Some(r) = fetch(node, false) else { break };
            if aggr_pre.is_some_and(|a| a == r.pre) {
                // The probes sharing this address hang off its list.
                let mut l = r.lnext;
                while l != 0 && l != r.list && budget > 0 {
                    budget -= 1;
                    let Some(c) = fetch(l, true) else { break };
                    push(&c, &mut out);
                    l = c.lnext;
                }
            } else {
                push(&r, &mut out);
            }
            node = r.hnext;
        }
    }
    out
}

/// One ftrace or kprobe hook owned by a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHook {
    /// "ftrace" or "kprobe".
    pub kind: &'static str,
    /// The hooked function as the kernel lists it.
    pub function: String,
    /// Module named on the line.
    pub module_name: String,
    /// The whole line, for the analyst.
    pub line: String,
}

/// Module names in `[...]` on a tracing line.
fn bracketed(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        let Some(j) = after.find(']') else { break };
        let m = &after[..j];
        if !m.is_empty()
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !is_pseudo_module(m)
        {
            out.push(m.to_string());
        }
        rest = &after[j + 1..];
    }
    out
}

/// Entries of tracefs `enabled_functions` whose callback, ops or
/// trampoline (or the function itself) belongs to a module, e.g.
/// `do_sys_openat2 (1) R I  tramp: 0xffffffffc0201000 (hook+0x0/0x30 [rk]) ->hook+0x0/0x30 [rk]`.
pub fn ftrace_hooks(text: &str) -> (usize, Vec<TraceHook>) {
    let mut n = 0;
    let mut hooks = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let function = line.split_whitespace().next().unwrap_or("").to_string();
        if let Some(m) = bracketed(line).into_iter().next() {
            hooks.push(TraceHook {
                kind: "ftrace",
                function,
                module_name: m,
                line: line.trim().to_string(),
            });
        }
    }
    (n, hooks)
}

/// Entries of debugfs `kprobes/list` that probe a module's code or carry
/// a module tag: `ffffffffc0200000  k  hook_target+0x0  [rk]  [FTRACE]`.
pub fn kprobe_hooks(text: &str) -> (usize, Vec<TraceHook>) {
    let mut n = 0;
    let mut hooks = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        let function = f.get(2).copied().unwrap_or("").to_string();
        // Flags are upper-case words in brackets ([GONE], [DISABLED],
        // [OPTIMIZED], [FTRACE]); a module name is anything else.
        if let Some(m) = bracketed(line).into_iter().find(|m| {
            m.chars()
                .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }) {
            hooks.push(TraceHook {
                kind: "kprobe",
                function,
                module_name: m,
                line: line.trim().to_string(),
            });
        }
    }
    (n, hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000a10 T asm_exc_divide_error
ffffffff81000b00 T asm_exc_overflow
ffffffff81100000 T x64_sys_call
ffffffff81100100 T __x64_sys_read
ffffffff81100200 T __x64_sys_write
ffffffff81100300 T __x64_sys_ni_syscall
ffffffff81100400 T __x86_return_thunk
ffffffff81100500 T printk
ffffffff82000000 T _etext
ffffffff82100000 D sys_call_table
ffffffff82101000 D other_data
ffffffffc0000000 t rk_hook\t[rk]
ffffffffc0000100 t rk_other\t[rk]
ffffffffc0100000 t ext4_thing\t[ext4]
ffffffffc0200000 t bpf_prog_6deef7357e7b4530_x\t[bpf]
ffffffffc0300000 t ftrace_trampoline\t[__builtin__ftrace]
";

    fn syms() -> Symbols {
        Symbols::parse(KALLSYMS)
    }

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

    #[test]
    fn stray_table_entries_and_their_module() {
        let s = syms();
        let text = core_text(&s).unwrap();
        let table = [0xffffffff81100100, 0xffffffffc0000000, 0xffffffff81100300];
        let stray = stray_entries(&table, &text);
        assert_eq!(stray, [(1, 0xffffffffc0000000)]);
        let mut padded = vec![0xffffffff81100100, 0, 0xffffffff81100100, 0, 0];
        trim_padding(&mut padded);
        assert_eq!(padded.len(), 3, "inner zeros stay and are reported");
        assert_eq!(stray_entries(&padded, &text), [(1, 0)]);
        assert_eq!(s.describe(0), "0x0");

        // Hidden module: known by sysfs ranges only.
        let mut mods = Modules {
            supported: true,
            ..Default::default()
        };
        let rk = mods.entry("rk");
        rk.sysfs = true;
        rk.ranges.push(0xffffffffc0000000..0xffffffffc0002000);
        let o = owner(0xffffffffc0000000, &mods, &s);
        assert_eq!(o.module_name, "rk");
        assert!(o.hidden);

        // Listed module: not hidden.
        mods.entry("rk").listed = true;
        assert!(!owner(0xffffffffc0000000, &mods, &s).hidden);

        // Known only through kallsyms (no ranges): nearest module symbol.
        let o = owner(0xffffffffc0100008, &mods, &s);
        assert_eq!((o.module_name.as_str(), o.hidden), ("ext4", true));

        // Nobody knows the memory.
        let o = owner(0xffffffffd0000000, &Modules::default(), &Symbols::default());
        assert_eq!((o.module_name.as_str(), o.hidden), ("unknown", true));
    }

    fn gate(handler: u64, present: bool) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x10u16.to_le_bytes());
        g[5] = if present { 0x8e } else { 0x0e };
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        g
    }

    #[test]
    fn idt_gates_decode_and_strays_are_found() {
        let s = syms();
        let text = core_text(&s).unwrap();
        let mut raw = Vec::new();
        for v in 0..IDT_ENTRIES {
            let h = match v {
                4 => 0xffffffffc0000100,
                // Not present: never taken, never reported.
                200 => 0xffffffffc0000000,
                _ => 0xffffffff81000a10,
            };
            raw.extend_from_slice(&gate(h, v != 200));
        }
        let gates = decode_idt(&raw);
        assert_eq!(gates.len(), 256);
        assert_eq!(gates[0].handler, 0xffffffff81000a10);
        assert!(gates[0].present && !gates[200].present);
        let stray = stray_gates(&gates, &text, None);
        assert_eq!(stray.len(), 1);
        assert_eq!((stray[0].vector, stray[0].handler), (4, 0xffffffffc0000100));
        // Early handlers left in init text are the kernel's own.
        let init = 0xffffffffc0000000..0xffffffffc0001000;
        assert!(stray_gates(&gates, &text, Some(&init)).is_empty());
    }

    /// Assembles `call rel32` / `jmp rel32` at `at` towards `target`.
    fn rel32(op: u8, at: u64, target: u64) -> [u8; 5] {
        let rel = (target as i64 - (at as i64 + 5)) as i32;
        let mut b = [op, 0, 0, 0, 0];
        b[1..].copy_from_slice(&rel.to_le_bytes());
        b
    }

    #[test]
    fn dispatch_targets_must_be_syscall_functions() {
        let s = syms();
        let base = 0xffffffff81100000u64;
        let mut code = Vec::new();
        // cmp eax, 1 ; je +5 (internal)
        code.extend_from_slice(&[0x83, 0xf8, 0x01, 0x74, 0x05]);
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe8, at, 0xffffffff81100100)); // call __x64_sys_read
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe9, at, 0xffffffff81100200)); // jmp __x64_sys_write
        let at = base + code.len() as u64;
        code.extend_from_slice(&rel32(0xe9, at, 0xffffffff81100400)); // jmp __x86_return_thunk
        let clean = check_dispatch(&code, base, "__x64_", &s);
        assert_eq!(
            clean,
            Dispatch {
                good: 2,
                helpers: 1,
                bad: vec![]
            }
        );

        // FlipSwitch: the call now goes into a module.
        let mut hooked = code.clone();
        hooked[5..10].copy_from_slice(&rel32(0xe8, base + 5, 0xffffffffc0000000));
        let d = check_dispatch(&hooked, base, "__x64_", &s);
        assert_eq!(d.good, 1);
        assert_eq!(d.bad, [(base + 5, 0xffffffffc0000000)]);

        // Redirected to another core function: also wrong.
        let mut other = code.clone();
        other[5..10].copy_from_slice(&rel32(0xe8, base + 5, 0xffffffff81100500));
        assert_eq!(
            check_dispatch(&other, base, "__x64_", &s).bad,
            [(base + 5, 0xffffffff81100500)]
        );
        // The ia32 prefix does not accept x64 functions.
        assert_eq!(check_dispatch(&code, base, "__ia32_", &s).good, 0);
    }

    #[test]
    fn module_views_disagree() {
        let mut m = Modules {
            supported: true,
            ..Default::default()
        };
        for (name, size) in parse_proc_modules(
            "ext4 1003520 2 - Live 0xffffffffc0100000\nnfs 1 0 - Live 0x0000000000000000 (E)\n",
        ) {
            let e = m.entry(&name);
            e.listed = true;
            e.ranges.push(size);
        }
        m.entry("ext4").sysfs = true;
        m.entry("nfs").sysfs = true;
        let rk = m.entry("rk");
        rk.sysfs = true;
        rk.kallsyms = false;
        let bad: Vec<_> = m.inconsistent().iter().map(|m| m.name.clone()).collect();
        assert_eq!(bad, ["rk"]);
        assert!(m.by_name["rk"].hidden());
        assert_eq!(m.by_name["rk"].views(), "sysfs");
        assert_eq!(
            m.owner(0xffffffffc0100010).map(|m| m.name.as_str()),
            Some("ext4")
        );
        // Listed but its kobject deleted: inconsistent, not hidden.
        m.entry("nfs").sysfs = false;
        assert_eq!(m.inconsistent().len(), 2);
        assert!(!m.by_name["nfs"].hidden());
    }

    #[test]
    fn kprobe_table_walk() {
        use std::collections::HashMap;
        const AGGR: u64 = 0xffffffff81000100;
        const KRET: u64 = 0xffffffff81000200;
        let rec = |kp: u64, pre: u64, hnext: u64, lnext: u64| KprobeRec {
            kp,
            addr: 0xffffffff81300000 + kp,
            pre,
            post: 0,
            ret_handler: 0xffffffffc0000040,
            hnext,
            list: kp + 0x10,
            lnext,
        };
        let mut hl: HashMap<u64, KprobeRec> = HashMap::new();
        let mut ll: HashMap<u64, KprobeRec> = HashMap::new();
        // Bucket 0: a plain kprobe (module handler), then a kretprobe.
        hl.insert(0x1000, rec(0x1000, 0xffffffffc0000000, 0x2000, 0));
        hl.insert(0x2000, rec(0x2000, KRET, 0, 0));
        // Bucket 1: an aggregated kprobe holding two probes.
        hl.insert(0x3000, rec(0x3000, AGGR, 0, 0x4010));
        ll.insert(0x4010, rec(0x4000, 0xffffffff81000300, 0, 0x5010));
        ll.insert(0x5010, rec(0x5000, 0xffffffffc0000080, 0, 0x3010));
        let walked = walk_kprobes(&[0x1000, 0x3000, 0], Some(AGGR), Some(KRET), |n, list| {
            if list { ll.get(&n) } else { hl.get(&n) }.copied()
        });
        let handlers: Vec<_> = walked.iter().map(|k| k.handlers.clone()).collect();
        assert_eq!(
            handlers,
            [
                vec![("pre_handler", 0xffffffffc0000000)],
                vec![("kretprobe_handler", 0xffffffffc0000040)],
                vec![("pre_handler", 0xffffffff81000300)],
                vec![("pre_handler", 0xffffffffc0000080)],
            ]
        );
        // A list that loops back on itself ends at the budget.
        let mut cyc = HashMap::new();
        cyc.insert(0x1000u64, rec(0x1000, 1, 0x1000, 0));
        let walked = walk_kprobes(&[0x1000], None, None, |n, _| cyc.get(&n).copied());
        assert_eq!(walked.len(), MAX_KPROBES);
    }

    #[test]
    fn tracing_lines_owned_by_modules() {
        let ftrace = "\
vfs_read (1) R   \tops: ftrace_ops+0x0/0x40 ->function_trace_call+0x0/0x120
do_sys_openat2 (1) R I  \ttramp: 0xffffffffc0201000 (rk_hook+0x0/0x30 [rk]) ->rk_hook+0x0/0x30 [rk]
security_file_open (1) R I M \ttramp: 0xffffffffc0300000 (bpf_trampoline_6442+0x0/0x80 [bpf]) ->__bpf_prog_enter+0x0/0x40
";
        let (n, h) = ftrace_hooks(ftrace);
        assert_eq!(n, 3, "a BPF trampoline is counted, not reported");
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].function.as_str(), h[0].module_name.as_str()),
            ("do_sys_openat2", "rk")
        );

        let kprobes = "\
ffffffff81300000  k  do_sys_openat2+0x0    [FTRACE]
ffffffffc0000000  k  rk_other+0x0  [rk]  [DISABLED]
";
        let (n, h) = kprobe_hooks(kprobes);
        assert_eq!(n, 2);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].function.as_str(), h[0].module_name.as_str()),
            ("rk_other+0x0", "rk")
        );
        assert_eq!(kprobe_hooks("").0, 0);
    }

    /// Kernel memory for the tree tests: bytes at addresses.
    struct Mem(std::collections::HashMap<u64, u8>);

    impl Mem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn word(&mut self, addr: u64, w: u64) {
            self.put(addr, &w.to_le_bytes());
        }
        fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
            (0..len as u64)
                .map(|i| {
                    self.0
                        .get(&(addr + i))
                        .copied()
                        .ok_or(format!("fault at {:#x}", addr + i))
                })
                .collect()
        }
    }

    /// A module at `m` with its name, and `areas` (base, size) at the
    /// layout's area offsets; returns the address of each area's tree node.
    fn module(mem: &mut Mem, l: &ModLayout, m: u64, name: &str, areas: &[(u64, u32)]) -> Vec<u64> {
        let mut n = name.as_bytes().to_vec();
        n.resize(l.name_len as usize, 0);
        mem.put(m + l.name, &n);
        let area_at = |i: u64| match l.areas {
            ModAreas::Mem { off, stride, .. } => m + off + i * stride,
            ModAreas::Layouts { core, init } => m + if i == 0 { core } else { init },
        };
        let mut nodes = Vec::new();
        for (i, (base, size)) in areas.iter().enumerate() {
            let a = area_at(i as u64);
            mem.word(a + l.area_base, *base);
            mem.put(a + l.area_size, &size.to_le_bytes());
            let mtn = a + l.area_mtn;
            mem.word(mtn + l.mtn_mod, m);
            let node = mtn + l.mtn_node;
            mem.word(node, 0);
            mem.word(node + 8, 0);
            mem.word(node + 16, 0);
            nodes.push(node);
        }
        nodes
    }

    fn layout(areas: ModAreas) -> ModLayout {
        ModLayout {
            root_tree: 8,
            mtn_node: 8,
            mtn_mod: 0,
            name: 24,
            name_len: 56,
            areas,
            area_base: 0,
            area_size: 8,
            area_mtn: 16,
        }
    }

    #[test]
    fn mod_tree_names_every_module_and_area() {
        for areas in [
            ModAreas::Mem {
                off: 0x100,
                stride: 0x60,
                count: 7,
            },
            ModAreas::Layouts {
                core: 0x100,
                init: 0x160,
            },
        ] {
            let l = layout(areas);
            let mut mem = Mem(Default::default());
            let (tree, a, b) = (0x1000, 0x10_000, 0x20_000);
            let na = module(
                &mut mem,
                &l,
                a,
                "visible",
                &[(0xa000, 0x100), (0xb000, 0x40)],
            );
            let nb = module(&mut mem, &l, b, "kestrel_rk", &[(0xc000, 0x200)]);
            // Root na[0]; na[1] on its left, nb[0] on its right.
            mem.word(tree + l.root_tree, na[0]);
            mem.word(na[0] + 16, na[1]);
            mem.word(na[0] + 8, nb[0]);
            let mut got = walk_mod_tree(&l, tree, &mut |addr, len| mem.read(addr, len)).unwrap();
            got.sort_by_key(|(_, r)| r.start);
            assert_eq!(
                got,
                vec![
                    ("visible".to_string(), 0xa000..0xa100),
                    ("visible".to_string(), 0xb000..0xb040),
                    ("kestrel_rk".to_string(), 0xc000..0xc200),
                ],
                "{areas:?}"
            );
        }
    }

    #[test]
    fn mod_tree_walk_is_bounded_and_reports_faults() {
        let l = layout(ModAreas::Layouts {
            core: 0x100,
            init: 0x160,
        });
        let mut mem = Mem(Default::default());
        let n = module(&mut mem, &l, 0x10_000, "loop", &[(0xa000, 0x10)]);
        // A node that is its own child: not a tree.
        mem.word(0x1000 + l.root_tree, n[0]);
        mem.word(n[0] + 8, n[0]);
        let e = walk_mod_tree(&l, 0x1000, &mut |a, len| mem.read(a, len)).unwrap_err();
        assert!(e.contains("not a tree"), "{e}");
        // A name that is no module name: the layout is not what was read.
        let mut mem2 = Mem(Default::default());
        let n2 = module(&mut mem2, &l, 0x10_000, "bad\u{1}name", &[(0xa000, 0x10)]);
        mem2.word(0x1000 + l.root_tree, n2[0]);
        let e = walk_mod_tree(&l, 0x1000, &mut |a, len| mem2.read(a, len)).unwrap_err();
        assert!(e.contains("implausible module name"), "{e}");
        // A child pointer into unreadable memory.
        mem.word(n[0] + 8, 0xdead_0000);
        let e = walk_mod_tree(&l, 0x1000, &mut |a, len| mem.read(a, len)).unwrap_err();
        assert!(e.contains("fault"), "{e}");
    }
}
