//! Fileless code and process life: memfd_create (356), memory made
//! executable (10), thread renames (157) and process exits (60), from the
//! real kernel. Needs root.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{field, marker, md5_hex, Agent};

/// Prints the subject process's identity as the first line of its output,
/// as JSON, for [`check_common`]; the test's own lines follow.
const IDENT: &str = r#"
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def ns(n): return os.stat("/proc/self/ns/" + n).st_ino
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
    "sessionid": open("/proc/self/sessionid").read().strip(),
    "exe": os.readlink("/proc/self/exe"), "comm": open("/proc/self/comm").read().strip(),
    "uid": os.getuid(), "euid": os.geteuid(), "pid_ns": ns("pid"), "mnt_ns": ns("mnt"),
    "net_ns": ns("net"), "nodename": os.uname().nodename}), flush=True)
"#;

/// Runs a Python subject (after [`IDENT`]), waiting for it: its identity
/// and the rest of its output, one line per item.
fn python(script: &str) -> (Value, Vec<String>) {
    python_exits(script, 0)
}

/// [`python`] for a subject that exits with `code`.
fn python_exits(script: &str, code: i32) -> (Value, Vec<String>) {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &format!("{IDENT}\n{script}")])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(String::from);
    let ident: Value = serde_json::from_str(&lines.next().unwrap()).unwrap();
    (ident, lines.collect())
}

/// Every field the kinds share, checked against what the subject said of
/// itself and, for the placement fields (namespaces, cgroup, container),
/// against its exec event, whose own test checks them.
fn check_common(agent: &Agent, ev: &Value, id: &Value, data_type: &str) {
    let pid = id["pid"].to_string();
    let exec = agent.wait_for("the subject's exec", |e| {
        e["data_type"] == "59" && e["tgid"] == pid.as_str()
    });
    assert_eq!(field(ev, "data_type"), data_type);
    for (k, v) in [
        ("uid", id["uid"].to_string()),
        ("euid", id["euid"].to_string()),
        ("pid", pid.clone()),
        ("tgid", pid.clone()),
        ("ppid", id["ppid"].to_string()),
        ("pgid", id["pgid"].to_string()),
        ("sessionid", id["sessionid"].as_str().unwrap().to_string()),
        ("nodename", id["nodename"].as_str().unwrap().to_string()),
        ("exe", id["exe"].as_str().unwrap().to_string()),
        ("exe_md5", md5_hex(Path::new(id["exe"].as_str().unwrap()))),
        ("user", "root".to_string()),
        ("pid_ns", id["pid_ns"].to_string()),
        ("mnt_ns", id["mnt_ns"].to_string()),
        ("net_ns", id["net_ns"].to_string()),
        ("ns_pid", pid.clone()),
    ] {
        assert_eq!(field(ev, k), v, "{k} of {ev}");
    }
    for k in [
        "hostname",
        "local_ip",
        "cgroup_id",
        "container_id",
        "container_runtime",
        "pod_uid",
        "container_name",
        "image",
        "pod_name",
        "pod_namespace",
    ] {
        assert_eq!(field(ev, k), field(&exec, k), "{k} of {ev}");
    }
    let t: u64 = field(ev, "time").parse().unwrap();
    let exec_t: u64 = field(&exec, "time").parse().unwrap();
    assert!(
        t >= exec_t && t < exec_t + 60_000,
        "time {t} vs exec {exec_t}"
    );
    assert!(field(ev, "event_id").contains('-'));
}

/// Fields of `ev` besides the common ones: exactly `want`, in order.
fn check_own(ev: &Value, want: &[(&str, &str)]) {
    for (k, v) in want {
        assert_eq!(field(ev, k), *v, "{k} of {ev}");
    }
}

/// memfd_create(2), data_type 356: the name and flags of the file made,
/// and a refused call (unknown flag) with its error and the name asked.
#[test]
fn memfd_create_is_reported_with_its_name_and_flags() {
    let agent = Agent::start(&[]);
    let mark = marker("memfd");
    let name = &mark[..mark.len().min(200)];
    let (id, out) = python(&format!(
        "fd = os.memfd_create({name:?}, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)\n\
         print(fd)\n\
         try:\n    os.memfd_create('bad-' + {name:?}, 0x1000)\nexcept OSError as e:\n    print(e.errno)\n"
    ));
    let pid = id["pid"].to_string();
    let ev = agent.wait_for("the memfd_create", |e| {
        e["data_type"] == "356" && e["tgid"] == pid.as_str() && e["fdname"] == name
    });
    check_common(&agent, &ev, &id, "356");
    check_own(
        &ev,
        &[
            ("comm", "python3"),
            ("fdname", name),
            ("flags", "3"), // MFD_CLOEXEC | MFD_ALLOW_SEALING
            ("res", &out[0]),
        ],
    );
    let bad_name = format!("bad-{name}");
    let bad = agent.wait_for("the refused memfd_create", |e| {
        e["data_type"] == "356" && e["tgid"] == pid.as_str() && e["fdname"] == bad_name.as_str()
    });
    check_common(&agent, &bad, &id, "356");
    assert_eq!(out[1], "22");
    check_own(&bad, &[("flags", "4096"), ("res", "-22")]);
    agent.stop();
}

