//! Mounts (165), namespace changes (setns 308, unshare 272) and bpf(2)
//! program loads and attachments (321): each made for real, its event
//! checked field by field. Mounts happen in a private mount namespace, so
//! the host's mounts are untouched. Needs root.

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{field, marker, Agent, Container};

const MOUNTS: &str = r#"# In a private mount namespace: mount(2) with a relative target, a failed
# mount(2), and the new API: fsmount + move_mount through a dirfd, an
# open_tree bind, a failed move_mount.
base, mark = sys.argv[1], sys.argv[2].encode()
for d in ("rel", "api", "tree"):
    os.makedirs(f"{base}/{d}", exist_ok=True)
os.chdir(base)
r_rel = sc(165, s(mark + b"-rel"), s(b"rel"), s(b"tmpfs"), 0x2 | 0x4, NULL)  # MS_NOSUID|MS_NODEV
r_bad = sc(165, s(mark + b"-bad"), s(b"/nonexistent-kestrel"), s(b"tmpfs"), 0, NULL)
fs = sc(430, s(b"tmpfs"), 1)
assert fs >= 0, fs
assert sc(431, fs, 1, s(b"source"), s(mark + b"-api"), 0) == 0
assert sc(431, fs, 6, NULL, NULL, 0) == 0
mfd = sc(432, fs, 1, 0x8)  # MOUNT_ATTR_NOEXEC
assert mfd >= 0, mfd
dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
r_api = sc(429, mfd, s(b""), dfd, s(b"api"), 4)
fs2 = sc(430, s(b"tmpfs"), 1)
assert sc(431, fs2, 1, s(b"source"), s(mark + b"-miss"), 0) == 0
assert sc(431, fs2, 6, NULL, NULL, 0) == 0
mfd2 = sc(432, fs2, 1, 0)
r_miss = sc(429, mfd2, s(b""), dfd, s(b"missing"), 4)
tfd = sc(428, -100, s(b"/etc"), 1 | 0x80000)  # OPEN_TREE_CLONE|CLOEXEC
assert tfd >= 0, tfd
r_tree = sc(429, tfd, s(b""), -100, s(f"{base}/tree".encode()), 4)
r_fsbad = sc(432, -1, 0, 0)
print(os.getpid(), r_rel, r_bad, r_api, r_miss, r_tree, r_fsbad)
"#;

const SETNS: &str = r#"# setns through /proc/PID/ns files and a pidfd, and one refused.
t = int(sys.argv[1])
r = []
fd = os.open(f"/proc/{t}/ns/net", os.O_RDONLY)
r.append((fd, sc(308, fd, 0)))
pfd = os.pidfd_open(t)
r.append((pfd, sc(308, pfd, 0x40000000 | 0x04000000)))  # CLONE_NEWNET|CLONE_NEWUTS
mfd = os.open(f"/proc/{t}/ns/mnt", os.O_RDONLY)
r.append((mfd, sc(308, mfd, 0x00020000)))
bad = os.open("/proc/self/status", os.O_RDONLY)
r.append((bad, sc(308, bad, 0)))
print(os.getpid(), *[f"{a}:{b}" for a, b in r])
"#;

const BPF: &str = r#"# bpf(2): loads, attachments, and a map creation (filtered out).
mark = sys.argv[1].encode()[:15]
NULL = ctypes.c_void_p(0)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr).ljust(128, b"\0"), 128)
    return sc(321, cmd, buf, 128)
insns = ctypes.create_string_buffer(struct.pack("<BBhiBBhi", 0xb7, 0, 0, 1, 0x95, 0, 0, 0), 16)
lic = ctypes.create_string_buffer(b"GPL")
def load(ptype, name, expected=0):
    a = struct.pack("<IIQQIIQII16sII", ptype, 2, ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0, 0, name, 0, expected)
    return bpf(5, a)
