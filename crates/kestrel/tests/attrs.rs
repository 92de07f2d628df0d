//! Mode and owner changes (data_types 90 and 92) from real syscalls: every
//! chmod call asking for setuid or setgid wherever the file is, any mode
//! or owner change of a watched path, by absolute and relative names, by
//! descriptor, through coreutils, and the changes that must stay quiet.
//! Needs root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use crate::support::{marker, Agent};
use serde_json::Value;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mine(e: &Value, dt: &str, file: &Path, syscall: &str) -> bool {
    e["data_type"] == dt && e["file"].as_str() == file.to_str() && e["syscall"] == syscall
}

/// The fields every one of these events has, with the values we know.
fn check(e: &Value, res: &str, pid: u32) {
    assert_eq!(e["res"], res, "{e}");
    assert_eq!(e["tgid"], pid.to_string().as_str(), "{e}");
    for f in ["exe", "comm", "hostname", "time", "mnt_ns", "sb_id", "euid"] {
        assert!(!e[f].as_str().unwrap_or("").is_empty(), "{f} empty: {e}");
    }
}

#[test]
fn setid_modes_anywhere_and_changes_of_watched_paths_are_reported() {
    let me = std::process::id();
    let dir = std::env::temp_dir().join(marker("attrs"));
    let watched = dir.join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let pattern = format!("{}/", watched.display());
    let agent = Agent::start(&["--watch-path", &pattern]);

    let plain = dir.join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let w = watched.join("f");
    std::fs::write(&w, b"x").unwrap();
    let missing = dir.join("missing");
    // SAFETY: plain syscalls on paths and descriptors this test owns.
    let (fchmodat2_res, dfd) = unsafe {
        // Unwatched, so only the set-id ones are reported.
        assert_eq!(libc::chmod(c(&plain).as_ptr(), 0o755), 0);
        assert_eq!(libc::chmod(c(&plain).as_ptr(), 0o4755), 0);
        assert_eq!(libc::chmod(c(&missing).as_ptr(), 0o2755), -1);
        let dfd = libc::open(c(&dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(dfd >= 0);
        let rel = CString::new("./plain").unwrap();
        assert_eq!(libc::fchmodat(dfd, rel.as_ptr(), 0o2750, 0), 0);
        let fd = libc::open(c(&plain).as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        assert_eq!(libc::fchmod(fd, 0o644), 0);
        assert_eq!(libc::fchmod(fd, 0o6711), 0);
        libc::close(fd);
        // Watched: any change, a plain one included, through every call.
        assert_eq!(libc::chmod(c(&w).as_ptr(), 0o600), 0);
        let wd = libc::open(c(&watched).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(wd >= 0);
        let name = CString::new("f").unwrap();
        // fchmodat2 (Linux 6.6) by number: glibc's fchmodat uses it only
        // for flags.
        let r = libc::syscall(452, wd, name.as_ptr(), 0o640, 0);
        let r = (r, std::io::Error::last_os_error().raw_os_error());
        let wf = libc::open(c(&w).as_ptr(), libc::O_RDONLY);
        assert!(wf >= 0);
        assert_eq!(libc::fchown(wf, 0, 0), 0);
        libc::close(wf);
        assert_eq!(libc::chown(c(&w).as_ptr(), 1, u32::MAX), 0);
        assert_eq!(libc::lchown(c(&w).as_ptr(), u32::MAX, 2), 0);
        assert_eq!(
            libc::fchownat(wd, name.as_ptr(), 0, 0, libc::AT_SYMLINK_NOFOLLOW),
            0
        );
        libc::close(wd);
        // Unwatched owner changes: never reported.
        assert_eq!(libc::chown(c(&plain).as_ptr(), 1, 1), 0);
        (r, dfd)
    };
    // SAFETY: closing the directory descriptor opened above.
    unsafe { libc::close(dfd) };

    let e = agent.wait_for("90 chmod 4755", |e| {
        mine(e, "90", &plain, "chmod") && e["mode"] == "4755"
    });
    check(&e, "0", me);
    assert_eq!(
        (&e["watched"], &e["old_mode"]),
        (&"false".into(), &"".into())
    );
    let e = agent.wait_for("90 for a missing file", |e| {
        mine(e, "90", &missing, "chmod")
    });
    check(&e, "-2", me);
    assert_eq!(e["mode"], "2755");
    // The name is joined as passed, "." kept (as in 82 and 605).
    let dotted = dir.join("./plain");
    let e = agent.wait_for("90 fchmodat by dirfd", |e| {
        mine(e, "90", &dotted, "fchmodat")
    });
    check(&e, "0", me);
    assert_eq!(e["mode"], "2750");
    let e = agent.wait_for("90 fchmod with its old mode", |e| {
        mine(e, "90", &plain, "fchmod")
    });
    check(&e, "0", me);
    assert_eq!(
        (&e["mode"], &e["old_mode"]),
        (&"6711".into(), &"0644".into())
    );

    let e = agent.wait_for("90 chmod of a watched file", |e| mine(e, "90", &w, "chmod"));
    check(&e, "0", me);
    assert_eq!(
        (&e["mode"], &e["watched"]),
        (&"0600".into(), &"true".into())
    );
    if fchmodat2_res.0 == 0 {
        let e = agent.wait_for("90 fchmodat2", |e| mine(e, "90", &w, "fchmodat2"));
        assert_eq!(e["mode"], "0640");
    } else {
        // A kernel before 6.6: the program is left out, and the call is
        // ENOSYS.
        assert_eq!(fchmodat2_res.1, Some(libc::ENOSYS));
    }
    let e = agent.wait_for("92 fchown", |e| mine(e, "92", &w, "fchown"));
    check(&e, "0", me);
    assert_eq!(
        (&e["owner_uid"], &e["owner_gid"]),
        (&"0".into(), &"0".into())
    );
    let e = agent.wait_for("92 chown", |e| mine(e, "92", &w, "chown"));
    assert_eq!(
        (&e["owner_uid"], &e["owner_gid"]),
        (&"1".into(), &"-1".into())
    );
    let e = agent.wait_for("92 lchown", |e| mine(e, "92", &w, "lchown"));
    assert_eq!(
        (&e["owner_uid"], &e["owner_gid"]),
        (&"-1".into(), &"2".into())
    );
    let e = agent.wait_for("92 fchownat", |e| mine(e, "92", &w, "fchownat"));
    assert_eq!(e["flags"], libc::AT_SYMLINK_NOFOLLOW.to_string().as_str());

    // The tools an operator or an attacker types (whichever of the calls
    // they make), and a relative name from another cwd.
    let tool = dir.join("tool");
    std::fs::write(&tool, b"x").unwrap();
    assert!(Command::new("chmod")
        .args(["u+s,g+s"])
        .arg(&tool)
        .status()
        .unwrap()
        .success());
    let e = agent.wait_for("90 from chmod(1)", |e| {
        e["data_type"] == "90" && e["file"].as_str() == tool.to_str() && e["comm"] == "chmod"
    });
    assert_eq!(e["exe"], "/usr/bin/chmod");
    assert_eq!(e["mode"].as_str().unwrap().chars().next(), Some('6'), "{e}");
    let installed = watched.join("installed");
    assert!(Command::new("install")
        .args(["-m", "0700", "/usr/bin/true"])
        .arg(&installed)
        .status()
        .unwrap()
        .success());
    agent.wait_for("90 from install(1)", |e| {
        e["data_type"] == "90"
            && e["file"].as_str() == installed.to_str()
            && e["mode"] == "0700"
            && e["watched"] == "true"
    });
    assert!(Command::new("chown")
        .args(["1:1", "f"])
        .current_dir(&watched)
        .status()
        .unwrap()
        .success());
    agent.wait_for("92 from chown(1) by a relative name", |e| {
        e["data_type"] == "92" && e["file"].as_str() == w.to_str() && e["comm"] == "chown"
    });

    // Quiet: the unwatched plain modes and owner changes above.
    let evs = agent.events();
    let noisy: Vec<_> = evs
        .iter()
        .filter(|e| {
            (e["data_type"] == "90"
                && e["file"].as_str() == plain.to_str()
                && (e["mode"] == "0755" || e["mode"] == "0644"))
                || (e["data_type"] == "92" && e["file"].as_str() == plain.to_str())
        })
        .collect();
    assert!(
        noisy.is_empty(),
        "an unwatched change was reported: {noisy:?}"
    );
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
