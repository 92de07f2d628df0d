//! The hook backends (issue #20): in qemu guests booting Debian 12's 6.1
//! and 6.12 kernels, where fentry and kprobes exist, the agent runs once
//! per backend (`--hook-backend tracepoint`, `fentry`, `kprobe`) and the
//! same behaviours are performed under each (tests/qemu/backends.sh): one
//! of every event kind a syscall hook makes. Each round must attach every
//! syscall hook on its backend and say so (log, /metrics); the fentry
//! round must attach no perf event (how tracepoints and kprobes are
//! attached, which the other two rounds show the check sees) and leave
//! every tracefs syscall event disabled; and every round must report the
//! same events with the same fields and values, but for what differs from
//! one process to the next (pids, times, addresses, ephemeral ports).
//! This host refuses fentry and has no kprobes: its side is the start-up
//! test below. Needs root.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::{free_loopback_addr, kestrel, metrics_page, qemu, Agent};

const ROUNDS: [&str; 3] = ["tracepoint", "fentry", "kprobe"];

/// The data_types the guest's behaviours must produce under every backend.
const EXPECTED: [(&str, &str); 22] = [
    ("59", "exec, failed exec, execveat"),
    ("602", "file creation"),
    ("82", "rename"),
    ("86", "link, symlink"),
    ("605", "unlink"),
    ("606", "rmdir"),
    ("90", "chmod/fchmod setuid"),
    ("92", "chown of a watched path"),
    ("609", "open of a watched path for writing"),
    ("608", "truncate of a watched path"),
    ("42", "connect, UDP send"),
    ("49", "bind"),
    ("43", "accept"),
    ("601", "DNS answer"),
    ("101", "ptrace"),
    ("112", "setsid"),
    ("356", "memfd_create"),
    ("10", "mprotect to exec"),
    ("321", "bpf prog load"),
    ("165", "mount"),
    ("272", "unshare"),
    ("308", "setns"),
];

/// Fields that differ between two runs of the same commands: the
/// processes' identity, the clock, addresses chosen by ASLR, ephemeral
/// ports, new namespaces' inode numbers, ids the kernel or the agent hands
/// out, and the truncated program name (the tag cut at 16 bytes).
const VOLATILE: [&str; 31] = [
    "pid",
    "ppid",
    "pgid",
    "tgid",
    "ns_pid",
    "sid",
    "time",
    "event_id",
    "pid_tree",
    "target_pid",
    "target_tgid",
    "renamer_pid",
    "owner_pid",
    "runtime_ms",
    "addr",
    "vm_start",
    "vm_end",
    "sport",
    "target_uts_ns",
    "target_net_ns",
    "target_mnt_ns",
    "cgroup_id",
    "tty",
    "stdin",
    "stdout",
    "ino",
    "create_file_md5",
    "alert_id",
    "trigger_event_ids",
    "prog_name",
    "prog_id",
];

/// An event as the rounds must agree on it: volatile fields out, the
/// round's tag replaced, DNS answers' and setsid's pid-bearing values out.
fn normalized(ev: &Value, tag: &str) -> String {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let obj = ev
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {ev}"));
    for (k, v) in obj {
        if VOLATILE.contains(&k.as_str()) {
            continue;
        }
        let v = v.as_str().unwrap_or_default().replace(tag, "kbk-ROUND");
        m.insert(k.clone(), v);
    }
    // setsid returns the new session's id, a pid; a DNS reply goes to the
    // client's ephemeral port.
    if ev["data_type"] == "112" {
        m.remove("res");
    }
    if ev["data_type"] == "42" && ev["sport"] == "53" {
        m.remove("dport");
    }
    serde_json::to_string(&m).unwrap()
}

fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(what))
        .unwrap_or_else(|| panic!("no line {what:?} in the guest's output:\n{out}"))
        .trim()
}