m = bpf(0, struct.pack("<IIIIIII16s", 2, 4, 4, 1, 0, 0, 0, b"kmap"))
assert m >= 0, m
sf = load(1, mark)  # socket filter
assert sf >= 0, sf
cg_root = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "/sys/fs/cgroup/unified"
cg = f"{cg_root}/kestrel-ns-{os.getpid()}"
os.mkdir(cg)
try:
    cgfd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    eg = load(8, b"kns_egress", 1)  # cgroup_skb, BPF_CGROUP_INET_EGRESS
    ing = load(8, b"kns_ingress", 0)  # BPF_CGROUP_INET_INGRESS
    att = bpf(8, struct.pack("<IIII", cgfd, eg, 1, 0))
    link = bpf(28, struct.pack("<IIII", ing, cgfd, 0, 0))
    det = bpf(9, struct.pack("<IIII", cgfd, eg, 1, 0))  # PROG_DETACH: filtered
    os.close(link)
    rt = load(17, b"kns_rawtp")
    tp = ctypes.create_string_buffer(b"task_rename")
    rto = bpf(17, struct.pack("<QIIQ", ctypes.addressof(tp), rt, 0, 0))
    bad = load(1000, b"kns_bad")  # no such program type: EINVAL
    print(os.getpid(), sf, eg, ing, att, link, det, rt, rto, bad, cgfd)
finally:
    os.rmdir(cg)
"#;

fn ns_inode(path: &str) -> String {
    std::fs::metadata(path).unwrap().ino().to_string()
}

/// Runs `prog` (optionally under `wrap`, e.g. `unshare -m`) with the
/// script and its arguments; returns its output's words.
fn python(wrap: &[&str], script: &str, args: &[&str]) -> Vec<String> {
    let code = format!("{}\n{script}", crate::support::PY_SYSCALL);
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("/usr/bin/python3");
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    let out = cmd.arg("-c").arg(code).args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The fields every event of these kinds shares, for the caller `pid`.
fn check_common(e: &Value, pid: &str, comm: &str) {
    assert_eq!(field(e, "pid"), pid);
    assert_eq!(field(e, "tgid"), pid);
    assert_eq!(field(e, "comm"), comm);
    assert_eq!(field(e, "uid"), "0");
    assert_eq!(field(e, "euid"), "0");
    assert_eq!(field(e, "user"), "root");
    assert!(!field(e, "exe").is_empty());
    assert_eq!(field(e, "pid_ns"), ns_inode("/proc/self/ns/pid"));
    assert_eq!(field(e, "net_ns"), ns_inode("/proc/self/ns/net"));
    assert_eq!(field(e, "container_id"), "");
    assert!(!field(e, "cgroup_id").is_empty());
}

fn is_mount<'a>(pid: &'a str, syscall: &'a str, dev: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| {
        e["data_type"] == "165" && e["pid"] == pid && e["syscall"] == syscall && e["dev"] == dev
    }
}

