//! Every record kind rendered from synthetic records against a fixture
//! /proc and passwd, compared byte for byte with the JSON in
//! `golden.jsonl`: field names, their order and their values are the wire
//! contract. Only what depends on the machine running the test (the clock,
//! the host's name and address, the fixture's directory) is normalised.
//!
//! `KESTREL_BLESS=1` rewrites the expected file from the current output.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use kestrel_decode::raw::{self, Creation};
use kestrel_decode::{decode, dns, Ancestor, FdInfo, Record, SockAddrs};
use kestrel_enrich::{EnrichConfig, Enricher, RuntimeSockets};

const LIVE: u32 = 4242;
const HOLDER: u32 = 4343;
/// Gone from /proc: what its exec left in the cache is all there is.
const GONE: u32 = 0x7fff_fff0;
/// Gone and never seen: every /proc field is empty.
const UNSEEN: u32 = 0x7fff_fff1;
const START_TICKS: u64 = 12345;
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    root: PathBuf,
    ns_per_tick: u64,
}

impl Fixture {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("kestrel-golden-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["bin", "sbin", "work", "lib"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("bin/tool"), b"tool\n").unwrap();
        std::fs::write(root.join("sbin/sshd"), b"sshd\n").unwrap();
        std::fs::write(
            root.join("lib/evil.ko"),
            b"\x7fELF\0junk\0name=evil\0vermagic=6\0",
        )
        .unwrap();
        std::fs::write(
            root.join("passwd"),
            b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        let proc = |pid: u32, exe: &str, cgroup: &str| {
            let dir = root.join("proc").join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} (x y) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 {START_TICKS} 1000 10"),
            )
            .unwrap();
            symlink(root.join(exe), dir.join("exe")).unwrap();
            symlink(root.join("work"), dir.join("cwd")).unwrap();
            symlink("/dev/pts/9", dir.join("fd/0")).unwrap();
            symlink("pipe:[777]", dir.join("fd/1")).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
            std::fs::write(
                dir.join("environ"),
                b"PATH=/bin\0SSH_CONNECTION=192.0.2.1 6000 192.0.2.2 22\0LD_PRELOAD=/late.so\0",
            )
            .unwrap();
            // Not a namespace: its inode never matches the task's.
            std::fs::write(dir.join("ns/net"), b"").unwrap();
        };
        proc(
            LIVE,
            "bin/tool",
            &format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
        );
        proc(HOLDER, "sbin/sshd", "0::/system.slice/ssh.service\n");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Fixture {
            root,
            ns_per_tick: 1_000_000_000 / hz,
        }
    }

    fn enricher(&self) -> Enricher {
        let none = self.root.join("no-such.sock");
        Enricher::new(EnrichConfig {
            proc_root: self.root.join("proc"),
            passwd: self.root.join("passwd"),
            runtime_sockets: RuntimeSockets {
                docker: none.clone(),
                podman: none.clone(),
                crio: none.clone(),
                containerd: none,
            },
            ..EnrichConfig::default()
        })
    }

    fn start(&self) -> u64 {
        START_TICKS * self.ns_per_tick
    }
}

/// A task of `pid`, alive in the fixture unless it is GONE.
macro_rules! task {
    ($fx:expr, $pid:expr, $uid:expr, $comm:expr) => {{
        let mut t = raw::task($pid, 1, $uid, $comm);
        if $pid != GONE && $pid != UNSEEN {
            t.start_boottime = $fx.start();
        }
        t.pid_ns = 4026531836;
        t.mnt_ns = 4026531841;
        t.ns_pid = $pid;
        t.cgroup_id = 77;
        t.sessionid = 3;
        t
    }};
}

fn decoded(rec: &[u8]) -> Record {
    decode(rec).expect("builder records decode")
}

