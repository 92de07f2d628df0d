//! Which program an event names (`exe`, `exe_md5`), when the path given to
//! exec lies: memfds run through /proc/self/fd, fexecve, execveat with a
//! directory descriptor, scripts, symlinks, paths too long to walk, a file
//! renamed over the path or modified in place after the exec, a forked
//! child that is gone before its event is looked at; and watched
//! environment variables pushed past the copied prefix. Every attack is
//! performed for real by a small Python helper. Needs root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{field, marker, md5_hex, Agent};

/// The attacks, one mode each: `python3 -c HELPER MODE ARGS...`.
const HELPER: &str = r##"
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
mode, args = sys.argv[1], sys.argv[2:]

def memfd_with(name, path):
    fd = os.memfd_create(name, 0)
    with open(path, "rb") as f:
        os.write(fd, f.read())
    return fd

if mode == "memfd":            # NAME SRC ARGS...: exec a memfd by /proc/self/fd/N
    fd = memfd_with(args[0], args[1])
    os.execv("/proc/self/fd/%d" % fd, args[2:])
elif mode == "fexecve":        # PATH ARGS...: execveat(fd, "", AT_EMPTY_PATH)
    fd = os.open(args[0], os.O_RDONLY)
    os.execve(fd, args[1:], dict(os.environ))
elif mode == "execveat":       # DIR NAME ARGS...: execveat(dirfd, NAME)
    dfd = os.open(args[0], os.O_RDONLY | os.O_DIRECTORY)
    argv = (ctypes.c_char_p * len(args))(*[a.encode() for a in args[1:]], None)
    envp = (ctypes.c_char_p * 1)(None)
    libc.syscall(322, dfd, args[1].encode(), argv, envp, 0)
    sys.exit("execveat: %d" % ctypes.get_errno())
elif mode == "memfd-script":   # MARK: fexecve of a memfd holding a shell script
    fd = os.memfd_create("script", 0)
    os.write(fd, b"#!/bin/sh\nexit 0\n")
    os.execve(fd, ["script", args[0]], {})
elif mode == "deep":           # DIR SRC ARGS...: ./name from a deep directory
    os.chdir(args[0])
    os.execv("./name", args[2:])
elif mode == "rename-after":   # PROG OTHER MARK: run PROG, then rename OTHER over it
    pid = os.fork()
    if pid == 0:
        os.execv(args[0], [args[0], args[2]])
    os.waitpid(pid, 0)
    os.rename(args[1], args[0])
elif mode == "fork-child":     # TRACEE_PID: a child connects, ptraces, exits
    pid = os.fork()
    if pid == 0:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", 1))
        except OSError:
            pass
        libc.ptrace(2, int(args[0]), 0, 0)  # PTRACE_PEEKDATA: refused, reported
        os._exit(0)
    print(pid, flush=True)
    os.waitpid(pid, 0)
elif mode == "env":            # COUNT PAD VALUE ARGS...: LD_PRELOAD after COUNT vars and PAD bytes
    env = {"V%d" % i: "1" for i in range(int(args[0]))}
    env["PAD"] = "x" * int(args[1])
    env["LD_PRELOAD"] = args[2]
    os.execve(args[3], args[3:], env)
"##;

