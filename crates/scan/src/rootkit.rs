//! `kestrel scan rootkit`: the four checks the reference ports from Tyton
//! (data_type 700-703) and one beyond it (704, module-owned ftrace hooks
//! and kprobes). See docs/events.md for what each check reads.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use kestrel_event::{Event, Host, When};

use crate::check::{self, Modules, Owner, Symbols};
use crate::kmem::Reader;
use crate::Error;

/// `data_type` of a hooked /proc file operation.
pub const DATA_TYPE_PROC_FOPS: &str = "700";
/// `data_type` of a hooked syscall table entry or dispatch call.
pub const DATA_TYPE_SYSCALL: &str = "701";
/// `data_type` of a module hidden from one kernel view.
pub const DATA_TYPE_HIDDEN_MODULE: &str = "702";
/// `data_type` of a hooked interrupt gate.
pub const DATA_TYPE_IDT: &str = "703";
/// `data_type` of a module-owned ftrace hook or kprobe (Kestrel's own).
pub const DATA_TYPE_TRACE_HOOK: &str = "704";

/// Largest table or function the scan reads (bounds memory and time).
const MAX_TABLE_ENTRIES: u64 = 1024;
const MAX_FUNCTION_BYTES: u64 = 256 * 1024;

/// What to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Root of procfs (kallsyms, modules, the files whose operations are
    /// checked).
    pub proc_dir: String,
    /// Root of sysfs (module kobjects).
    pub sys_dir: String,
    /// Also look at ftrace's enabled functions and registered kprobes.
    pub trace_hooks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proc_dir: "/proc".into(),
            sys_dir: "/sys".into(),
            trace_hooks: true,
        }
    }
}

/// Entries checked and found hooked, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Count {
    /// Table name as in the summary.
    pub table: &'static str,
    /// Entries checked; None when the kernel does not expose the table.
    pub checked: Option<usize>,
    /// Entries reported.
    pub hooked: usize,
    /// Why it was not checked, or which source was read.
    pub note: String,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Report {
    /// One event per finding, ready for the output.
    pub events: Vec<Event>,
    /// One line saying what was checked and what was found.
    pub summary: String,
    /// Per-table figures (the summary's source).
    pub counts: Vec<Count>,
    /// Checks that could not run completely, with the reason.
    pub warnings: Vec<String>,
    /// Runs of the BPF reader the scan took (each copies at most 4 KiB).
    pub bpf_runs: u64,
}

/// One finding before it becomes an event.
struct Finding {
    data_type: &'static str,
    owner: Owner,
    /// Extra fields after the reference's.
    fields: Vec<(&'static str, String)>,
}

struct Ctx<'a> {
    syms: &'a Symbols,
    text: Range<u64>,
    modules: &'a Modules,
    findings: Vec<Finding>,
    counts: Vec<Count>,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn owner(&self, addr: u64) -> Owner {
        check::owner(addr, self.modules, self.syms)
    }

    /// Records that `table` could not be checked, and why.
    fn unchecked(&mut self, table: &'static str, note: impl Into<String>) {
        self.counts.push(Count {
            table,
            checked: None,
            hooked: 0,
            note: note.into(),
        });
    }

    /// `symbol+off [module]`, or `[module]+off` (from the module's memory
    /// range) when kallsyms has no symbol of that module there (a hidden
    /// module), or the bare address.
    fn describe(&self, addr: u64) -> String {
        if let Some(m) = self.modules.owner(addr) {
            let named = self
                .syms
                .containing(addr)
                .is_some_and(|(s, off)| s.module.as_deref() == Some(&m.name) && off < 1 << 16);
            if !named {
                if let Some(r) = m.ranges.iter().find(|r| r.contains(&addr)) {
                    return format!("[{}]+{:#x}", m.name, addr - r.start);
                }
            }
        }
        self.syms.describe(addr)
    }
}