/// The memory subject: every way to make memory executable that the
/// kernel side reports, and the two it must not (a file mapped r-x as
/// ld.so maps libraries, anonymous memory made only writable), each line
/// `what addr`. The filtered cases come before the last reported one, so
/// that their events, had there been any, would be out by then.
const MEMORY: &str = r#"
import mmap as M, tempfile
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
R, W, X = 1, 2, 4
SHARED, PRIV, ANON = 0x01, 0x02, 0x20
def mm(prot, flags, fd=-1):
    a = libc.mmap(None, 4096, prot, flags, fd, 0)
    assert a not in (None, 2**64 - 1), ctypes.get_errno()
    return a
def prot(a, p):
    assert libc.mprotect(a, 4096, p) == 0, ctypes.get_errno()
# Anonymous RWX at once.
print("rwx", mm(R | W | X, PRIV | ANON))
# Anonymous RW (not reported), then made RX.
a = mm(R | W, PRIV | ANON)
ctypes.memset(a, 0xc3, 16)
prot(a, R | X)
print("rw_then_rx", a)
# A file mapped writable and written, then made RX.
f = tempfile.NamedTemporaryFile(dir="/tmp", prefix=MARK)
f.write(b"\0" * 4096); f.flush()
a = mm(R | W, PRIV, f.fileno())
ctypes.memset(a, 0xc3, 16)
prot(a, R | X)
print("file_rw_then_rx", a, f.name)
# pkey_mprotect (key -1: the default) of anonymous memory, as the syscall
# (glibc's wrapper calls mprotect for key -1).
a = mm(R | W, PRIV | ANON)
assert libc.syscall(329, a, 4096, R | X, -1) == 0, ctypes.get_errno()
print("pkey", a)
# A memfd mapped RX: a file, but without a name.
m = os.memfd_create(MARK)
os.write(m, b"\0" * 4096)
print("memfd", mm(R | X, PRIV, m))
# One view written, another executed: the file is mapped shared RW, then
# shared RX.
mm(R | W, SHARED, f.fileno())
print("two_views", mm(R | X, SHARED, f.fileno()), f.name)
# Not reported: a library mapped r-x (as ld.so maps one), and anonymous
# memory made read-write.
lib = os.open(LIB, os.O_RDONLY)
print("lib", mm(R | X, PRIV, lib))
a = mm(R, PRIV | ANON)
prot(a, R | W)
print("anon_rw", a)
# The last, reported.
print("last", mm(R | W | X, PRIV | ANON))
"#;

