//! Watched paths (data_types 608 and 609) from real syscalls: reads and
//! writes of watched files, by absolute and relative names, truncation,
//! the pattern for home directories, the flags that extend and replace the
//! defaults, and a change made by the control server at run time. Needs
//! root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::server::{ctl, scratch, start_server, wait_until, Proc};
use crate::support::{kestrel, marker, serial, Agent};
use serde_json::Value;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// open(2) (glibc: openat) with `flags`, closed at once; the descriptor.
fn open_close(path: &Path, flags: i32) -> i32 {
    // SAFETY: plain syscalls on a path this test owns.
    unsafe {
        let fd = libc::open(c(path).as_ptr(), flags, 0o600);
        assert!(
            fd >= 0,
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        libc::close(fd);
        fd
    }
}

/// The super_block s_id the kernel gives the filesystem holding `path`:
/// the device's name for a block device, the type for tmpfs and others.
fn sb_id_of(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut best: Option<(usize, String)> = None;
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let point = f[4];
        let sep = f.iter().position(|x| *x == "-").unwrap();
        let (fstype, source) = (f[sep + 1], f[sep + 2]);
        let under =
            point == "/" || path.starts_with(point) && path.as_os_str().len() >= point.len();
        if under && best.as_ref().is_none_or(|(n, _)| point.len() >= *n) {
            let id = if source.starts_with("/dev/") {
                source.rsplit('/').next().unwrap().to_string()
            } else {
                fstype.to_string()
            };
            best = Some((point.len(), id));
        }
    }
    best.unwrap().1
}

fn is(e: &Value, dt: &str, file: &str) -> bool {
    e["data_type"] == dt && e["file"].as_str() == Some(file)
}

/// Every field an event of ours must have, with the values we know.
fn check(e: &Value, dt: &str, file: &Path, flags: i32, syscall: &str, created: bool, pid: u32) {
    assert_eq!(e["data_type"], dt, "{e}");
    assert_eq!(e["file"].as_str(), file.to_str(), "{e}");
    assert_eq!(e["sb_id"].as_str().unwrap(), sb_id_of(file), "{e}");
    assert_eq!(e["flags"], flags.to_string().as_str(), "{e}");
    assert_eq!(e["syscall"], syscall, "{e}");
    assert_eq!(e["created"], if created { "true" } else { "false" }, "{e}");
    assert_eq!(e["tgid"], pid.to_string().as_str(), "{e}");
    assert_eq!(e["uid"], "0", "{e}");
    assert_eq!(e["euid"], "0", "{e}");
    for f in ["exe", "pid", "comm", "hostname", "time", "mnt_ns", "res"] {
        assert!(!e[f].as_str().unwrap_or("").is_empty(), "{f} empty: {e}");
    }
}