/// Runs every check once. Findings are events, not errors: the result is
/// an error only when the scan could not run at all (no kernel addresses,
/// no BPF).
pub fn scan(opts: &Options) -> Result<Report, Error> {
    let kallsyms_path = format!("{}/kallsyms", opts.proc_dir);
    let text = read(&kallsyms_path)?;
    let syms = Symbols::parse(&text);
    drop(text);
    if syms.addresses_hidden() {
        return Err(Error::NoAddresses);
    }
    let core = check::core_text(&syms).ok_or(Error::MissingSymbol("_stext/_etext"))?;
    let mut storage = std::mem::MaybeUninit::uninit();
    let mut reader = Reader::load(&mut storage)?;
    let mut modules = module_views(opts, &syms, &mut reader);
    if !modules.inconsistent().is_empty() {
        // A module being loaded or unloaded is briefly in one view and not
        // yet (or no longer) in another: look again before reporting.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let again = module_views(opts, &syms_again(opts).unwrap_or_default(), &mut reader);
        for (name, m) in modules.by_name.iter_mut() {
            if let Some(a) = again.by_name.get(name) {
                m.listed |= a.listed;
                m.sysfs |= a.sysfs;
            } else {
                // Gone from every view: unloaded meanwhile.
                m.listed = true;
                m.sysfs = true;
            }
        }
    }
    let mut cx = Ctx {
        syms: &syms,
        text: core,
        modules: &modules,
        findings: Vec::new(),
        counts: Vec::new(),
        warnings: Vec::new(),
    };

    syscall_tables(&mut cx, &mut reader);
    dispatch_functions(&mut cx, &mut reader);
    idt(&mut cx, &mut reader);
    proc_fops(&mut cx, &mut reader, opts);
    hidden_modules(&mut cx);
    if opts.trace_hooks {
        trace_hooks(&mut cx);
        kprobe_table(&mut cx, &mut reader);
    }

    let host = Host::new();
    let now = When::now();
    let events: Vec<Event> = cx
        .findings
        .iter()
        .map(|f| {
            let mut ev = Event::with_capacity(12);
            ev.push("data_type", f.data_type);
            if f.data_type == DATA_TYPE_PROC_FOPS {
                // The reference fills uid with -1 on this alert.
                ev.push("uid", "-1");
            }
            ev.push("module_name", f.owner.module_name.clone());
            ev.push("hidden", if f.owner.hidden { "1" } else { "0" });
            for (k, v) in &f.fields {
                ev.push(k, v.clone());
            }
            host.stamp(&mut ev, now);
            ev
        })
        .collect();
    let summary = summary(&cx.counts, events.len());
    Ok(Report {
        events,
        summary,
        counts: cx.counts,
        warnings: cx.warnings,
        bpf_runs: reader.runs,
    })
}

fn syms_again(opts: &Options) -> Option<Symbols> {
    let text = std::fs::read_to_string(format!("{}/kallsyms", opts.proc_dir)).ok()?;
    Some(Symbols::parse(&text))
}

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_string(),
        source,
    })
}

fn summary(counts: &[Count], findings: usize) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|c| match c.checked {
            Some(n) if c.note.is_empty() => format!("{} {}/{n}", c.table, c.hooked),
            Some(n) => format!("{} {}/{n} ({})", c.table, c.hooked, c.note),
            None => format!("{}: {}", c.table, c.note),
        })
        .collect();
    format!("rootkit scan: {}; {findings} findings", parts.join(", "))
}

/// 701 from the tables themselves, where kallsyms lists them (kernels
/// with KALLSYMS_ALL, e.g. Debian's).
fn syscall_tables(cx: &mut Ctx, reader: &mut Reader<'_>) {
    for (table, prefix_note) in [("sys_call_table", "x64"), ("ia32_sys_call_table", "ia32")] {
        let Some(addr) = cx.syms.addr(table) else {
            cx.unchecked(table, "not in kallsyms");
            continue;
        };
        // The next symbol bounds the table (its size is not exported).
        let n = cx
            .syms
            .extent(table)
            .map(|b| b / 8)
            .unwrap_or(0)
            .clamp(1, MAX_TABLE_ENTRIES) as usize;
        let mut entries = match reader.read_words(addr, n) {
            Ok(e) => e,
            Err(e) => {
                cx.warnings.push(format!("{table}: {e}"));
                cx.unchecked(table, format!("unreadable: {e}"));
                continue;
            }
        };
        check::trim_padding(&mut entries);
        let stray = check::stray_entries(&entries, &cx.text);
        for (nr, target) in &stray {
            let owner = cx.owner(*target);
            cx.findings.push(Finding {
                data_type: DATA_TYPE_SYSCALL,
                owner,
                fields: vec![
                    ("syscall_number", nr.to_string()),
                    ("table", table.to_string()),
                    ("abi", prefix_note.to_string()),
                    ("hook_address", format!("{target:#x}")),
                    ("hook_symbol", cx.describe(*target)),
                ],
            });
        }
        cx.counts.push(Count {
            table,
            checked: Some(entries.len()),
            hooked: stray.len(),
            note: String::new(),
        });
    }
}

