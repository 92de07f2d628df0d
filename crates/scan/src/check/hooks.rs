//! Hooks a module can place without touching a table: ftrace and kprobes.

use super::symbols::is_pseudo_module;

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
}