#[test]
fn watched_files_are_reported_on_read_write_and_truncate() {
    let me = std::process::id();
    let dir = std::env::temp_dir().join(marker("watched"));
    std::fs::create_dir_all(&dir).unwrap();
    let agent = Agent::start(&[]);

    // A read of /etc/shadow (a default): 609.
    let shadow = Path::new("/etc/shadow");
    let fd = open_close(shadow, libc::O_RDONLY);
    let e = agent.wait_for("609 for /etc/shadow", |e| {
        is(e, "609", "/etc/shadow") && e["tgid"] == me.to_string().as_str()
    });
    check(&e, "609", shadow, libc::O_RDONLY, "openat", false, me);
    assert_eq!(e["res"], fd.to_string().as_str());

    // The same file through a directory descriptor and a relative name.
    // SAFETY: plain syscalls on descriptors this test owns.
    let rel_fd = unsafe {
        let dfd = libc::open(
            c(Path::new("/etc")).as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        );
        assert!(dfd >= 0);
        let name = CString::new("./shadow").unwrap();
        let fd = libc::openat(dfd, name.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW);
        assert!(fd >= 0);
        libc::close(fd);
        libc::close(dfd);
        fd
    };
    let e = agent.wait_for("609 for /etc/shadow by dirfd", |e| {
        is(e, "609", "/etc/shadow")
            && e["tgid"] == me.to_string().as_str()
            && e["res"] == rel_fd.to_string().as_str()
            && e["flags"] == (libc::O_RDONLY | libc::O_NOFOLLOW).to_string().as_str()
    });
    check(
        &e,
        "609",
        shadow,
        libc::O_RDONLY | libc::O_NOFOLLOW,
        "openat",
        false,
        me,
    );

    // A new file under /etc/cron.d/ (a dot in its name: cron skips it):
    // its creation (602) and its write-open (608, created), then a
    // write-open of the existing file (608).
    let cron = PathBuf::from(format!("/etc/cron.d/{}.test", marker("w")));
    std::fs::create_dir_all("/etc/cron.d").unwrap();
    let wflags = libc::O_WRONLY | libc::O_CREAT;
    open_close(&cron, wflags);
    let cs = cron.to_str().unwrap();
    let e = agent.wait_for("608 for a new cron file", |e| {
        is(e, "608", cs) && e["created"] == "true"
    });
    check(&e, "608", &cron, wflags, "openat", true, me);
    agent.wait_for("602 for the new cron file", |e| {
        e["data_type"] == "602" && e["file_path"].as_str() == Some(cs)
    });
    open_close(&cron, libc::O_RDWR);
    let e = agent.wait_for("608 for a write-open", |e| {
        is(e, "608", cs) && e["flags"] == libc::O_RDWR.to_string().as_str()
    });
    check(&e, "608", &cron, libc::O_RDWR, "openat", false, me);

    // truncate(2) by a name relative to the working directory, with a
    // `..` in it, and ftruncate(2), from a Python child.
    let py = format!(
        "import os\nos.chdir('/etc/cron.d')\nos.truncate('../cron.d/{n}', 0)\n\
         fd = os.open('{p}', os.O_WRONLY)\nos.ftruncate(fd, 0)\nprint(os.getpid())\n",
        n = cron.file_name().unwrap().to_str().unwrap(),
        p = cs
    );
    let out = Command::new("python3").args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let child: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let tflags = libc::O_WRONLY | libc::O_TRUNC;
    let e = agent.wait_for("608 for truncate", |e| {
        e["syscall"] == "truncate" && e["tgid"] == child.to_string().as_str()
    });
    // The name as passed, joined to the working directory.
    let passed = format!(
        "/etc/cron.d/../cron.d/{}",
        cron.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(e["file"].as_str(), Some(passed.as_str()), "{e}");
    check(
        &e,
        "608",
        Path::new(&passed),
        tflags,
        "truncate",
        false,
        child,
    );
    let e = agent.wait_for("608 for ftruncate", |e| {
        e["syscall"] == "ftruncate" && e["tgid"] == child.to_string().as_str()
    });
    // ftruncate's flags are the file's (O_WRONLY, O_LARGEFILE and
    // O_CLOEXEC as Python opens it).
    let f: i32 = e["flags"].as_str().unwrap().parse().unwrap();
    assert_eq!(f & libc::O_ACCMODE, libc::O_WRONLY, "{e}");
    check(&e, "608", &cron, f, "ftruncate", false, child);

    // A home directory made after the agent started, matched by the
    // pattern /home/*/.ssh/authorized_keys*.
    let home = PathBuf::from(format!("/home/{}", marker("u")));
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let keys = home.join(".ssh/authorized_keys");
    open_close(&keys, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    let ks = keys.to_str().unwrap();
    let e = agent.wait_for("608 for authorized_keys", |e| is(e, "608", ks));
    check(
        &e,
        "608",
        &keys,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        "openat",
        true,
        me,
    );

    // Unwatched: a file in the scratch directory, read and written, and
    // a file beside a watched one in /home/<user>/.ssh/. Then a watched
    // read, after which they would have been written.
    let plain = dir.join("plain");
    open_close(&plain, libc::O_WRONLY | libc::O_CREAT);
    open_close(&plain, libc::O_RDONLY);
    let known = home.join(".ssh/known_hosts");
    open_close(&known, libc::O_WRONLY | libc::O_CREAT);
    open_close(&keys, libc::O_RDONLY);
    agent.wait_for("609 for authorized_keys", |e| is(e, "609", ks));
    let evs = agent.events();
    for p in [&plain, &known] {
        assert!(
            !evs.iter()
                .any(|e| (e["data_type"] == "608" || e["data_type"] == "609")
                    && e["file"].as_str() == p.to_str()),
            "an unwatched file was reported: {}",
            p.display()
        );
    }
    agent.stop();
    let _ = std::fs::remove_file(&cron);
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_path_flags_and_keys_extend_or_replace_the_defaults() {
    let me = std::process::id().to_string();
    let dir = std::env::temp_dir().join(marker("watch-flags"));
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let f = extra.join("f");
    std::fs::write(&f, b"x").unwrap();
    let fs = f.to_str().unwrap().to_string();
    let pattern = format!("{}/", extra.display());

    // --watch-path extends: the defaults and the new one.
    let agent = Agent::start(&["--watch-path", &pattern]);
    open_close(&f, libc::O_RDONLY);
    open_close(Path::new("/etc/shadow"), libc::O_RDONLY);
    agent.wait_for("609 for the added path", |e| {
        is(e, "609", &fs) && e["tgid"] == me.as_str()
    });
    agent.wait_for("609 for a default", |e| {
        is(e, "609", "/etc/shadow") && e["tgid"] == me.as_str()
    });
    agent.stop();

    // The config file's keys replace: only watch_paths, not the defaults.
    let conf = dir.join("agent.toml");
    let only = dir.join("only");
    std::fs::create_dir_all(&only).unwrap();
    let g = only.join("g");
    std::fs::write(&g, b"x").unwrap();
    let gs = g.to_str().unwrap().to_string();
    std::fs::write(
        &conf,
        format!(
            "no_default_watch_paths = true\nwatch_paths = [\"{}/*\"]\n",
            only.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--config", conf.to_str().unwrap()]);
    open_close(Path::new("/etc/shadow"), libc::O_RDONLY);
    open_close(&f, libc::O_RDONLY);
    open_close(&g, libc::O_RDONLY);
    agent.wait_for("609 for the only path", |e| {
        is(e, "609", &gs) && e["tgid"] == me.as_str()
    });
    let evs = agent.events();
    assert!(
        !evs.iter().any(|e| e["tgid"] == me.as_str()
            && (is(e, "609", "/etc/shadow") || is(e, "609", &fs))),
        "a default or an earlier --watch-path was watched with no_default_watch_paths"
    );
    agent.stop();

    // The flag replaces too.
    let agent = Agent::start(&["--no-default-watch-paths", "--watch-path", &pattern]);
    open_close(Path::new("/etc/shadow"), libc::O_RDONLY);
    open_close(&f, libc::O_RDONLY);
    agent.wait_for("609 for the flag's path", |e| {
        is(e, "609", &fs) && e["tgid"] == me.as_str()
    });
    assert!(!agent
        .events()
        .iter()
        .any(|e| e["tgid"] == me.as_str() && is(e, "609", "/etc/shadow")));
    agent.stop();

    // Bad entries are refused at start, naming the key and the fault.
    for (args, why) in [
        (vec!["--watch-path", "etc/shadow"], "use an absolute path"),
        (
            vec!["--watch-path", "/etc/*shadow"],
            "may only end a component",
        ),
        (
            vec!["--watch-path", "/a/b/c/d/e/f/g/h/i"],
            "more than 8 components",
        ),
    ] {
        let out = kestrel().arg("agent").args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(why) && err.contains(args[1]),
            "{args:?}: {err}"
        );
    }
    std::fs::write(&conf, "watch_paths = [\"relative/x\"]\n").unwrap();
    let out = kestrel()
        .args(["agent", "--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("watch_paths") && err.contains("use an absolute path"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `f` with the calling thread on CPU `cpu` alone, so that the
/// kernel's per-CPU verdicts per directory (lib/watch.h) are the ones a
/// later open on that CPU meets.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    // SAFETY: affinity of the calling thread, restored below.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one),
            0
        );
        let r = f();
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old);
        r
    }
}

/// The kernel remembers, per CPU, directories below which nothing is
/// watched; a rename of the directory or of one above it, a mount moved,
/// or a watched set changed makes the next open in it checked again.
#[test]
fn verdicts_kept_per_directory_follow_renames_and_mounts() {
    let me = std::process::id().to_string();
    let dir = std::env::temp_dir().join(marker("watch-cache"));
    let (plain, w) = (dir.join("plain"), dir.join("w"));
    for d in ["plain/a", "plain/x/b", "plain/src/q", "w"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for f in ["plain/a/f", "plain/x/b/g", "plain/src/q/h"] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    let agent = Agent::start(&["--watch-path", &format!("{}/", w.display())]);
    let mine =
        |e: &Value, file: &Path| is(e, "609", file.to_str().unwrap()) && e["tgid"] == me.as_str();

    // Opened three times on one CPU: the first open's verdict is kept.
    on_cpu(0, || {
        for _ in 0..3 {
            open_close(&plain.join("a/f"), libc::O_RDONLY);
            open_close(&plain.join("x/b/g"), libc::O_RDONLY);
        }
    });
    // The directory moved under the watched one, then the same file
    // through its new name, on the same CPU: reported.
    let moved = w.join("a/f");
    on_cpu(0, || {
        std::fs::rename(plain.join("a"), w.join("a")).unwrap();
        open_close(&moved, libc::O_RDONLY);
    });
    agent.wait_for("609 after the directory's rename", |e| mine(e, &moved));
    // A directory two levels up moved: the file's own directory kept its
    // dentry and inode, and is checked again all the same.
    let deep = w.join("x/b/g");
    on_cpu(0, || {
        std::fs::rename(plain.join("x"), w.join("x")).unwrap();
        open_close(&deep, libc::O_RDONLY);
    });
    agent.wait_for("609 after an ancestor's rename", |e| mine(e, &deep));
    assert!(
        !agent.events().iter().any(|e| e["tgid"] == me.as_str()
            && (is(e, "609", plain.join("a/f").to_str().unwrap())
                || is(e, "609", plain.join("x/b/g").to_str().unwrap()))),
        "an unwatched open was reported"
    );

    // A bind mount read through twice, then moved under the watched
    // directory (same mount, same dentries, a new path), in a mount
    // namespace of its own so that the host's mounts are left alone.
    let mp = plain.join("mp");
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::create_dir_all(w.join("mp")).unwrap();
    let script = format!(
        "set -e; mount --bind {src} {mp}; cat {mp}/q/h >/dev/null; cat {mp}/q/h >/dev/null; \
         mount --move {mp} {wmp}; cat {wmp}/q/h >/dev/null",
        src = plain.join("src").display(),
        mp = mp.display(),
        wmp = w.join("mp").display()
    );
    let st = Command::new("taskset")
        .args([
            "-c",
            "0",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
    let via_mount = w.join("mp/q/h");
    agent.wait_for("609 after the mount's move", |e| {
        is(e, "609", via_mount.to_str().unwrap()) && e["comm"] == "cat"
    });
    assert!(!agent
        .events()
        .iter()
        .any(|e| is(e, "609", mp.join("q/h").to_str().unwrap())));
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn file_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn command(data: &Path, http: u16, id: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["command", id];
    all.extend_from_slice(args);
    ctl(data, http, &all)
}

#[test]
fn the_server_changes_the_watched_paths_at_run_time() {
    let _serial = serial();
    let (grpc, http) = (18470, 18471);
    let dir = scratch("watch");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let out = dir.join("a.jsonl");
    let agent = Proc::spawn(
        kestrel()
            .args(["agent", "--no-logins", "--inventory-interval-hours", "0"])
            .args(["--rootkit-scan-interval-hours", "0"])
            .args(["--server", &format!("127.0.0.1:{grpc}")])
            .arg("--ca-file")
            .arg(data.join("ca.pem"))
            .arg("--enroll-token-file")
            .arg(data.join("enroll.token"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--output")
            .arg(format!("file:{}", out.display()))
            .args(["--heartbeat-secs", "1"]),
        "control: connected",
    );
    let id = std::fs::read_to_string(dir.join("state/agent-id")).unwrap();
    let me = std::process::id().to_string();
    let watched = dir.join("live");
    std::fs::create_dir_all(&watched).unwrap();
    let (before, during, after) = (watched.join("a"), watched.join("b"), watched.join("c"));
    for p in [&before, &during, &after] {
        std::fs::write(p, b"x").unwrap();
    }
    let read = |p: &Path| open_close(p, libc::O_RDONLY);
    let seen = |p: &Path| {
        file_events(&out)
            .iter()
            .any(|e| is(e, "609", p.to_str().unwrap()) && e["tgid"] == me.as_str())
    };
    // Until the server says so, the directory is not watched; once it
    // does, a read is reported; after unwatch_path, no more. On one CPU:
    // the verdict the first read leaves must not outlive the change.
    on_cpu(0, || read(&before));
    let pat = format!("watch_path={}/", watched.display());
    let r = wait_until(30, || {
        let o = command(&data, http, &id, &["config", &pat]);
        o.status.success().then_some(o)
    })
    .expect("watch_path was not accepted");
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("watched"),
        "{r:?}"
    );
    on_cpu(0, || read(&during));
    wait_until(30, || seen(&during).then_some(())).expect("no 609 after watch_path");
    assert!(!seen(&before), "a read before watch_path was reported");
    let un = format!("unwatch_path={}/", watched.display());
    let r = command(&data, http, &id, &["config", &un]);
    assert!(r.status.success(), "{r:?}");
    read(&after);
    // A watched read after it: once written, the unwatched one would be.
    read(Path::new("/etc/shadow"));
    wait_until(30, || {
        file_events(&out)
            .iter()
            .any(|e| is(e, "609", "/etc/shadow") && e["tgid"] == me.as_str())
            .then_some(())
    })
    .expect("no 609 for /etc/shadow");
    assert!(!seen(&after), "a read after unwatch_path was reported");
    // A bad pattern is refused with the reason.
    let r = command(&data, http, &id, &["config", "watch_path=relative/x"]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("use an absolute path"),
        "{r:?}"
    );
    agent.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