fn check_guest(series: &str) {
    let run = qemu::run_script("backends.sh", &[series], "BACKENDS");
    let out = &run.stdout;
    assert!(
        run.ok,
        "backends.sh {series}: {}\n{out}\n{}",
        run.status, run.stderr
    );
    let mut events: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for b in ROUNDS {
        assert_eq!(
            line(out, &format!("BACKENDS {b} start: "))
                .split(' ')
                .next(),
            Some("started=1"),
            "{out}"
        );
        // Every syscall hook on this round's backend, none elsewhere.
        let log = line(out, &format!("BACKENDS {b} log: "));
        let attached = log
            .split(" attached=")
            .nth(1)
            .and_then(|r| r.split(" kernel=").next())
            .unwrap_or_else(|| panic!("no attached= in {log}"));
        let counts: BTreeMap<&str, u32> = attached
            .split(' ')
            .filter_map(|c| c.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let syscall_hooks = counts.get(b).copied().unwrap_or(0);
        assert!(syscall_hooks >= 60, "{b}: {attached}");
        assert_eq!(counts.len(), 2, "{b}: only {b} and tp_btf: {attached}");
        // 8 on 6.12, 7 on 6.1 (no sock_recv_length before 6.3).
        assert!(counts.get("tp_btf").is_some_and(|n| *n >= 7), "{attached}");
        for other in ROUNDS.iter().filter(|o| **o != b) {
            assert_eq!(
                line(
                    out,
                    &format!("BACKENDS {b} metric: kestrel_probe_backend_programs{{backend=\"{other}\"}}")
                ),
                "0",
                "{b}: /metrics"
            );
        }
        assert_eq!(
            line(
                out,
                &format!("BACKENDS {b} metric: kestrel_probe_backend_programs{{backend=\"{b}\"}}")
            ),
            syscall_hooks.to_string()
        );
        assert_eq!(line(out, &format!("BACKENDS {b} tracefs-enabled: ")), "0");
        let perf: u32 = line(out, &format!("BACKENDS {b} perf-events: "))
            .parse()
            .unwrap();
        let links = line(out, &format!("BACKENDS {b} link-types:"));
        if b == "fentry" {
            // No perf event: no tracepoint, no kprobe. The trampolines are
            // BPF links of type tracing, one per fentry program.
            assert_eq!(perf, 0, "fentry round: {links}");
            assert!(
                links.contains(&format!("{syscall_hooks} tracing")),
                "fentry round: {links}"
            );
        } else {
            // The check sees a syscall tracepoint or a kprobe: one perf
            // event per program.
            assert!(perf >= syscall_hooks, "{b} round: {perf} perf events");
        }
        assert_eq!(line(out, &format!("BACKENDS {b} exit: ")), "0");
        let evs = crate::qemu::json_lines(out, &format!("BACKENDS ev {b} "));
        for (dt, what) in EXPECTED {
            assert!(
                evs.iter().any(|e| e["data_type"] == dt),
                "{b} round on {series}: no data_type {dt} ({what})"
            );
        }
        let tag = format!("kbk-{b}");
        let mut n: Vec<String> = evs.iter().map(|e| normalized(e, &tag)).collect();
        n.sort();
        events.insert(b, n);
    }
    // The same events, field for field, whichever backend saw them.
    let reference = &events["tracepoint"];
    for b in ["fentry", "kprobe"] {
        let other = &events[b];
        let missing: Vec<&String> = reference.iter().filter(|e| !other.contains(e)).collect();
        let extra: Vec<&String> = other.iter().filter(|e| !reference.contains(e)).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && reference.len() == other.len(),
            "{series}: the {b} round's events differ from the tracepoint round's\n\
             only under tracepoint:\n{}\nonly under {b}:\n{}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
}

#[test]
fn hook_backends_in_a_6_12_guest() {
    check_guest("6.12");
}

#[test]
fn hook_backends_in_a_6_1_guest() {
    check_guest("6.1");
}

/// On this host fentry is refused and there are no kprobes: every syscall
/// hook is on its tracepoint, and the agent says why; asked for fentry
/// alone, it does not start, and names the refusal.
#[test]
fn this_host_falls_back_to_tracepoints_and_says_why() {
    let addr = free_loopback_addr();
    let agent = Agent::start(&["--metrics", &addr]);
    let log = agent.stderr();
    let backends = log
        .lines()
        .find(|l| l.contains("hook backends"))
        .unwrap_or_else(|| panic!("no hook backends line:\n{log}"));
    assert!(backends.contains("hook_backend=auto"), "{backends}");
    assert!(backends.contains("tracepoint="), "{backends}");
    assert!(!backends.contains("fentry="), "{backends}");
    assert!(backends.contains("fentry refused: EPERM"), "{backends}");
    assert!(
        backends.contains("kprobe: this kernel has no kprobes"),
        "{backends}"
    );
    assert!(
        log.contains("syscall hooks on tracepoints: every syscall of the host"),
        "{log}"
    );
    let metrics = metrics_page(&addr).expect("/metrics answers");
    assert!(
        metrics.contains("kestrel_probe_backend_programs{backend=\"fentry\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kestrel_probe_info{program=\"handle_openat_exit\",\
             hook=\"tracepoint/syscalls/sys_exit_openat\",backend=\"tracepoint\",\
             state=\"attached\",reason=\"fentry refused: EPERM"
        ),
        "{metrics}"
    );
    drop(agent);

    let _serial = crate::support::serial();
    let out = kestrel()
        .args(["agent", "--hook-backend", "fentry", "--no-logins"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--hook-backend fentry: program ") && err.contains("fentry refused: EPERM"),
        "{err}"
    );
    assert!(err.contains("use --hook-backend auto"), "{err}");
}