/// data_type 10: anonymous memory mapped RWX, mapped RW then made RX, a
/// written file mapping made RX, pkey_mprotect, a memfd mapped RX; and
/// the filtered cases (a file mapped r-x, memory made RW) reported never.
#[test]
fn memory_made_executable_is_reported_and_library_mappings_are_not() {
    let agent = Agent::start(&[]);
    let mark = marker("mem");
    let lib = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let (id, out) = python(&format!("MARK = {mark:?}\nLIB = {lib:?}\n{MEMORY}"));
    let pid = id["pid"].to_string();
    let at = |what: &str| -> (String, Vec<String>) {
        let line = out
            .iter()
            .find(|l| l.split(' ').next() == Some(what))
            .unwrap_or_else(|| panic!("{what} in {out:?}"));
        let mut it = line.split(' ').skip(1);
        let addr: u64 = it.next().unwrap().parse().unwrap();
        (format!("{addr:016x}"), it.map(String::from).collect())
    };
    let ev_at = |what: &str, syscall: &str| -> Value {
        let (addr, _) = at(what);
        let ev = agent.wait_for(what, |e| {
            e["data_type"] == "10"
                && e["tgid"] == pid.as_str()
                && e["addr"] == addr.as_str()
                && e["syscall"] == syscall
        });
        check_common(&agent, &ev, &id, "10");
        // The mapping holds the page (it may have merged with neighbours).
        let a = u64::from_str_radix(&addr, 16).unwrap();
        let hex = |k: &str| u64::from_str_radix(field(&ev, k), 16).unwrap();
        assert!(hex("vm_start") <= a && a + 4096 <= hex("vm_end"), "{ev}");
        ev
    };
    let dec = |hex: &str| u64::from_str_radix(hex, 16).unwrap().to_string();
    let exe = id["exe"].as_str().unwrap();

    let (rwx, _) = at("rwx");
    let ev = ev_at("rwx", "mmap");
    let own = |prot: &str, file: &str, anon: &str, written: &str, writable: &str| {
        [
            ("comm", "python3".to_string()),
            ("mprotect_prot", prot.to_string()),
            ("owner_pid", pid.clone()),
            ("owner_file", exe.to_string()),
            ("vm_file", file.to_string()),
            ("len", "4096".to_string()),
            ("vm_anonymous", anon.to_string()),
            ("vm_written", written.to_string()),
            ("vm_file_writable", writable.to_string()),
            ("vm_file_truncated", "false".to_string()),
            ("vma_unknown", "false".to_string()),
            ("read_implies_exec", "false".to_string()),
        ]
    };
    let check = |ev: &Value, want: &[(&str, String)]| {
        for (k, v) in want {
            assert_eq!(field(ev, k), v, "{k} of {ev}");
        }
    };
    check(&ev, &own("7", "", "true", "false", ""));
    check(
        &ev,
        &[
            ("res", dec(&rwx)),
            ("old_prot", String::new()),
            ("map_flags", "34".into()), // MAP_PRIVATE | MAP_ANONYMOUS
            ("fd", "-1".into()),
            ("pkey", String::new()),
        ],
    );

    let ev = ev_at("rw_then_rx", "mprotect");
    // Written to before: the anonymous pages exist (anon_vma).
    check(&ev, &own("5", "", "true", "true", ""));
    check(
        &ev,
        &[
            ("res", "0".into()),
            ("old_prot", "3".into()),
            ("map_flags", String::new()),
            ("fd", String::new()),
            ("pkey", String::new()),
        ],
    );

    let (_, rest) = at("file_rw_then_rx");
    let ev = ev_at("file_rw_then_rx", "mprotect");
    // The file is still open for writing (the test holds it).
    check(&ev, &own("5", &rest[0], "false", "true", "true"));
    check(&ev, &[("old_prot", "3".into())]);

    let ev = ev_at("pkey", "pkey_mprotect");
    // Never written: no anonymous pages yet.
    check(&ev, &own("5", "", "true", "false", ""));
    check(
        &ev,
        &[
            ("res", "0".into()),
            ("old_prot", "3".into()),
            ("pkey", "-1".into()),
        ],
    );

    let (a, _) = at("memfd");
    let ev = ev_at("memfd", "mmap");
    check(
        &ev,
        // A memfd's descriptors do not count as writers (the kernel makes
        // its file without the open path that counts them).
        &own(
            "5",
            &format!("/memfd:{mark} (deleted)"),
            "false",
            "false",
            "false",
        ),
    );
    check(
        &ev,
        &[
            ("res", dec(&a)),
            ("map_flags", "2".into()),
            ("old_prot", String::new()),
        ],
    );
    assert_ne!(field(&ev, "fd"), "-1");

    let (a, rest) = at("two_views");
    let ev = ev_at("two_views", "mmap");
    check(&ev, &own("5", &rest[0], "false", "false", "true"));
    check(
        &ev,
        &[
            ("res", dec(&a)),
            ("map_flags", "1".into()), // MAP_SHARED
            ("old_prot", String::new()),
        ],
    );

    ev_at("last", "mmap");
    let (lib, _) = at("lib");
    let (anon_rw, _) = at("anon_rw");
    let seen: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["data_type"] == "10"
                && e["tgid"] == pid.as_str()
                && (e["addr"] == lib.as_str() || e["addr"] == anon_rw.as_str())
        })
        .collect();
    assert!(seen.is_empty(), "filtered mappings reported: {seen:?}");
    agent.stop();
}