/// mount(2) with a relative target (joined to the working directory), a
/// refused mount(2), and the new mount API: a tmpfs made with
/// fsopen/fsconfig/fsmount and attached by move_mount through a dirfd, an
/// open_tree bind of /etc, a refused move_mount; mount(8)'s tmpfs and bind
/// mounts too.
#[test]
fn mounts_old_and_new_api_are_reported() {
    let agent = Agent::start(&[]);
    let mark = marker("mount");
    let base = std::env::temp_dir().join(&mark);
    std::fs::create_dir_all(&base).unwrap();
    let b = base.to_str().unwrap();
    let out = python(
        &["unshare", "-m", "--propagation", "private"],
        MOUNTS,
        &[b, &mark],
    );
    let [pid, r_rel, r_bad, r_api, r_miss, r_tree, r_fsbad] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        [r_rel, r_bad, r_api, r_miss, r_tree, r_fsbad],
        ["0", "-2", "0", "-2", "0", "-9"]
    );

    let rel = agent.wait_for(
        "mount(2), relative",
        is_mount(pid, "mount", &format!("{mark}-rel")),
    );
    check_common(&rel, pid, "python3");
    assert_ne!(field(&rel, "mnt_ns"), ns_inode("/proc/self/ns/mnt"));
    assert_eq!(field(&rel, "file_path"), format!("{b}/rel"));
    assert_eq!(field(&rel, "target"), "rel");
    assert_eq!(field(&rel, "fstype"), "tmpfs");
    assert_eq!(field(&rel, "flags"), "6");
    assert_eq!(field(&rel, "flag_names"), "MS_NOSUID|MS_NODEV");
    assert_eq!(field(&rel, "res"), "0");
    assert_eq!(field(&rel, "syscall"), "mount");
    assert_eq!(field(&rel, "dev_from"), "caller");
    assert_eq!(field(&rel, "dev_truncated"), "false");
    assert_eq!(field(&rel, "file_path_truncated"), "false");
    // unshare(1) exec'd python3 in its own process: the test is the parent.
    let tree = field(&rel, "pid_tree");
    assert!(tree.ends_with(&format!("->{pid}(python3)")), "{tree}");
    assert!(tree.contains(&format!("{}(", std::process::id())), "{tree}");
    assert!(["true", "false"].contains(&field(&rel, "pid_tree_truncated")));

    let bad = agent.wait_for(
        "refused mount(2)",
        is_mount(pid, "mount", &format!("{mark}-bad")),
    );
    assert_eq!(field(&bad, "res"), "-2");
    assert_eq!(field(&bad, "file_path"), "/nonexistent-kestrel");
    assert_eq!(field(&bad, "fstype"), "tmpfs");
    assert_eq!(field(&bad, "flags"), "0");
    assert_eq!(field(&bad, "flag_names"), "");

    let api = agent.wait_for(
        "move_mount of an fsmount",
        is_mount(pid, "move_mount", &format!("{mark}-api")),
    );
    check_common(&api, pid, "python3");
    assert_eq!(field(&api, "syscall"), "move_mount");
    assert_eq!(field(&api, "file_path"), format!("{b}/api"));
    assert_eq!(field(&api, "target"), "");
    assert_eq!(field(&api, "fstype"), "tmpfs");
    assert_eq!(field(&api, "dev_from"), "kernel");
    assert_eq!(field(&api, "flags"), "4");
    assert_eq!(field(&api, "flag_names"), "MOVE_MOUNT_F_EMPTY_PATH");
    assert_eq!(field(&api, "res"), "0");

    // fsmount made the mount before move_mount attached it: usable
    // through its descriptor already, so reported too.
    let made = agent.wait_for("fsmount", is_mount(pid, "fsmount", &format!("{mark}-api")));
    check_common(&made, pid, "python3");
    assert_eq!(field(&made, "fstype"), "tmpfs");
    assert_eq!(field(&made, "dev_from"), "kernel");
    assert_eq!(field(&made, "file_path"), "");
    assert_eq!(field(&made, "flags"), "8");
    assert_eq!(field(&made, "flag_names"), "MOUNT_ATTR_NOEXEC");
    assert!(field(&made, "res").parse::<i32>().unwrap() >= 0);
    let fsbad = agent.wait_for("refused fsmount", |e| {
        e["data_type"] == "165"
            && e["pid"] == pid.as_str()
            && e["syscall"] == "fsmount"
            && e["res"] == "-9"
    });
    assert_eq!(field(&fsbad, "dev"), "");
    assert_eq!(field(&fsbad, "fstype"), "");

    // Refused: the target is the dirfd's directory and the name given.
    let miss = agent.wait_for(
        "refused move_mount",
        is_mount(pid, "move_mount", &format!("{mark}-miss")),
    );
    assert_eq!(field(&miss, "res"), "-2");
    assert_eq!(field(&miss, "file_path"), format!("{b}/missing"));
    assert_eq!(field(&miss, "target"), "missing");
    assert_eq!(field(&miss, "dev_from"), "kernel");

    // The bind made with open_tree names the source filesystem of /etc.
    let src = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE", "--target", "/etc"])
        .output()
        .unwrap();
    let src = String::from_utf8(src.stdout).unwrap();
    let mut src = src.split_whitespace();
    let (dev, fstype) = (src.next().unwrap(), src.next().unwrap());
    let tree = agent.wait_for("move_mount of an open_tree clone", |e| {
        e["data_type"] == "165" && e["pid"] == pid.as_str() && e["file_path"] == format!("{b}/tree")
    });
    assert_eq!(field(&tree, "dev"), dev);
    assert_eq!(field(&tree, "fstype"), fstype);
    assert_eq!(field(&tree, "res"), "0");
    assert_eq!(field(&tree, "syscall"), "move_mount");

    // mount(8): a tmpfs and a bind mount.
    let dir = base.join("m8");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs {mark}-m8 {d} && mount --bind /etc {d}"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let tmpfs = agent.wait_for("mount(8) tmpfs", |e| {
        e["data_type"] == "165" && e["dev"] == format!("{mark}-m8")
    });
    assert_eq!(field(&tmpfs, "comm"), "mount");
    assert_eq!(field(&tmpfs, "file_path"), d);
    assert_eq!(field(&tmpfs, "fstype"), "tmpfs");
    assert_eq!(field(&tmpfs, "res"), "0");
    let tpid = field(&tmpfs, "ppid").to_string();
    let bind = agent.wait_for("mount(8) bind", |e| {
        e["data_type"] == "165"
            && e["ppid"] == tpid.as_str()
            && e["dev"] == "/etc"
            && e["file_path"] == d
    });
    assert_eq!(field(&bind, "flag_names"), "MS_BIND");
    assert_eq!(field(&bind, "flags"), "4096");
    assert_eq!(field(&bind, "res"), "0");
    agent.stop();
    let _ = std::fs::remove_dir_all(&base);
}