/// 701 from the code that dispatches syscalls since Linux 6.9 (and in
/// stable backports): every direct call/jmp must reach a syscall function.
fn dispatch_functions(cx: &mut Ctx, reader: &mut Reader<'_>) {
    for (func, prefix) in [("x64_sys_call", "__x64_"), ("ia32_sys_call", "__ia32_")] {
        let (Some(addr), Some(len)) = (cx.syms.addr(func), cx.syms.extent(func)) else {
            cx.unchecked(
                func,
                "not in kallsyms (kernel dispatches through the table)",
            );
            continue;
        };
        let len = len.min(MAX_FUNCTION_BYTES) as usize;
        let code = match reader.read(addr, len) {
            Ok(c) => c,
            Err(e) => {
                cx.warnings.push(format!("{func}: {e}"));
                cx.unchecked(func, format!("unreadable: {e}"));
                continue;
            }
        };
        let d = check::check_dispatch(&code, addr, prefix, cx.syms);
        for (at, target) in &d.bad {
            let owner = if cx.text.contains(target) {
                // Redirected inside the kernel: no module to blame.
                Owner {
                    module_name: "kernel".into(),
                    hidden: false,
                }
            } else {
                cx.owner(*target)
            };
            cx.findings.push(Finding {
                data_type: DATA_TYPE_SYSCALL,
                owner,
                fields: vec![
                    // The switch's case value is not recoverable from one
                    // call site; the patched site and target identify it.
                    ("syscall_number", "-1".into()),
                    ("table", func.to_string()),
                    ("call_site", cx.syms.describe(*at)),
                    ("hook_address", format!("{target:#x}")),
                    ("hook_symbol", cx.describe(*target)),
                ],
            });
        }
        cx.counts.push(Count {
            table: func,
            checked: Some(d.good + d.bad.len()),
            hooked: d.bad.len(),
            note: String::from("targets"),
        });
    }
}

/// 703: every present gate of the IDT must enter core kernel text.
fn idt(cx: &mut Ctx, reader: &mut Reader<'_>) {
    let (addr, source) = match cx.syms.addr("idt_table") {
        Some(a) => (a, "idt_table"),
        None => (check::CEA_RO_IDT, "cpu_entry_area"),
    };
    let raw = match reader.read(addr, check::IDT_ENTRIES * check::GATE_SIZE) {
        Ok(r) => r,
        Err(e) => {
            cx.warnings
                .push(format!("idt at {addr:#x} ({source}): {e}"));
            cx.unchecked("idt", format!("unreadable: {e}"));
            return;
        }
    };
    let gates = check::decode_idt(&raw);
    let present = gates.iter().filter(|g| g.present).count();
    let init = check::init_text(cx.syms);
    let stray = check::stray_gates(&gates, &cx.text, init.as_ref());
    for g in &stray {
        let owner = cx.owner(g.handler);
        cx.findings.push(Finding {
            data_type: DATA_TYPE_IDT,
            owner,
            fields: vec![
                ("interrupt_number", g.vector.to_string()),
                ("hook_address", format!("{:#x}", g.handler)),
                ("hook_symbol", cx.describe(g.handler)),
            ],
        });
    }
    cx.counts.push(Count {
        table: "idt",
        checked: Some(present),
        hooked: stray.len(),
        note: source.into(),
    });
}