/// data_type 157: prctl(PR_SET_NAME) with the new name and the old, a
/// write to /proc/self/comm (the other way to rename), and neither another
/// prctl option nor the renaming an exec does.
#[test]
fn thread_renames_are_reported_with_the_new_name() {
    let agent = Agent::start(&[]);
    let mark = marker("comm");
    // The name keeps 15 bytes: the marker's unique tail.
    let name = mark[mark.len() - 15..].to_string();
    let proc_name = format!("p{}", &name[1..]);
    let (id, _) = python(&format!(
        "assert libc.prctl(4, 1, 0, 0, 0) == 0  # PR_SET_DUMPABLE: not a rename\n\
         assert libc.prctl(15, {name:?}.encode(), 0, 0, 0) == 0\n\
         open('/proc/self/comm', 'w').write({proc_name:?})\n"
    ));
    let pid = id["pid"].to_string();
    let ev = agent.wait_for("the prctl", |e| {
        e["data_type"] == "157" && e["tgid"] == pid.as_str() && e["new_name"] == name.as_str()
    });
    check_common(&agent, &ev, &id, "157");
    check_own(
        &ev,
        &[
            ("comm", "python3"),
            ("option", "15"),
            ("new_name", &name),
            ("old_name", "python3"),
            ("via", "prctl"),
            ("syscall", "157"),
            ("renamer_pid", &pid),
        ],
    );
    let ev = agent.wait_for("the /proc/self/comm write", |e| {
        e["data_type"] == "157" && e["tgid"] == pid.as_str() && e["new_name"] == proc_name.as_str()
    });
    check_common(&agent, &ev, &id, "157");
    check_own(
        &ev,
        &[
            ("comm", &name),
            ("option", ""),
            ("new_name", &proc_name),
            ("old_name", &name),
            ("via", "proc_comm"),
            ("syscall", "1"), // write(2)
            ("renamer_pid", &pid),
        ],
    );
    // Two renames only: not the exec's, not PR_SET_DUMPABLE.
    let n = agent
        .events()
        .iter()
        .filter(|e| e["data_type"] == "157" && e["tgid"] == pid.as_str())
        .count();
    assert_eq!(n, 2);
    agent.stop();
}

/// data_type 60: a process ending with a known status after a known time,
/// one killed by a signal, one reported once though its thread exited
/// before it; and with `--exit-events false`, none.
#[test]
fn process_exits_are_reported_once_with_code_and_runtime() {
    let agent = Agent::start(&[]);
    let t = Instant::now();
    let st = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3; exit 7"])
        .status()
        .unwrap();
    let took = t.elapsed().as_millis() as u64;
    assert_eq!(st.code(), Some(7));
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let killed = child.id().to_string();
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));

    let ev = agent.wait_for("the shell's exit", |e| {
        e["data_type"] == "60"
            && e["exit_code"] == "1792"
            && e["exe"] == "/usr/bin/dash"
            && e["ppid"] == std::process::id().to_string().as_str()
    });
    let runtime: u64 = field(&ev, "runtime_ms").parse().unwrap();
    assert!(
        (300..=took + 50).contains(&runtime),
        "runtime_ms {runtime}, the test saw {took} ms"
    );
    check_own(
        &ev,
        &[
            ("comm", "sh"),
            ("exit_code", "1792"), // 7 << 8, as wait(2) has it
            ("exit_status", "7"),
            ("signal", ""),
            ("core_dumped", "false"),
            ("uid", "0"),
            ("euid", "0"),
        ],
    );
    assert_eq!(field(&ev, "pid"), field(&ev, "tgid"));
    let ev = agent.wait_for("the killed sleep", |e| {
        e["data_type"] == "60" && e["tgid"] == killed.as_str()
    });
    check_own(
        &ev,
        &[
            ("comm", "sleep"),
            ("exe", "/usr/bin/sleep"),
            ("exit_code", "9"),
            ("exit_status", ""),
            ("signal", "9"),
            ("core_dumped", "false"),
        ],
    );
    let runtime: u64 = field(&ev, "runtime_ms").parse().unwrap();
    assert!((200..5_000).contains(&runtime), "{runtime}");

    // A thread that ends before its process: one event, the process's.
    let (id, _) = python_exits(
        "import threading, time\n\
         t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
         time.sleep(0.1)\n\
         sys.stdout.flush(); os._exit(3)\n",
        3,
    );
    let pid = id["pid"].to_string();
    let ev = agent.wait_for("the python exit", |e| {
        e["data_type"] == "60" && e["tgid"] == pid.as_str()
    });
    check_common(&agent, &ev, &id, "60");
    check_own(
        &ev,
        &[
            ("comm", "python3"),
            ("exit_code", "768"),
            ("exit_status", "3"),
            ("signal", ""),
            ("core_dumped", "false"),
        ],
    );
    // The exit event is about the process, so the agent's own later
    // events cannot be it: wait a moment for a stray second one.
    std::thread::sleep(Duration::from_millis(300));
    let n = agent
        .events()
        .iter()
        .filter(|e| e["data_type"] == "60" && e["tgid"] == pid.as_str())
        .count();
    assert_eq!(n, 1);
    agent.stop();

    let agent = Agent::start(&["--exit-events", "false"]);
    let mark = marker("noexit");
    let st = Command::new("/bin/sh")
        .args(["-c", &format!(": {mark}; exit 5")])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(5));
    let exec = agent.wait_for("the shell", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    let sh = field(&exec, "tgid").to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!agent
        .events()
        .iter()
        .any(|e| e["data_type"] == "60" && e["tgid"] == sh.as_str()));
    let c = agent.stop();
    assert_eq!(c["exit_submitted"], 0);
}