/// unshare(1) with -m, -n and -U: the types, the namespaces before (the
/// common fields) and the new ones (target_*, checked against what the
/// new process sees in /proc/self/ns); and an unprivileged refused call.
#[test]
fn unshare_is_reported_with_its_namespace_types() {
    let agent = Agent::start(&[]);
    for (opt, ty, flags) in [
        ("-m", "mnt", "131072"),
        ("-n", "net", "1073741824"),
        ("-U", "user", "268435456"),
    ] {
        let out = Command::new("unshare")
            .args([
                opt,
                "sh",
                "-c",
                &format!("echo $$; stat -L -c %i /proc/self/ns/{ty}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace();
        let (pid, ino) = (it.next().unwrap(), it.next().unwrap());
        let ev = agent.wait_for("unshare", |e| e["data_type"] == "272" && e["pid"] == pid);
        check_common(&ev, pid, "unshare");
        assert_eq!(field(&ev, "mnt_ns"), ns_inode("/proc/self/ns/mnt"));
        assert_eq!(field(&ev, "ns_types"), ty);
        assert_eq!(field(&ev, "flags"), flags);
        assert_eq!(field(&ev, "res"), "0");
        assert_eq!(field(&ev, &format!("target_{ty}_ns")), ino);
        assert_ne!(ino, ns_inode(&format!("/proc/self/ns/{ty}")));
        for other in ["mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time"] {
            if other != ty {
                assert_eq!(field(&ev, &format!("target_{other}_ns")), "", "{other}");
            }
        }
        assert!(ev.get("fd").is_none(), "setns's fields on an unshare");
    }
    let out = python(
        &[],
        "os.setuid(65534)\nprint(os.getpid(), sc(272, 0x40000000))",
        &[],
    );
    let ev = agent.wait_for("refused unshare", |e| {
        e["data_type"] == "272" && e["pid"] == out[0].as_str()
    });
    assert_eq!(out[1], "-1");
    assert_eq!(field(&ev, "res"), "-1");
    assert_eq!(field(&ev, "uid"), "65534");
    assert_eq!(field(&ev, "ns_types"), "net");
    assert_eq!(field(&ev, "target_net_ns"), "");
    agent.stop();
}

/// A process in its own network, mount and UTS namespaces, to join.
struct Target(Child);

impl Target {
    fn start() -> Target {
        let child = Command::new("unshare")
            .args(["-n", "-m", "-u", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let host = ns_inode("/proc/self/ns/uts");
        let deadline = Instant::now() + Duration::from_secs(10);
        // unshare(1) execs sleep once its namespaces are made.
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
            || ns_inode(&format!("/proc/{pid}/ns/uts")) == host
        {
            assert!(Instant::now() < deadline, "the target did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Target(child)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// setns into another process's namespaces, through /proc/PID/ns/net
/// (nstype 0), a pidfd (net and uts), /proc/PID/ns/mnt, and a descriptor
/// that is neither (refused): the target's inodes as stat(2) gives them,
/// beside the caller's own before the call.
#[test]
fn setns_names_the_target_namespaces() {
    let agent = Agent::start(&[]);
    let target = Target::start();
    let t = target.0.id().to_string();
    let tns = |ty: &str| ns_inode(&format!("/proc/{t}/ns/{ty}"));
    let out = python(&[], SETNS, &[&t]);
    let pid = out[0].as_str();
    let calls: Vec<(&str, &str)> = out[1..]
        .iter()
        .map(|c| c.split_once(':').unwrap())
        .collect();
    assert_eq!(
        calls.iter().map(|c| c.1).collect::<Vec<_>>(),
        ["0", "0", "0", "-22"]
    );
    let ev = |fd: &str| {
        agent.wait_for("setns", |e| {
            e["data_type"] == "308" && e["pid"] == pid && e["fd"] == fd
        })
    };

    let net = ev(calls[0].0);
    check_common(&net, pid, "python3");
    assert_eq!(field(&net, "mnt_ns"), ns_inode("/proc/self/ns/mnt"));
    assert_eq!(field(&net, "res"), "0");
    assert_eq!(field(&net, "fd_kind"), "nsfs");
    assert_eq!(field(&net, "flags"), "0");
    assert_eq!(field(&net, "ns_types"), "net");
    assert_eq!(field(&net, "target_net_ns"), tns("net"));
    assert_ne!(field(&net, "target_net_ns"), field(&net, "net_ns"));
    assert_eq!(field(&net, "target_mnt_ns"), "");
    assert_eq!(field(&net, "target_pid"), "");

    let pidfd = ev(calls[1].0);
    assert_eq!(field(&pidfd, "res"), "0");
    assert_eq!(field(&pidfd, "fd_kind"), "pidfd");
    assert_eq!(field(&pidfd, "target_pid"), t);
    assert_eq!(field(&pidfd, "ns_types"), "net,uts");
    assert_eq!(
        field(&pidfd, "flags"),
        (0x4000_0000u32 | 0x0400_0000).to_string()
    );
    assert_eq!(field(&pidfd, "target_net_ns"), tns("net"));
    assert_eq!(field(&pidfd, "target_uts_ns"), tns("uts"));
    assert_eq!(field(&pidfd, "target_mnt_ns"), "");
    // The caller had joined the net namespace already: the common field
    // is where it was when this call began.
    assert_eq!(field(&pidfd, "net_ns"), tns("net"));

    let mnt = ev(calls[2].0);
    assert_eq!(field(&mnt, "res"), "0");
    assert_eq!(field(&mnt, "fd_kind"), "nsfs");
    assert_eq!(field(&mnt, "ns_types"), "mnt");
    assert_eq!(field(&mnt, "target_mnt_ns"), tns("mnt"));
    assert_eq!(field(&mnt, "mnt_ns"), ns_inode("/proc/self/ns/mnt"));

    let bad = ev(calls[3].0);
    assert_eq!(field(&bad, "res"), "-22");
    assert_eq!(field(&bad, "fd_kind"), "");
    assert_eq!(field(&bad, "ns_types"), "");
    for ty in ["mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time"] {
        assert_eq!(field(&bad, &format!("target_{ty}_ns")), "");
    }
    drop(target);
    agent.stop();
}

/// bpf(2) from a Python program: a socket filter load, two cgroup_skb
/// loads attached to an empty cgroup by BPF_PROG_ATTACH and
/// BPF_LINK_CREATE, a raw tracepoint opened, and a refused load; the map
/// creation and the detach before them, and the agent's own calls, make
/// nothing.
#[test]
fn bpf_loads_and_attachments_are_reported() {
    let agent = Agent::start(&[]);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // A program name takes letters, digits, '_' and '.', 15 of them.
    let mark = format!("kns_{:011x}", nanos & 0xfff_ffff_ffff);
    let out = python(&[], BPF, &[&mark]);
    let [pid, sf, eg, ing, att, link, det, rt, rto, bad, cgfd] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (att.as_str(), det.as_str(), bad.as_str()),
        ("0", "0", "-22")
    );
    let pid = pid.as_str();
    let ev = |what: &str, cmd: &str, res: &str| {
        agent.wait_for(what, |e| {
            e["data_type"] == "321" && e["pid"] == pid && e["cmd"] == cmd && e["res"] == res
        })
    };

    let load = ev("socket filter load", "BPF_PROG_LOAD", sf);
    check_common(&load, pid, "python3");
    assert_eq!(field(&load, "cmd_id"), "5");
    assert_eq!(field(&load, "prog_type"), "socket_filter");
    assert_eq!(field(&load, "prog_type_id"), "1");
    assert_eq!(field(&load, "prog_name"), mark);
    assert_eq!(field(&load, "attach_type"), "");
    assert_eq!(field(&load, "attach_type_id"), "");
    assert_eq!(field(&load, "prog_fd"), sf.as_str());
    assert_eq!(field(&load, "prog_from_kernel"), "true");
    assert!(field(&load, "prog_id").parse::<u32>().unwrap() > 0);

    let egress = ev("cgroup_skb load", "BPF_PROG_LOAD", eg);
    assert_eq!(field(&egress, "prog_type"), "cgroup_skb");
    assert_eq!(field(&egress, "prog_name"), "kns_egress");
    assert_eq!(field(&egress, "attach_type"), "cgroup_inet_egress");

    let attach = ev("BPF_PROG_ATTACH", "BPF_PROG_ATTACH", "0");
    assert_eq!(field(&attach, "cmd_id"), "8");
    assert_eq!(field(&attach, "prog_type"), "cgroup_skb");
    assert_eq!(field(&attach, "prog_name"), "kns_egress");
    assert_eq!(field(&attach, "attach_type"), "cgroup_inet_egress");
    assert_eq!(field(&attach, "attach_type_id"), "1");
    assert_eq!(field(&attach, "prog_fd"), eg.as_str());
    assert_eq!(field(&attach, "target_fd"), cgfd.as_str());
    assert_eq!(field(&attach, "prog_id"), field(&egress, "prog_id"));

    let lk = ev("BPF_LINK_CREATE", "BPF_LINK_CREATE", link);
    assert_eq!(field(&lk, "cmd_id"), "28");
    assert_eq!(field(&lk, "prog_type"), "cgroup_skb");
    assert_eq!(field(&lk, "prog_name"), "kns_ingress");
    assert_eq!(field(&lk, "attach_type"), "cgroup_inet_ingress");
    assert_eq!(field(&lk, "prog_fd"), ing.as_str());
    assert_eq!(field(&lk, "target_fd"), cgfd.as_str());

    let raw = ev("BPF_RAW_TRACEPOINT_OPEN", "BPF_RAW_TRACEPOINT_OPEN", rto);
    assert_eq!(field(&raw, "cmd_id"), "17");
    assert_eq!(field(&raw, "prog_type"), "raw_tracepoint");
    assert_eq!(field(&raw, "prog_name"), "kns_rawtp");
    assert_eq!(field(&raw, "tp_name"), "task_rename");
    assert_eq!(field(&raw, "prog_fd"), rt.as_str());
    assert_eq!(field(&raw, "attach_type"), "");

    // Refused: what the caller asked, by number past the names.
    let refused = ev("refused load", "BPF_PROG_LOAD", "-22");
    assert_eq!(field(&refused, "prog_type"), "1000");
    assert_eq!(field(&refused, "prog_name"), "kns_bad");
    assert_eq!(field(&refused, "prog_from_kernel"), "false");
    assert_eq!(field(&refused, "prog_id"), "");

    // The map creation and the detach were filtered out in the kernel,
    // and the agent's own loads and attachments are not reported.
    let events = agent.events();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["data_type"] == "321" && e["pid"] == pid)
        .collect();
    assert_eq!(mine.len(), 8, "{mine:?}");
    let me = agent.pid().to_string();
    assert!(!events
        .iter()
        .any(|e| e["data_type"] == "321" && e["tgid"] == me.as_str()));
    agent.stop();
}

/// From inside a "container" (a docker-named cgroup, its own network and
/// mount namespaces): a mount of the host's root block device, and a
/// setns into the host's network namespace through /proc/PID/ns/net of a
/// host process (this test's: pid 1 may be out of reach here). Both
/// events name the container, the namespaces it was in, and (setns) the
/// host namespace it reached.
#[test]
fn a_container_mounting_the_host_disk_and_joining_the_host_netns() {
    let agent = Agent::start(&[]);
    let ctr = Container::new();
    let cid = ctr.id.clone();
    let src = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE", "/"])
        .output()
        .unwrap();
    let src = String::from_utf8(src.stdout).unwrap();
    let mut src = src.split_whitespace();
    let (dev, fstype) = (
        src.next().unwrap().to_string(),
        src.next().unwrap().to_string(),
    );
    let dir = std::env::temp_dir().join(marker("hostdisk"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "r1 = sc(165, s(b'{dev}'), s(b'{dir}'), s(b'{fstype}'), 1, NULL)  # MS_RDONLY\n\
         fd = os.open('/proc/{host}/ns/net', os.O_RDONLY)\n\
         inner = os.stat('/proc/self/ns/net').st_ino\n\
         r2 = sc(308, fd, 0x40000000)\n\
         print(os.getpid(), r1, r2, fd, inner)",
        dir = dir.display(),
        host = std::process::id()
    );
    let enter = ctr.enter();
    let out = python(
        &[
            "sh",
            "-c",
            &enter,
            "unshare",
            "-m",
            "-n",
            "--propagation",
            "private",
        ],
        &script,
        &[],
    );
    let [pid, r1, r2, fd, inner] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r2, "0");
    // The test's own network namespace is the host's here.
    let host_net = ns_inode("/proc/self/ns/net");
    assert_ne!(inner, &host_net);

    let m = agent.wait_for("the host disk mount", |e| {
        e["data_type"] == "165" && e["pid"] == pid.as_str() && e["dev"] == dev.as_str()
    });
    assert_eq!(field(&m, "container_id"), cid);
    assert_eq!(field(&m, "container_runtime"), "docker");
    assert_eq!(field(&m, "dev"), dev);
    assert_eq!(field(&m, "fstype"), fstype);
    assert_eq!(field(&m, "file_path"), dir.to_str().unwrap());
    assert_eq!(field(&m, "flags"), "1");
    assert_eq!(field(&m, "flag_names"), "MS_RDONLY");
    // Refused (EBUSY: the device's filesystem is mounted read-write) or
    // made: either way, as the call returned.
    assert_eq!(field(&m, "res"), r1.as_str());
    assert_eq!(field(&m, "net_ns"), inner.as_str());

    let j = agent.wait_for("the setns into the host netns", |e| {
        e["data_type"] == "308" && e["pid"] == pid.as_str() && e["fd"] == fd.as_str()
    });
    assert_eq!(field(&j, "container_id"), cid);
    assert_eq!(field(&j, "container_runtime"), "docker");
    assert_eq!(field(&j, "net_ns"), inner.as_str());
    assert_eq!(field(&j, "target_net_ns"), host_net);
    assert_eq!(field(&j, "ns_types"), "net");
    assert_eq!(field(&j, "fd_kind"), "nsfs");
    assert_eq!(field(&j, "res"), "0");
    agent.stop();
    let _ = std::fs::remove_dir(&dir);
}