/// The records, each with whether its task is in the host's network
/// namespace (its local_ip is then the host's, normalised).
fn records(fx: &Fixture) -> Vec<(&'static str, Record, bool)> {
    let root = fx.root.to_str().unwrap().as_bytes();
    let mut out = Vec::new();

    // A live process, its stdio and cwd read from /proc, a socket holder
    // ancestor and a container cgroup from the kernel.
    let mut t = task!(fx, LIVE, 1000, b"tool");
    t.euid = 0;
    let rec = raw::exec(
        t,
        b"/bin/tool",
        &[b"home", b"alice"],
        &[
            b"system.slice",
            &format!("docker-{CONTAINER}.scope").into_bytes(),
        ],
        &[b"tool", b"--flag", b"a b", b"\xff"],
        &[
            b"HOME=/root",
            b"SSH_CONNECTION=10.0.0.9 5555 10.0.0.1 22",
            b"LD_PRELOAD=/x.so",
        ],
        &[(HOLDER, b"sshd"), (1, b"systemd")],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.tty = b"pts9".to_vec();
    e.socket = Some((
        Ancestor {
            pid: HOLDER,
            start_boottime: Some(fx.start()),
            comm: b"sshd".to_vec(),
        },
        SockAddrs {
            family: 2,
            sip: [10, 0, 0, 1].into(),
            sport: 22,
            dip: [10, 0, 0, 9].into(),
            dport: 5555,
        },
    ));
    out.push(("exec live", Record::Exec(e), true));

    // The same process again: its stdio named by the kernel, its cwd
    // deeper than the kernel walks (so read from /proc).
    let rec = raw::exec(
        task!(fx, LIVE, 0, b"tool"),
        b"/bin/tool",
        &[b"deep"],
        &[],
        &[b"tool"],
        &[],
        &[],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.cwd_truncated = true;
    e.stdio = [
        FdInfo {
            mode: 0o020620,
            rdev: (136 << 20) | 4,
            ino: 7,
        },
        FdInfo {
            mode: 0o140777,
            rdev: 0,
            ino: 991,
        },
    ];
    e.argv_truncated = true;
    e.pid_tree_truncated = true;
    out.push(("exec truncated cwd", Record::Exec(e), true));

    // The kernel's copy of the environment cut short: what it missed is
    // read from /proc while the process lives, and only then.
    let rec = raw::exec(
        task!(fx, LIVE, 1000, b"tool"),
        b"/bin/tool",
        &[b"work"],
        &[],
        &[b"tool"],
        &[b"LD_PRELOAD=/early.so"],
        &[],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.env_truncated = true;
    out.push(("exec env truncated", Record::Exec(e), true));
    let rec = raw::exec(
        task!(fx, 0x7fff_fff3, 0, b"x"),
        b"/x",
        &[],
        &[],
        &[b"x"],
        &[],
        &[],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.env_truncated = true;
    out.push(("exec env truncated gone", Record::Exec(e), true));

    // Gone before /proc was read, its cwd truncated too.
    let rec = raw::exec(
        task!(fx, GONE, 0, b"ghost"),
        b"/bin/sh",
        &[b"var", b"tmp"],
        &[
            b"kubepods.slice",
            b"kubepods-besteffort.slice",
            b"kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice",
            &format!("cri-containerd-{CONTAINER}.scope").into_bytes(),
        ],
        &[b"sh", b"-c", b"id"],
        &[b"LD_PRELOAD=/evil.so"],
        &[(1, b"systemd")],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.cwd_truncated = true;
    out.push(("exec gone", Record::Exec(e), true));

    // A failed exec of a relative path: about the refused path.
    let rec = raw::exec(
        task!(fx, LIVE, 1000, b"tool"),
        b"./nothere",
        &[b"work"],
        &[],
        &[b"nothere"],
        &[],
        &[],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.res = -2;
    out.push(("exec failed", Record::Exec(e), true));
    // A failed exec of an existing absolute path: hashed.
    let path = [root, b"/bin/tool"].concat();
    let rec = raw::exec(
        task!(fx, GONE, 1000, b"x"),
        &path,
        &[],
        &[],
        &[b"tool"],
        &[],
        &[],
    );
    let Record::Exec(mut e) = decoded(&rec) else {
        unreachable!()
    };
    e.res = -13;
    out.push(("exec failed absolute", Record::Exec(e), true));

    out.push((
        "connect v4",
        decoded(&raw::connect(
            task!(fx, LIVE, 1000, b"curl"),
            0,
            [10, 1, 2, 3],
            80,
        )),
        true,
    ));
    out.push((
        "connect v4 refused",
        decoded(&raw::connect(
            task!(fx, GONE, 0, b"nc"),
            -111,
            [192, 0, 2, 1],
            4444,
        )),
        true,
    ));
    let mut dip6 = [0u8; 16];
    dip6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    dip6[15] = 7;
    out.push((
        "connect v6",
        decoded(&raw::connect6(task!(fx, LIVE, 0, b"curl"), 0, dip6, 443)),
        true,
    ));
    // In another network namespace that cannot be entered: the socket's
    // own address stands in for the host's.
    let mut t = task!(fx, GONE, 0, b"pod");
    t.net_ns = 4026532999;
    let Record::Connect(mut c) = decoded(&raw::connect(t, 0, [10, 9, 9, 9], 8080)) else {
        unreachable!()
    };
    c.addrs.sip = [10, 244, 0, 5].into();
    out.push(("connect other netns", Record::Connect(c), false));
    let mut t = task!(fx, GONE, 0, b"pod");
    t.net_ns = 4026532999;
    out.push((
        "connect other netns loopback",
        decoded(&raw::connect(t, 0, [127, 0, 0, 1], 8080)),
        false,
    ));

    out.push((
        "ptrace",
        decoded(&raw::ptrace(task!(fx, LIVE, 0, b"gdb"), 16, 999, 0, 0, 0)),
        true,
    ));
    out.push((
        "ptrace poke",
        decoded(&raw::ptrace(
            task!(fx, UNSEEN, 1000, b"inj"),
            5,
            1,
            -1,
            0x7fff_0000_1000,
            0xdead_beef,
        )),
        true,
    ));

    let answer = dns::build::message(0x1234, 0x8183, "www.example.com", 28);
    out.push((
        "dns",
        decoded(&raw::dns(task!(fx, LIVE, 1000, b"resolver"), &answer)),
        true,
    ));
    let answered = dns::build::with_answers(
        dns::build::message(0x1235, 0x8180, "www.example.com", 1),
        &[
            None,
            Some("192.0.2.1".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ],
    );
    out.push((
        "dns with answers",
        decoded(&raw::dns(task!(fx, LIVE, 1000, b"resolver"), &answered)),
        true,
    ));
    let query = dns::build::message(7, 0x0100, "kestrel.test", 1);
    out.push((
        "dns query",
        decoded(&raw::dns(task!(fx, GONE, 0, b"dig"), &query)),
        true,
    ));
    out.push((
        "dns malformed",
        decoded(&raw::dns(task!(fx, LIVE, 1000, b"resolver"), &answer[..15])),
        true,
    ));
    let mut bad = answer.clone();
    bad[12] = 64;
    out.push((
        "dns bad label",
        decoded(&raw::dns(task!(fx, UNSEEN, 0, b"x"), &bad)),
        true,
    ));

    let triggers = [
        (1, "cred exec"),
        (2, "cred exec failed"),
        (3, "cred connect"),
        (4, "cred ptrace"),
        (6, "cred fork"),
        (7, "cred exit"),
        (8, "cred dup"),
        (99, "cred unknown trigger"),
    ];
    for (trigger, name) in triggers {
        let filename: &[u8] = if trigger <= 2 { b"/tmp/rootme" } else { b"" };
        let pid = [LIVE, GONE, UNSEEN][trigger as usize % 3];
        let rec = raw::cred(task!(fx, pid, 0, b"rootme"), 1000, 1000, trigger, filename);
        out.push((name, decoded(&rec), true));
    }
    // Gone, noticed at exec: exe falls back to the program exec'd.
    let rec = raw::cred(task!(fx, UNSEEN, 0, b"rootme"), 1000, 0, 1, b"/tmp/rootme");
    out.push(("cred gone", decoded(&rec), true));

    let lib: Vec<&[u8]> = fx
        .root
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_encoded_bytes())
        .chain([&b"lib"[..], b"evil.ko"])
        .collect();
    out.push((
        "module finit",
        decoded(&raw::module(
            task!(fx, LIVE, 0, b"insmod"),
            0,
            3,
            0,
            0,
            &lib,
        )),
        true,
    ));
    out.push((
        "module init",
        decoded(&raw::module(
            task!(fx, UNSEEN, 0, b"loader"),
            -1,
            -1,
            4096,
            0,
            &[],
        )),
        true,
    ));
    out.push((
        "module missing file",
        decoded(&raw::module(
            task!(fx, GONE, 0, b"insmod"),
            -2,
            4,
            0,
            2,
            &[b"lib", b"gone.ko"],
        )),
        true,
    ));

    out.push((
        "file create",
        decoded(&raw::file(
            task!(fx, LIVE, 1000, b"sh"),
            Creation::Open,
            0o100644,
            &[b"tmp", b"drop.sh"],
            b"",
        )),
        true,
    ));
    out.push((
        "file tmpfile",
        decoded(&raw::file(
            task!(fx, UNSEEN, 0, b"x"),
            Creation::Tmpfile,
            0o100600,
            &[b"dev", b"shm", b"#123"],
            b"",
        )),
        true,
    ));
    out.push((
        "file mknod",
        decoded(&raw::file(
            task!(fx, LIVE, 0, b"mknod"),
            Creation::Mknod,
            0o010644,
            &[b"tmp"],
            b"fifo",
        )),
        true,
    ));
    out.push((
        "file mknod absolute",
        decoded(&raw::file(
            task!(fx, LIVE, 0, b"mknod"),
            Creation::Mknod,
            0o020600,
            &[b"tmp"],
            b"/dev/evil",
        )),
        true,
    ));
    let Record::File(mut f) = decoded(&raw::file(
        task!(fx, GONE, 0, b"x"),
        Creation::Open,
        0o100644,
        &[b"deep", b"f"],
        b"",
    )) else {
        unreachable!()
    };
    f.path_truncated = true;
    out.push(("file truncated", Record::File(f), true));
    out
}

/// The event as one JSON line, with the machine's facts replaced.
fn normalised(ev: &kestrel_event::Event, root: &Path, host_net: bool) -> String {
    let mut ev = ev.clone();
    assert!(ev.get("time").is_some_and(|t| t.parse::<i64>().is_ok()));
    ev.set("time", "<time>");
    ev.set("hostname", "<hostname>");
    if host_net {
        ev.set("local_ip", "<local_ip>");
    }
    let mut out = Vec::new();
    ev.write_json_line(&mut out);
    String::from_utf8(out)
        .unwrap()
        .replace(root.to_str().unwrap(), "<root>")
}

#[test]
fn every_kind_renders_as_before() {
    let fx = Fixture::new();
    let mut en = fx.enricher();
    let mut got = String::new();
    for (name, rec, host_net) in records(&fx) {
        let ev = en
            .enrich(&rec)
            .unwrap_or_else(|| panic!("{name}: no event"));
        got.push_str(&format!("# {name}\n"));
        got.push_str(&normalised(&ev, &fx.root, host_net));
    }
    let c = en.counters();
    got.push_str(&format!(
        "# counters process_gone={} md5_too_large={} md5_unreadable={} dns_malformed={}\n",
        c.process_gone, c.md5_too_large, c.md5_unreadable, c.dns_malformed
    ));
    std::fs::remove_dir_all(&fx.root).unwrap();

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden.jsonl");
    if std::env::var_os("KESTREL_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {} differs", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