/// 700: the live operations of files the scanner opens in /proc.
fn proc_fops(cx: &mut Ctx, reader: &mut Reader<'_>, opts: &Options) {
    let p = &opts.proc_dir;
    // (file, which pointer, expected function)
    let checks: [(String, Op, &str); 8] = [
        (p.clone(), Op::Iterate, "proc_root_readdir"),
        (p.clone(), Op::Lookup, "proc_root_lookup"),
        (format!("{p}/self"), Op::Iterate, "proc_tgid_base_readdir"),
        (format!("{p}/self"), Op::Lookup, "proc_tgid_base_lookup"),
        (format!("{p}/net/tcp"), Op::SeqShow, "tcp4_seq_show"),
        (format!("{p}/net/tcp6"), Op::SeqShow, "tcp6_seq_show"),
        (format!("{p}/net/udp"), Op::SeqShow, "udp4_seq_show"),
        (format!("{p}/net/udp6"), Op::SeqShow, "udp6_seq_show"),
    ];
    let mut checked = 0;
    let mut hooked = 0;
    let mut skipped = Vec::new();
    for (path, op, expected) in checks {
        let file = match File::open(Path::new(&path)) {
            Ok(f) => f,
            Err(e) => {
                // tcp6/udp6 are absent without IPv6: nothing to hook.
                skipped.push(format!("{path}: {e}"));
                continue;
            }
        };
        let ops = match reader.file_ops(&file) {
            Ok(o) => o,
            Err(e) => {
                cx.warnings.push(format!("{path}: {e}"));
                continue;
            }
        };
        let actual = match op {
            Op::Iterate => ops.iterate_shared,
            Op::Lookup => ops.lookup,
            Op::SeqShow => ops.seq_show,
        };
        checked += 1;
        let ok = match cx.syms.addr(expected) {
            Some(want) => actual == want,
            // Renamed or inlined on this kernel: fall back to "in core text".
            None => cx.text.contains(&actual),
        };
        if ok {
            continue;
        }
        hooked += 1;
        let owner = if cx.text.contains(&actual) {
            Owner {
                module_name: "kernel".into(),
                hidden: false,
            }
        } else {
            cx.owner(actual)
        };
        cx.findings.push(Finding {
            data_type: DATA_TYPE_PROC_FOPS,
            owner,
            fields: vec![
                ("proc_path", path.clone()),
                ("operation", op.name().into()),
                ("expected", expected.into()),
                ("hook_address", format!("{actual:#x}")),
                ("hook_symbol", cx.describe(actual)),
            ],
        });
    }
    if !skipped.is_empty() {
        cx.warnings
            .push(format!("proc fops not checked: {}", skipped.join("; ")));
    }
    cx.counts.push(Count {
        table: "proc fops",
        checked: Some(checked),
        hooked,
        note: String::new(),
    });
}

#[derive(Clone, Copy)]
enum Op {
    Iterate,
    Lookup,
    SeqShow,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Iterate => "iterate_shared",
            Op::Lookup => "lookup",
            Op::SeqShow => "seq_show",
        }
    }
}

