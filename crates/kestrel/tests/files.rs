//! File creation (data_type 602) from real syscalls. Needs root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{field, free_loopback_addr, marker, scrape, Agent};
use serde_json::Value;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn md5_of(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// open(2) with `flags`, write `data`, close.
fn create(path: &Path, flags: i32, data: &[u8]) -> i32 {
    // SAFETY: plain syscalls on a path and descriptor this test owns.
    unsafe {
        let fd = libc::open(c(path).as_ptr(), flags, 0o644);
        if fd >= 0 {
            libc::write(fd, data.as_ptr().cast(), data.len());
            libc::close(fd);
        }
        fd
    }
}

fn created<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["data_type"] == "602" && e["file_path"].as_str() == Some(path))
        .collect()
}

#[test]
fn created_files_are_reported_once_with_their_hash() {
    let dir = std::env::temp_dir().join(marker("files"));
    std::fs::create_dir_all(&dir).unwrap();
    let excluded = dir.join("busy");
    std::fs::create_dir_all(&excluded).unwrap();
    let agent = Agent::start(&[
        "--file-exclude",
        excluded.to_str().unwrap(),
        "--file-md5-delay-ms",
        "300",
    ]);

    // Absolute path, with O_EXCL.
    let abs = dir.join("absolute");
    assert!(
        create(
            &abs,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            b"hello"
        ) >= 0
    );
    // Relative to the working directory, from a shell.
    let st = Command::new("sh")
        .args(["-c", "echo relative > rel.txt"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    // Relative to a directory descriptor.
    let dirfd = unsafe { libc::open(c(&dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(dirfd >= 0);
    let name = CString::new("via-dirfd").unwrap();
    // SAFETY: as above.
    unsafe {
        let fd = libc::openat(dirfd, name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
        assert!(fd >= 0);
        libc::close(fd);
    }
    // An existing file opened with O_CREAT: no event.
    let existing = dir.join("existing");
    std::fs::write(&existing, b"old").unwrap_or(());
    // (std::fs::write creates it: that one is reported; the second open
    // below is not.)
    assert!(
        create(
            &existing,
            libc::O_CREAT | libc::O_WRONLY | libc::O_APPEND,
            b"more"
        ) >= 0
    );
    // O_TMPFILE: created without a name.
    // SAFETY: as above.
    let tmpfd = unsafe { libc::open(c(&dir).as_ptr(), libc::O_TMPFILE | libc::O_WRONLY, 0o600) };
    assert!(tmpfd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    unsafe { libc::close(tmpfd) };
    // A FIFO through mknodat, relative to the dirfd.
    let fifo = CString::new("a-fifo").unwrap();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::mknodat(dirfd, fifo.as_ptr(), libc::S_IFIFO | 0o600, 0) },
        0
    );
    unsafe { libc::close(dirfd) };
    // Under the excluded directory: nothing.
    assert!(
        create(
            &excluded.join("noise"),
            libc::O_CREAT | libc::O_WRONLY,
            b"x"
        ) >= 0
    );

    let d = dir.to_str().unwrap();
    let ev = agent.wait_for("the absolute create", |e| {
        e["data_type"] == "602" && e["file_path"].as_str() == Some(abs.to_str().unwrap())
    });
    assert_eq!(field(&ev, "create_file_md5"), md5_of(b"hello"));
    assert_eq!(field(&ev, "create_type"), "open");
    assert_eq!(
        field(&ev, "exe"),
        std::env::current_exe().unwrap().to_str().unwrap()
    );
    let rel = agent.wait_for("the relative create", |e| {
        e["file_path"].as_str() == Some(&format!("{d}/rel.txt"))
    });
    assert_eq!(field(&rel, "create_file_md5"), md5_of(b"relative\n"));
    assert_eq!(field(&rel, "comm"), "sh");
    agent.wait_for("the dirfd create", |e| {
        e["file_path"].as_str() == Some(&format!("{d}/via-dirfd"))
    });
    let tmp = agent.wait_for("the O_TMPFILE", |e| {
        e["data_type"] == "602"
            && e["create_type"] == "tmpfile"
            && e["file_path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{d}/")))
    });
    assert_eq!(field(&tmp, "create_file_md5"), "");
    let node = agent.wait_for("the FIFO", |e| {
        e["file_path"].as_str() == Some(&format!("{d}/a-fifo"))
    });
    assert_eq!(field(&node, "create_type"), "mknod");
    assert!(
        field(&node, "mode").starts_with("10"),
        "a FIFO's mode: {node}"
    );

    // Wait for a marker created last, then check what must not be there.
    let last = dir.join("last");
    assert!(create(&last, libc::O_CREAT | libc::O_WRONLY, b"") >= 0);
    agent.wait_for("the last create", |e| {
        e["file_path"].as_str() == Some(last.to_str().unwrap())
    });
    let events = agent.events();
    assert_eq!(
        created(&events, existing.to_str().unwrap()).len(),
        1,
        "only the real creation"
    );
    assert_eq!(created(&events, abs.to_str().unwrap()).len(), 1);
    assert!(created(&events, excluded.join("noise").to_str().unwrap()).is_empty());
    let c = agent.stop();
    assert_eq!(c["file_lost"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
    let _: PathBuf = dir;
}

/// Lines of the agent's log that say `what` about `dir`.
fn log_lines(agent: &Agent, what: &str, dir: &Path) -> usize {
    let dir = dir.to_str().unwrap();
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains(what) && l.contains(dir))
        .count()
}

/// Waits (up to two refresh periods) until the log says `what` about `dir`
/// `n` times.
fn wait_log(agent: &Agent, what: &str, dir: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while log_lines(agent, what, dir) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} log for {} (want {n}):\n{}",
            dir.display(),
            agent.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The kernel knows an excluded directory by device and inode: a directory
/// created after the agent started, and one replaced by another of the same
/// name, must still be excluded (the agent looks the name up again).
#[test]
fn an_exclusion_follows_its_directory_by_name() {
    let dir = std::env::temp_dir().join(marker("excl"));
    std::fs::create_dir_all(&dir).unwrap();
    let later = dir.join("later");
    let agent = Agent::start(&["--file-exclude", later.to_str().unwrap()]);
    wait_log(&agent, "file exclusion waits", &later, 1);
    let flags = libc::O_CREAT | libc::O_WRONLY;
    let reported = |name: &str| {
        let path = dir.join(name);
        let p = path.to_str().unwrap();
        assert!(create(&path, flags, b"x") >= 0);
        agent.wait_for(name, |e| e["data_type"] == "602" && e["file_path"] == p);
    };

    // Created after the start.
    std::fs::create_dir(&later).unwrap();
    wait_log(&agent, "file creations excluded", &later, 1);
    assert!(create(&later.join("one"), flags, b"1") >= 0);
    reported("marker-one");

    // Replaced: the old directory moved away (so its inode cannot be
    // reused), a new one made under the name.
    let moved = dir.join("moved");
    std::fs::rename(&later, &moved).unwrap();
    std::fs::create_dir(&later).unwrap();
    wait_log(&agent, "file creations excluded", &later, 2);
    assert!(create(&later.join("two"), flags, b"2") >= 0);
    // The old directory, no longer under an excluded name, is reported.
    assert!(create(&moved.join("three"), flags, b"3") >= 0);
    reported("marker-two");
    let m = moved.join("three");
    agent.wait_for("the creation under the moved directory", |e| {
        e["data_type"] == "602" && e["file_path"] == m.to_str().unwrap()
    });

    let events = agent.events();
    for name in ["one", "two"] {
        let p = later.join(name);
        assert!(
            created(&events, p.to_str().unwrap()).is_empty(),
            "{} was reported though excluded",
            p.display()
        );
    }
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `GET /metrics` from the agent; the value of the unlabelled `name`.
/// The `received=` of every periodic counters line so far.
fn periodic_received(agent: &Agent) -> Vec<u64> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains("when=\"periodic\""))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("received=")?.parse().ok())
        })
        .collect()
}

