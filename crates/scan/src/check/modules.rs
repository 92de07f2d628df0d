//! Loaded modules as each kernel view sees them, who owns an address, and
//! the walk of the kernel's module tree.

use std::collections::BTreeMap;
use std::ops::Range;

use super::symbols::Symbols;

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

#[cfg(test)]
mod tests {
    use super::*;

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
