//! Path syscalls from real calls: rename (data_type 82), link and symlink
//! (86), unlink (605), rmdir (606). Needs root.
//!
//! One Python process makes every call through syscall(2) by its x86-64
//! number, so each variant is the one asked for (glibc maps rename(3) to
//! whichever call it likes); its events are told from other agents' and
//! tests' by its pid.

use std::path::Path;
use std::process::Command;

use crate::support::{field, marker, Agent};
use serde_json::Value;

/// What each call is expected to report: (data_type, syscall, field
/// name -> value).
const SCRIPT: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
D = sys.argv[1]
AT_FDCWD = -100
def sc(nr, *args):
    a = [ctypes.c_char_p(x.encode()) if isinstance(x, str) else ctypes.c_long(x) for x in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *a)
    return -ctypes.get_errno() if r < 0 else r
def touch(p):
    open(p, "w").close()
def want(r, expect, what):
    if r != expect:
        sys.exit("%s: %d, not %d" % (what, r, expect))
print(os.getpid(), flush=True)
os.chdir(D)
dfd = os.open(D + "/sub", os.O_RDONLY | os.O_DIRECTORY)

touch(D + "/a")
want(sc(82, D + "/a", D + "/b"), 0, "rename absolute")
want(sc(82, "b", "c"), 0, "rename relative to the cwd")
want(sc(82, D + "/missing", D + "/z"), -2, "rename of a missing file")
touch(D + "/sub/x")
want(sc(264, dfd, "x", AT_FDCWD, "y"), 0, "renameat from a dirfd")
touch(D + "/sub/n1"); touch(D + "/sub/n2")
want(sc(316, dfd, "n1", dfd, "n2", 1), -17, "renameat2 NOREPLACE onto a file")
want(sc(316, dfd, "n1", dfd, "n3", 1), 0, "renameat2 NOREPLACE")
want(sc(316, dfd, "n2", dfd, "n3", 2), 0, "renameat2 EXCHANGE")

want(sc(86, D + "/c", D + "/hard"), 0, "link")
want(sc(265, dfd, "n2", AT_FDCWD, "hard2", 0), 0, "linkat from a dirfd")
want(sc(88, "/dev/null", D + "/history"), 0, "symlink")
want(sc(266, "../c", dfd, "rel-sym"), 0, "symlinkat into a dirfd")
want(sc(86, D + "/missing", D + "/hard3"), -2, "link of a missing file")

want(sc(87, D + "/hard"), 0, "unlink")
want(sc(263, dfd, "rel-sym", 0), 0, "unlinkat")
want(sc(87, D + "/missing"), -2, "unlink of a missing file")
os.mkdir(D + "/sub/dd")
want(sc(263, dfd, "dd", 0x200), 0, "unlinkat AT_REMOVEDIR")
os.mkdir(D + "/e")
want(sc(84, "e"), 0, "rmdir relative to the cwd")
want(sc(84, D + "/sub"), -39, "rmdir of a non-empty directory")

# Made where creations are not reported, then moved out of it.
touch(D + "/excluded/secret")
want(sc(82, D + "/excluded/secret", D + "/out"), 0, "rename out of an excluded dir")
touch(D + "/excluded/s2")
want(sc(86, D + "/excluded/s2", D + "/out2"), 0, "link out of an excluded dir")
print("done", flush=True)
"#;

/// s_id of the filesystem holding `p`, as the kernel names it: the block
/// device's name, or the filesystem type's for a virtual one.
fn sb_id_of(p: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE", "--target"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let (src, fstype) = (it.next().unwrap(), it.next().unwrap());
    if src.starts_with("/dev/") {
        let real = std::fs::canonicalize(src).unwrap();
        real.file_name().unwrap().to_str().unwrap().to_string()
    } else {
        fstype.to_string()
    }
}