/// An unprivileged user makes 20,000 sparse 16 MiB files (no disk, under
/// a second: 320 GB to read for their hashes), then 10,000 execs and a
/// marker exec. Hashing must not hold up collection: the marker is
/// reported, no exec is lost, the counters and /metrics keep moving, the
/// hashes left out say why and are counted, and SIGTERM with hundreds of
/// such files pending ends the agent at once.
#[test]
fn sparse_files_cannot_blind_collection() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// 20,000 files: removed however the test ends.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(marker("sparse"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = free_loopback_addr();
    // A ring buffer that holds every record of the attack (20,000 file
    // records are ~50 MB): on a shared host a starved collector falls
    // behind, and that is not what this test is about; blocked on hashing,
    // it never catches up.
    let out = dir.with_extension("events.json");
    let _cleanup_out = Cleanup(out.clone());
    let agent = Agent::start_to_file(
        &out,
        &[
            "--stats-interval-secs",
            "1",
            "--metrics",
            &addr,
            "--ring-buffer-bytes",
            "134217728",
        ],
    );
    let mark = marker("sparse-marker");
    // As uid 65534: the files, then the execs, then the marker.
    let script = format!(
        "for my $i (1..20000) {{ open(my $f, '>', \"{d}/f$i\") or die \"$!\"; \
                               truncate($f, 16 << 20) or die \"$!\"; close $f; }} \
         for my $i (1..10000) {{ system('/bin/true') == 0 or die 'true'; }} \
         system('/bin/true', '{mark}') == 0 or die 'marker';",
        d = dir.display()
    );
    let started = Instant::now();
    let mut child = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["perl", "-e", &script])
        .spawn()
        .unwrap();
    // While it runs, the agent's numbers must keep moving: every scrape a
    // second apart sees more records received than the one before.
    let mut scrapes = Vec::new();
    while child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(v) = scrape(&addr, "kestrel_received_total") {
            scrapes.push((started.elapsed(), v));
        }
    }
    assert!(child.wait().unwrap().success());
    let ran = started.elapsed();
    assert!(scrapes.len() >= 3, "too few scrapes: {scrapes:?}");
    // The host is shared (2 cores, other builds): seconds without a new
    // record can be the user's process not running. Blocked on hashing,
    // collection stopped for tens of seconds.
    let mut longest = Duration::ZERO;
    let mut since = scrapes[0];
    for &(t, v) in &scrapes[1..] {
        if v > since.1 {
            since = (t, v);
        } else {
            longest = longest.max(t - since.0);
        }
    }
    eprintln!("burst ran {ran:?}; /metrics longest still {longest:?}: {scrapes:?}");
    assert!(
        longest < Duration::from_secs(20),
        "/metrics froze for {longest:?} while the user ran: {scrapes:?}"
    );
    // And they took in what the user did (20,000 creations, 10,001 execs),
    // not a trickle of it. A starved collector (the host is shared) may
    // let the ring buffer overflow with file records: those the kernel
    // counts; execs it must not lose (checked at the end).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut taken = 0;
    while taken < 30_001 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        taken = scrape(&addr, "kestrel_received_total").unwrap_or(0)
            + scrape(&addr, "kestrel_kernel_lost_total{probe=\"file\"}").unwrap_or(0);
    }
    assert!(taken >= 30_001, "only {taken} records received or lost");
    let marker_argv = format!("/bin/true {mark}");
    let ev = agent.wait_for("the marker exec", |e| {
        e["data_type"] == "59" && e["argv"].as_str() == Some(marker_argv.as_str())
    });
    assert_eq!(field(&ev, "uid"), "65534");
    let lines = periodic_received(&agent);
    assert!(
        lines.windows(2).filter(|w| w[1] > w[0]).count() >= 2,
        "the counters line did not move: {lines:?}"
    );

    // Every file has its event; those not hashed say why.
    // Every file has its event, its hash or why not.
    let under = |e: &Value, p: &str| {
        e["data_type"] == "602"
            && e["file_path"]
                .as_str()
                .is_some_and(|f| f.starts_with(&format!("{}/{p}", dir.display())))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.events().iter().filter(|e| under(e, "f")).count() < 20000
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_secs(1));
    }

    // Hundreds of such files pending (within their delay), then SIGTERM.
    let more = format!(
        "for my $i (1..400) {{ open(my $f, '>', \"{d}/g$i\") or die \"$!\"; \
                             truncate($f, 16 << 20) or die \"$!\"; close $f; }}",
        d = dir.display()
    );
    let st = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["perl", "-e", &more])
        .status()
        .unwrap();
    assert!(st.success());
    let stopping = Instant::now();
    let c = agent.stop();
    let took = stopping.elapsed();
    eprintln!("SIGTERM took {took:?}; {c:?}");
    // One second of hashing, then what waits (thousands of events) goes
    // out unhashed: a few seconds on this shared host. Hashing it all took
    // minutes.
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert_eq!(c["exec_lost"], 0, "{c:?}");

    let events: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let zeros = md5_of(&vec![0u8; 16 << 20]);
    let mut why = std::collections::BTreeMap::<String, u64>::new();
    let (mut f, mut g) = (0u64, 0u64);
    for e in events.iter().filter(|e| under(e, "")) {
        let skipped = field(e, "create_file_md5_skipped");
        let md5 = field(e, "create_file_md5");
        if skipped.is_empty() {
            assert_eq!(md5, zeros, "{e}");
        } else {
            assert_eq!(md5, "", "{e}");
        }
        *why.entry(skipped.to_string()).or_default() += 1;
        if under(e, "f") {
            f += 1;
        } else {
            g += 1;
        }
    }
    eprintln!("{f} + {g} file events: {why:?}");
    // Only the kernel may have dropped some (a full ring buffer), and said so.
    assert!(f + g + c["file_lost"] >= 20400, "{f} + {g} events, {c:?}");
    let skipped = why.get("budget").unwrap_or(&0)
        + why.get("queue_full").unwrap_or(&0)
        + why.get("stopping").unwrap_or(&0);
    assert!(skipped * 2 > f + g, "{why:?}");
    assert!(
        why.keys()
            .all(|k| ["", "budget", "queue_full", "stopping"].contains(&k.as_str())),
        "{why:?}"
    );
    assert!(
        c["file_md5_skipped_budget"]
            + c["file_md5_skipped_queue_full"]
            + c["file_md5_skipped_stopping"]
            >= skipped,
        "{c:?}"
    );
    assert!(c["file_md5_hashed"] >= 1, "{c:?}");
}