/// Gathers what each view says about modules: /proc/modules (the module
/// list), /sys/module/*/initstate (loaded-module kobjects), with their
/// section addresses and core size, the module symbols of kallsyms, and
/// the kernel's module address tree, read through the BPF reader (a module
/// that unlinks itself from the list and deletes its kobject, as common
/// rootkits do, is gone from the first three but still in the tree: the
/// kernel needs it there to run its code).
fn module_views(opts: &Options, syms: &Symbols, reader: &mut Reader<'_>) -> Modules {
    let mut m = Modules::default();
    let proc_modules = format!("{}/modules", opts.proc_dir);
    if let Ok(text) = std::fs::read_to_string(&proc_modules) {
        m.supported = true;
        for (name, range) in check::parse_proc_modules(&text) {
            let e = m.entry(&name);
            e.listed = true;
            if range.start != 0 {
                e.ranges.push(range);
            }
        }
    }
    let sys_module = format!("{}/module", opts.sys_dir);
    if let Ok(dir) = std::fs::read_dir(&sys_module) {
        for d in dir.flatten() {
            let path = d.path();
            // Built-in modules have a kobject for their parameters too;
            // only loaded modules have initstate.
            if !path.join("initstate").exists() {
                continue;
            }
            m.supported = true;
            let name = d.file_name().to_string_lossy().into_owned();
            let core: Option<u64> = std::fs::read_to_string(path.join("coresize"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let text = std::fs::read_to_string(path.join("sections/.text"))
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok());
            let e = m.entry(&name);
            e.sysfs = true;
            // The core allocation starts with .text (6.1: core_layout); on
            // 6.4+ text has its own allocation and this overestimates it,
            // which only matters when module areas touch.
            if let (Some(t), Some(c)) = (text, core) {
                if t != 0 {
                    e.ranges.push(t..t + c);
                }
            }
        }
    }
    m.tree = match mod_tree(syms, reader) {
        Ok(Some(nodes)) => {
            m.supported = true;
            let n = nodes.len();
            for (name, area) in nodes {
                let e = m.entry(&name);
                e.mod_tree = true;
                // Exact areas: put before the estimates of the other views.
                if !area.is_empty() {
                    e.ranges.insert(0, area);
                }
            }
            check::TreeView::Walked(n)
        }
        Ok(None) => check::TreeView::Absent,
        Err(e) => check::TreeView::Failed(e),
    };
    for (name, span) in syms.module_spans() {
        let e = m.entry(&name);
        e.kallsyms = true;
        if e.ranges.is_empty() {
            e.ranges.push(span);
        }
        m.supported = true;
    }
    m
}

/// The module address tree's nodes: (module name, memory area). None when
/// this kernel has no such tree.
fn mod_tree(
    syms: &Symbols,
    reader: &mut Reader<'_>,
) -> Result<Option<Vec<check::ModArea>>, String> {
    let Some(layout) = reader.module_layout().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let Some(tree) = syms.addr("mod_tree") else {
        return Err("no mod_tree in kallsyms (a kernel without CONFIG_KALLSYMS_ALL)".into());
    };
    check::walk_mod_tree(&layout, tree, &mut |addr, len| {
        reader.read(addr, len).map_err(|e| e.to_string())
    })
    .map(Some)
}

/// 702: a module some view shows and another misses.
fn hidden_modules(cx: &mut Ctx) {
    if !cx.modules.supported {
        cx.unchecked(
            "modules",
            "not applicable (kernel without loadable modules)",
        );
        return;
    }
    let bad = cx.modules.inconsistent();
    for m in &bad {
        cx.findings.push(Finding {
            data_type: DATA_TYPE_HIDDEN_MODULE,
            owner: Owner {
                module_name: m.name.clone(),
                hidden: m.hidden(),
            },
            fields: vec![("seen_by", m.views())],
        });
    }
    let note = match &cx.modules.tree {
        check::TreeView::Walked(_) => "proc_modules/sysfs/kallsyms/mod_tree".to_string(),
        check::TreeView::Absent => "proc_modules/sysfs/kallsyms; no mod_tree in this kernel".into(),
        check::TreeView::Failed(e) => {
            cx.warnings.push(format!("mod_tree: {e}"));
            format!("proc_modules/sysfs/kallsyms; mod_tree unreadable: {e}")
        }
    };
    cx.counts.push(Count {
        table: "modules",
        checked: Some(cx.modules.by_name.len()),
        hooked: bad.len(),
        note,
    });
}

/// Mounts `fstype` at `target` when it is not mounted there yet (the scan
/// may run before anything mounted tracefs or debugfs). Failures are
/// warnings: the check then says "not available".
fn ensure_mounted(cx: &mut Ctx, fstype: &str, target: &str) {
    let t = Path::new(target);
    if !t.is_dir() || t.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return;
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in constants");
    let (src, tgt, fs) = (c("nodev"), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings; data may be null.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        tracing::info!(fstype, target, "mounted for the rootkit scan");
    } else {
        cx.warnings.push(format!(
            "mounting {fstype} at {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// 704: ftrace hooks and kprobes that belong to a module.
fn trace_hooks(cx: &mut Ctx) {
    ensure_mounted(cx, "tracefs", "/sys/kernel/tracing");
    if cx.syms.addr("kprobe_table").is_none() && cx.syms.addr("register_kprobe").is_some() {
        ensure_mounted(cx, "debugfs", "/sys/kernel/debug");
    }
    let sources = [
        (
            "ftrace",
            [
                "/sys/kernel/tracing/enabled_functions",
                "/sys/kernel/debug/tracing/enabled_functions",
            ],
            check::ftrace_hooks as fn(&str) -> (usize, Vec<check::TraceHook>),
        ),
        (
            "kprobes",
            ["/sys/kernel/debug/kprobes/list", ""],
            check::kprobe_hooks as fn(&str) -> (usize, Vec<check::TraceHook>),
        ),
    ];
    for (table, paths, parse) in sources {
        if table == "kprobes" && cx.syms.addr("kprobe_table").is_some() {
            // Walked in memory instead, with the handlers' owners.
            continue;
        }
        let Some(text) = paths
            .iter()
            .filter(|p| !p.is_empty())
            .find_map(|p| std::fs::read_to_string(p).ok())
        else {
            cx.unchecked(
                table,
                "not available on this kernel (no ftrace or kprobes, or tracefs/debugfs not mounted)",
            );
            continue;
        };
        let (n, hooks) = parse(&text);
        for h in &hooks {
            let hidden = cx
                .modules
                .by_name
                .get(&h.module_name)
                .is_none_or(check::Module::hidden);
            cx.findings.push(Finding {
                data_type: DATA_TYPE_TRACE_HOOK,
                owner: Owner {
                    module_name: h.module_name.clone(),
                    hidden,
                },
                fields: vec![
                    ("hook_type", h.kind.into()),
                    ("function", h.function.clone()),
                    ("detail", h.line.clone()),
                ],
            });
        }
        cx.counts.push(Count {
            table,
            checked: Some(n),
            hooked: hooks.len(),
            note: String::new(),
        });
    }
}

/// 704 from the kprobes themselves, where kallsyms lists `kprobe_table`:
/// every handler of every registered kprobe must be kernel code; a handler
/// in a module is a module hooking through kprobes.
fn kprobe_table(cx: &mut Ctx, reader: &mut Reader<'_>) {
    const TABLE_SIZE: usize = 64; // KPROBE_TABLE_SIZE since Linux 2.6
    let Some(table) = cx.syms.addr("kprobe_table") else {
        return;
    };
    let heads = match reader.read_words(table, TABLE_SIZE) {
        Ok(h) => h,
        Err(e) => {
            cx.warnings.push(format!("kprobe_table: {e}"));
            cx.unchecked("kprobes", format!("unreadable: {e}"));
            return;
        }
    };
    let mut failed = None;
    let probes = check::walk_kprobes(
        &heads,
        cx.syms.addr("aggr_pre_handler"),
        cx.syms.addr("pre_handler_kretprobe"),
        |node, list| match reader.kprobe(node, list) {
            Ok(r) => r,
            Err(e) => {
                failed = Some(e);
                None
            }
        },
    );
    if let Some(e) = failed {
        cx.warnings.push(format!("kprobe_table walk stopped: {e}"));
    }
    let mut hooked = 0;
    for p in &probes {
        let stray: Vec<_> = p
            .handlers
            .iter()
            .filter(|(_, h)| !cx.text.contains(h))
            .collect();
        let Some((_, first)) = stray.first() else {
            continue;
        };
        hooked += 1;
        let detail = stray
            .iter()
            .map(|(role, h)| format!("{role}={}", cx.describe(*h)))
            .collect::<Vec<_>>()
            .join(" ");
        cx.findings.push(Finding {
            data_type: DATA_TYPE_TRACE_HOOK,
            owner: cx.owner(*first),
            fields: vec![
                ("hook_type", "kprobe".into()),
                ("function", cx.syms.describe(p.addr)),
                ("detail", detail),
            ],
        });
    }
    cx.counts.push(Count {
        table: "kprobes",
        checked: Some(probes.len()),
        hooked,
        note: "kprobe_table".into(),
    });
}