fn helper(mode: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg("-c")
        .arg(HELPER)
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("python3 (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "helper {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(marker(tag));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_of(src: &str, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// The successful exec whose arguments hold `mark`, the helper's own
/// aside (its script is among its arguments).
fn exec_with(mark: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| {
        e["data_type"] == "59"
            && e["res"] == "0"
            && e["argv"]
                .as_str()
                .is_some_and(|a| a.contains(mark) && !a.contains("import ctypes"))
    }
}

fn canon(p: &str) -> String {
    std::fs::canonicalize(p)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// The exec names `file` by the kernel's identity and path, with its
/// verified hash (the process having exited, the file is found by path).
/// These tests are about which file is hashed, not about how much: a
/// budget spent by the rest of a busy host (a large executable hashed in
/// the same second) would leave their hashes out (`budget`), so it is
/// opened wide here. exec.rs tests the budget itself.
const UNBUDGETED: &[&str] = &[
    "--exe-md5-bytes-per-sec",
    "1099511627776",
    "--exe-md5-ms-per-sec",
    "1000",
];

fn assert_names(ev: &Value, file: &Path) {
    let m = std::fs::metadata(file).unwrap();
    assert_eq!(field(ev, "exe"), file.to_str().unwrap(), "{ev}");
    assert_eq!(field(ev, "exe_inode"), m.ino().to_string(), "{ev}");
    assert_eq!(field(ev, "exe_md5"), md5_hex(file), "{ev}");
    assert_eq!(field(ev, "exe_md5_status"), "verified", "{ev}");
    assert_eq!(field(ev, "exe_memfd"), "false", "{ev}");
}

#[test]
fn a_memfd_run_through_proc_self_fd_is_named_as_the_memfd() {
    let agent = Agent::start(UNBUDGETED);
    // Short-lived: only the kernel's record is left to name it.
    let mark = marker("memfd");
    let name = format!("kmfd{}", std::process::id());
    helper("memfd", &[&name, "/bin/true", "true", &mark]);
    let ev = agent.wait_for("the memfd exec", exec_with(&mark));
    assert!(field(&ev, "filename").starts_with("/proc/self/fd/"), "{ev}");
    assert_eq!(
        field(&ev, "exe"),
        format!("/memfd:{name} (deleted)"),
        "{ev}"
    );
    assert_eq!(field(&ev, "exe_memfd"), "true", "{ev}");
    assert_eq!(field(&ev, "exe_deleted"), "true", "{ev}");
    assert!(!field(&ev, "exe_inode").is_empty(), "{ev}");
    // Gone with its process: nothing to hash, and said so.
    let status = field(&ev, "exe_md5_status");
    if field(&ev, "exe_md5").is_empty() {
        assert_eq!(status, "gone", "{ev}");
    } else {
        assert_eq!(field(&ev, "exe_md5"), md5_hex(Path::new("/bin/true")));
        assert_eq!(status, "verified", "{ev}");
    }

    // Alive when looked at: hashed through /proc/PID/exe, verified.
    let mark = marker("memfd-live");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(HELPER)
        // The marker as argv[0]: sleep takes every other argument as a
        // duration.
        .args(["memfd", &name, "/bin/sleep", &mark, "30"])
        .spawn()
        .unwrap();
    let ev = agent.wait_for("the live memfd exec", exec_with(&mark));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        field(&ev, "exe"),
        format!("/memfd:{name} (deleted)"),
        "{ev}"
    );
    assert_eq!(field(&ev, "exe_memfd"), "true", "{ev}");
    assert_eq!(
        field(&ev, "exe_md5"),
        md5_hex(Path::new("/bin/sleep")),
        "{ev}"
    );
    assert_eq!(field(&ev, "exe_md5_status"), "verified", "{ev}");
    agent.stop();
}

#[test]
fn fexecve_execveat_symlink_and_script_name_the_file_that_ran() {
    let agent = Agent::start(UNBUDGETED);
    let dir = scratch("fexec");
    let prog = copy_of("/bin/true", &dir, "prog");

    let mark = marker("fexecve");
    helper("fexecve", &[prog.to_str().unwrap(), "prog", &mark]);
    let ev = agent.wait_for("the fexecve", exec_with(&mark));
    assert!(field(&ev, "filename").starts_with("/dev/fd/"), "{ev}");
    assert_names(&ev, &prog);

    let mark = marker("execveat");
    helper("execveat", &[dir.to_str().unwrap(), "prog", &mark]);
    let ev = agent.wait_for("the execveat", exec_with(&mark));
    assert!(field(&ev, "filename").ends_with("/prog"), "{ev}");
    assert!(field(&ev, "filename").starts_with("/dev/fd/"), "{ev}");
    assert_names(&ev, &prog);

    let link = dir.join("link");
    std::os::unix::fs::symlink(&prog, &link).unwrap();
    let mark = marker("symlink");
    Command::new(&link).arg(&mark).status().unwrap();
    let ev = agent.wait_for("the exec through a symlink", exec_with(&mark));
    assert_eq!(field(&ev, "filename"), link.to_str().unwrap());
    assert_names(&ev, &prog);

    // A script in a memfd: the program mapped is its interpreter.
    let mark = marker("mscript");
    helper("memfd-script", &[&mark]);
    let ev = agent.wait_for("the memfd script", exec_with(&mark));
    assert!(field(&ev, "filename").starts_with("/dev/fd/"), "{ev}");
    assert_names(&ev, Path::new(&canon("/bin/sh")));
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_path_too_long_to_walk_is_marked_and_keeps_its_identity() {
    let agent = Agent::start(UNBUDGETED);
    let top = scratch("deep");
    let mut deep = top.clone();
    for i in 0..20 {
        deep.push(format!("{i:02}{}", "d".repeat(118)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let prog = copy_of("/bin/true", &deep, "name");
    assert!(prog.as_os_str().len() > 2048);
    let mark = marker("deep");
    helper(
        "deep",
        &[deep.to_str().unwrap(), "/bin/true", "name", &mark],
    );
    let ev = agent.wait_for("the exec of ./name", exec_with(&mark));
    let exe = field(&ev, "exe");
    // Gone: the kernel's innermost 1 KiB, marked, and the inode.
    assert!(exe.starts_with("..."), "{ev}");
    assert!(prog.to_str().unwrap().ends_with(&exe[3..]), "{ev}");
    assert!(exe.ends_with("/name"), "{ev}");
    assert_eq!(field(&ev, "exe_truncated"), "true", "{ev}");
    let ino = std::fs::metadata(&prog).unwrap().ino();
    assert_eq!(field(&ev, "exe_inode"), ino.to_string(), "{ev}");
    assert_eq!(field(&ev, "exe_md5"), "", "{ev}");
    assert_eq!(field(&ev, "exe_md5_status"), "gone", "{ev}");
    agent.stop();
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn a_binary_changed_in_place_with_its_mtime_put_back_gets_its_new_hash() {
    let agent = Agent::start(UNBUDGETED);
    let dir = scratch("inplace");
    let prog = copy_of("/bin/true", &dir, "prog");
    let first = marker("inplace-a");
    Command::new(&prog).arg(&first).status().unwrap();
    let ev = agent.wait_for("the first run", exec_with(&first));
    assert_eq!(field(&ev, "exe_md5"), md5_hex(&prog));
    let old_md5 = md5_hex(&prog);

    // Same size, same mtime, other content: the last byte is in the
    // section headers, which loading does not read.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mtime = std::fs::metadata(&prog).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&prog).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&prog, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&prog)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&prog).unwrap().modified().unwrap(), mtime);
    let second = marker("inplace-b");
    assert!(Command::new(&prog).arg(&second).status().unwrap().success());
    let ev = agent.wait_for("the run after the change", exec_with(&second));
    assert_ne!(field(&ev, "exe_md5"), old_md5, "{ev}");
    assert_eq!(field(&ev, "exe_md5"), md5_hex(&prog), "{ev}");
    assert_eq!(field(&ev, "exe_md5_status"), "verified", "{ev}");
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_renamed_over_the_path_after_exit_is_not_hashed_as_the_program() {
    let agent = Agent::start(UNBUDGETED);
    let dir = scratch("renamed");
    let prog = copy_of("/usr/bin/id", &dir, "prog");
    let other = copy_of("/bin/true", &dir, "other");
    let (id_md5, true_md5) = (md5_hex(&prog), md5_hex(&other));
    let ino = std::fs::metadata(&prog).unwrap().ino();
    let mark = marker("renamed");
    helper(
        "rename-after",
        &[prog.to_str().unwrap(), other.to_str().unwrap(), &mark],
    );
    let ev = agent.wait_for("the exec of the renamed-over program", exec_with(&mark));
    assert_eq!(field(&ev, "exe"), prog.to_str().unwrap());
    assert_eq!(field(&ev, "exe_inode"), ino.to_string(), "{ev}");
    assert_ne!(field(&ev, "exe_md5"), true_md5, "{ev}");
    // Either hashed before the rename (verified) or refused after it.
    match field(&ev, "exe_md5_status") {
        "verified" => assert_eq!(field(&ev, "exe_md5"), id_md5, "{ev}"),
        "changed" => assert_eq!(field(&ev, "exe_md5"), "", "{ev}"),
        s => panic!("exe_md5_status {s}: {ev}"),
    }
    let c = agent.stop();
    assert!(c.contains_key("md5_changed"), "{c:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_forked_child_gone_before_its_events_still_names_its_program() {
    let agent = Agent::start(UNBUDGETED);
    let mut tracee = Command::new("/bin/sleep").arg("5").spawn().unwrap();
    let out = helper("fork-child", &[&tracee.id().to_string()]);
    let child = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = canon(String::from_utf8(out.stdout).unwrap().trim());
    let of_child = |kind: &'static str| {
        let child = child.clone();
        move |e: &Value| e["data_type"] == kind && e["pid"].as_str() == Some(child.as_str())
    };
    let conn = agent.wait_for("the child's connect", of_child("42"));
    assert_eq!(field(&conn, "dport"), "1");
    assert_eq!(field(&conn, "exe"), python, "{conn}");
    assert_eq!(
        field(&conn, "exe_md5"),
        md5_hex(Path::new(&python)),
        "{conn}"
    );
    let tr = agent.wait_for("the child's ptrace", of_child("101"));
    assert_eq!(field(&tr, "exe"), python, "{tr}");
    tracee.kill().unwrap();
    tracee.wait().unwrap();
    agent.stop();
}

#[test]
fn ld_preload_after_8_kib_of_environment_is_found_or_the_cut_is_said() {
    let agent = Agent::start(UNBUDGETED);
    let value = format!("/nonexistent/{}.so", marker("preload"));
    let mark = marker("bigenv");
    helper("env", &["3", "9000", &value, "/bin/true", &mark]);
    let ev = agent.wait_for("the exec with a large environment", exec_with(&mark));
    assert_eq!(field(&ev, "LD_PRELOAD"), value, "{ev}");
    assert_eq!(field(&ev, "env_truncated"), "false", "{ev}");

    // More strings than the kernel reads one by one: the search stops,
    // and says so.
    let mark = marker("hugeenv");
    helper("env", &["1500", "9000", &value, "/bin/true", &mark]);
    let ev = agent.wait_for("the exec with a huge environment", exec_with(&mark));
    assert_eq!(field(&ev, "env_truncated"), "true", "{ev}");
    agent.stop();
}