/// Every variant of the four kinds, each event checked field by field:
/// absolute names, names relative to the cwd and to a real dirfd,
/// renameat2's NOREPLACE and EXCHANGE, a symlink's target kept as given,
/// unlinkat with and without AT_REMOVEDIR, failed calls with their
/// -errno; and a file made in an excluded directory (not reported as
/// created) is still seen renamed and linked out of it.
#[test]
fn path_syscalls_are_reported_with_absolute_names() {
    let dir = std::env::temp_dir().join(marker("paths"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("excluded")).unwrap();
    let excluded = dir.join("excluded");
    let agent = Agent::start(&["--file-exclude", excluded.to_str().unwrap()]);
    let d = dir.to_str().unwrap().to_string();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let pid = text.lines().next().unwrap().to_string();
    let sb = sb_id_of(&dir);
    let p = |rel: &str| format!("{d}/{rel}");

    let mine = |e: &Value| e["tgid"] == pid.as_str();
    // Common fields and the kind's own, exactly.
    let check = |ev: &Value, fields: &[(&str, &str)]| {
        for (k, v) in fields {
            assert_eq!(field(ev, k), *v, "{k} of {ev}");
        }
        assert_eq!(field(ev, "pid"), pid);
        assert_eq!(field(ev, "uid"), "0");
        assert_eq!(field(ev, "comm"), "python3");
        assert!(field(ev, "exe").contains("python3"), "{ev}");
        assert!(!field(ev, "mnt_ns").is_empty());
        assert!(ev.get("container_id").is_some(), "{ev}");
    };

    // 82: rename, renameat, renameat2.
    let renamed = |old: &str, new: &str, sys: &str, res: &str| {
        agent.wait_for(&format!("{sys} {old} -> {new}"), |e| {
            e["data_type"] == "82"
                && mine(e)
                && e["old_name"] == old
                && e["new_name"] == new
                && e["syscall"] == sys
                && e["res"] == res
        })
    };
    let ev = renamed(&p("a"), &p("b"), "rename", "0");
    check(&ev, &[("sb_id", &sb), ("flags", "0")]);
    let ev = renamed(&p("b"), &p("c"), "rename", "0");
    check(&ev, &[("sb_id", &sb)]);
    let ev = renamed(&p("missing"), &p("z"), "rename", "-2");
    check(&ev, &[("sb_id", &sb)]);
    let ev = renamed(&p("sub/x"), &p("y"), "renameat", "0");
    check(&ev, &[("sb_id", &sb), ("flags", "0")]);
    let ev = renamed(&p("sub/n1"), &p("sub/n2"), "renameat2", "-17");
    check(&ev, &[("flags", "1")]);
    let ev = renamed(&p("sub/n1"), &p("sub/n3"), "renameat2", "0");
    check(&ev, &[("flags", "1"), ("sb_id", &sb)]);
    let ev = renamed(&p("sub/n2"), &p("sub/n3"), "renameat2", "0");
    check(&ev, &[("flags", "2")]);

    // 86: link, linkat, symlink, symlinkat.
    let linked = |old: &str, new: &str, sys: &str, res: &str| {
        agent.wait_for(&format!("{sys} {old} -> {new}"), |e| {
            e["data_type"] == "86"
                && mine(e)
                && e["old_name"] == old
                && e["new_name"] == new
                && e["syscall"] == sys
                && e["res"] == res
        })
    };
    let ev = linked(&p("c"), &p("hard"), "link", "0");
    check(
        &ev,
        &[("link_type", "hardlink"), ("sb_id", &sb), ("flags", "0")],
    );
    let ev = linked(&p("sub/n2"), &p("hard2"), "linkat", "0");
    check(
        &ev,
        &[("link_type", "hardlink"), ("sb_id", &sb), ("flags", "0")],
    );
    let ev = linked("/dev/null", &p("history"), "symlink", "0");
    check(&ev, &[("link_type", "symlink"), ("sb_id", &sb)]);
    let ev = linked("../c", &p("sub/rel-sym"), "symlinkat", "0");
    check(&ev, &[("link_type", "symlink"), ("sb_id", &sb)]);
    let ev = linked(&p("missing"), &p("hard3"), "link", "-2");
    check(&ev, &[("link_type", "hardlink")]);

    // 605 and 606.
    let removed = |dt: &str, file: &str, sys: &str, res: &str| {
        let dt = dt.to_string();
        agent.wait_for(&format!("{sys} {file}"), |e| {
            (e["data_type"] == "605" || e["data_type"] == "606")
                && e["data_type"] == dt.as_str()
                && mine(e)
                && e["file"] == file
                && e["syscall"] == sys
                && e["res"] == res
        })
    };
    check(&removed("605", &p("hard"), "unlink", "0"), &[]);
    check(&removed("605", &p("sub/rel-sym"), "unlinkat", "0"), &[]);
    check(&removed("605", &p("missing"), "unlink", "-2"), &[]);
    check(&removed("606", &p("sub/dd"), "unlinkat", "0"), &[]);
    check(&removed("606", &p("e"), "rmdir", "0"), &[]);
    check(&removed("606", &p("sub"), "rmdir", "-39"), &[]);

    // Out of the excluded directory: its creation is not reported, its
    // leaving is.
    let ev = renamed(&p("excluded/secret"), &p("out"), "rename", "0");
    check(&ev, &[("sb_id", &sb)]);
    let ev = linked(&p("excluded/s2"), &p("out2"), "link", "0");
    check(&ev, &[("link_type", "hardlink")]);
    let events = agent.events();
    assert!(
        !events.iter().any(|e| e["data_type"] == "602"
            && e["file_path"].as_str() == Some(p("excluded/secret").as_str())),
        "a creation under the excluded directory was reported"
    );
    // Each call once: no program attached twice.
    let n = events
        .iter()
        .filter(|e| e["data_type"] == "86" && mine(e) && e["syscall"] == "linkat")
        .count();
    assert_eq!(n, 1, "linkat reported {n} times");
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