/// `sh -c script` as the unprivileged user nobody, in a user and mount
/// namespace of its own (`unshare -Urm`: root there, nobody outside).
fn as_nobody_in_own_namespaces(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-ec",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An exclusion names the directory the agent's mount namespace shows
/// under the path: a tmpfs an unprivileged user mounts over it (or over
/// the state directory) in a namespace of their own is another filesystem,
/// and files created there are reported. The real directories stay
/// excluded, from any namespace, and so does a mount the agent's own
/// namespace has under one.
#[test]
fn a_mount_over_an_excluded_directory_in_another_namespace_is_reported() {
    let dir = std::env::temp_dir().join(marker("excl-ns"));
    let excluded = dir.join("excluded");
    let state = dir.join("state");
    std::fs::create_dir_all(&excluded).unwrap();
    std::fs::create_dir_all(excluded.join("mnt")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&excluded, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (e, s) = (excluded.to_str().unwrap(), state.to_str().unwrap());
    let agent = Agent::start(&["--state-dir", s, "--file-exclude", e, "--file-exclude", s]);
    wait_log(&agent, "file creations excluded", &state, 1);

    // The agent's own namespace: a mount under the excluded directory is
    // still under it.
    let sub = excluded.join("mnt");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "kestrel-test", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(create(&sub.join("host-mount"), libc::O_CREAT | libc::O_WRONLY, b"") >= 0);
    let st = Command::new("umount").arg(&sub).status().unwrap();
    assert!(st.success());
    assert!(create(&excluded.join("host"), libc::O_CREAT | libc::O_WRONLY, b"") >= 0);

    as_nobody_in_own_namespaces(&format!(
        "echo real > {e}/real-from-ns
         mount -t tmpfs none {e}
         mount -t tmpfs none {s}
         echo hidden > {e}/over-excluded
         echo hidden > {s}/over-state
         cd {e} && echo rel > relative-over-excluded"
    ));

    for p in [
        format!("{e}/over-excluded"),
        format!("{s}/over-state"),
        format!("{e}/relative-over-excluded"),
    ] {
        let ev = agent.wait_for(&p, |ev| ev["data_type"] == "602" && ev["file_path"] == p);
        assert_eq!(field(&ev, "uid"), "65534", "{ev}");
    }
    let last = dir.join("last");
    assert!(create(&last, libc::O_CREAT | libc::O_WRONLY, b"") >= 0);
    agent.wait_for("the last create", |ev| {
        ev["file_path"].as_str() == Some(last.to_str().unwrap())
    });
    let events = agent.events();
    for p in [
        sub.join("host-mount"),
        excluded.join("host"),
        excluded.join("real-from-ns"),
    ] {
        assert!(
            created(&events, p.to_str().unwrap()).is_empty(),
            "{} was reported though excluded",
            p.display()
        );
    }
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file created with O_TMPFILE has no name until linkat gives it one:
/// that name is reported (create_type `tmpfile_linkat`, with the content's
/// hash), by descriptor (AT_EMPTY_PATH, root) and through /proc/self/fd
/// (AT_SYMLINK_FOLLOW, any user), with the exclusions applied to the final
/// name, not to the directory the tmpfile was made in.
#[test]
fn a_tmpfile_linked_into_place_is_reported_under_its_final_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(marker("tmplink"));
    let excluded = dir.join("excluded");
    std::fs::create_dir_all(&excluded).unwrap();
    for d in [&dir, &excluded] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let agent = Agent::start(&["--file-exclude", excluded.to_str().unwrap()]);
    wait_log(&agent, "file creations excluded", &excluded, 1);

    // Root, by descriptor.
    let by_fd = dir.join("by-fd");
    // SAFETY: plain syscalls on paths and a descriptor this test owns.
    unsafe {
        let fd = libc::open(c(&dir).as_ptr(), libc::O_TMPFILE | libc::O_WRONLY, 0o600);
        assert!(fd >= 0);
        assert_eq!(libc::write(fd, b"by fd".as_ptr().cast(), 5), 5);
        let empty = CString::new("").unwrap();
        assert_eq!(
            libc::linkat(
                fd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                c(&by_fd).as_ptr(),
                libc::AT_EMPTY_PATH
            ),
            0,
            "linkat: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }

    // nobody, through /proc/self/fd (linkat with AT_SYMLINK_FOLLOW, as
    // linkat(2) shows it); into an excluded directory from outside and out
    // of it; and through a symbolic link to the magic one.
    let (d, e) = (dir.to_str().unwrap(), excluded.to_str().unwrap());
    let script = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def link(src, dst):
    if libc.linkat(-100, src.encode(), -100, dst.encode(), 0x400) != 0:
        raise OSError(ctypes.get_errno(), "linkat " + dst)
def tmpfile(where, data):
    fd = os.open(where, os.O_TMPFILE | os.O_WRONLY, 0o600)
    os.write(fd, data)
    return fd
fd = tmpfile("{d}", b"by proc")
link("/proc/self/fd/%d" % fd, "{d}/by-proc")
fd = tmpfile("{d}", b"hidden")
link("/proc/self/fd/%d" % fd, "{e}/into-excluded")
fd = tmpfile("{e}", b"out")
link("/proc/self/fd/%d" % fd, "{d}/out-of-excluded")
fd = tmpfile("{d}", b"indirect")
os.symlink("/proc/%d/fd/%d" % (os.getpid(), fd), "{d}/magic")
link("{d}/magic", "{d}/indirect")
"#
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let linked = |name: &str| {
        let p = format!("{d}/{name}");
        agent.wait_for(&p, |ev| ev["data_type"] == "602" && ev["file_path"] == p)
    };
    let ev = linked("by-fd");
    assert_eq!(field(&ev, "create_type"), "tmpfile_linkat");
    assert_eq!(field(&ev, "create_file_md5"), md5_of(b"by fd"));
    assert!(field(&ev, "mode").starts_with("100"), "{ev}");
    let ev = linked("by-proc");
    assert_eq!(field(&ev, "create_type"), "tmpfile_linkat");
    assert_eq!(field(&ev, "uid"), "65534");
    assert_eq!(field(&ev, "create_file_md5"), md5_of(b"by proc"));
    let ev = linked("out-of-excluded");
    assert_eq!(field(&ev, "create_type"), "tmpfile_linkat");
    // A link through a symbolic link: the kernel program cannot tell
    // which file it was, and still reports the name.
    let ev = linked("indirect");
    assert_eq!(field(&ev, "create_type"), "linkat");
    assert_eq!(field(&ev, "create_file_md5"), md5_of(b"indirect"));

    let last = dir.join("last");
    assert!(create(&last, libc::O_CREAT | libc::O_WRONLY, b"") >= 0);
    agent.wait_for("the last create", |ev| {
        ev["file_path"].as_str() == Some(last.to_str().unwrap())
    });
    let events = agent.events();
    assert!(created(&events, &format!("{e}/into-excluded")).is_empty());
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
