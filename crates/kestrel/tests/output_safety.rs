//! Where the agent writes, under attack: the control server choosing the
//! output file, other users' symlinks and pre-created files in /tmp, the
//! raw record file, a full disk, the size cap, and the state directory's
//! modes. Each attack is made for real (links and files created by uid
//! 65534, a tmpfs filled to ENOSPC, a real server and `kestrel ctl`).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::server::{ctl, scratch, start_server, wait_until, Proc};
use crate::support::{kestrel, marker, serial, Agent};
use serde_json::Value;

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Runs `cmd` as uid/gid 65534: the unprivileged attacker.
fn as_nobody(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd} {args:?} as nobody: {st}");
}

/// Removes paths when dropped (a test that fails must not leave a file in
/// /etc or a link in /tmp behind).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `kestrel agent ARGS` that is expected to refuse to start: its exit
/// code and stderr, or None (and the agent killed) if it was still running
/// after 30 s, that is, it accepted.
fn refused(args: &[&str], state: &Path) -> Option<(i32, String)> {
    let _serial = serial();
    let mut child = kestrel()
        .args(["agent", "--no-logins", "--inventory-interval-hours", "0"])
        .args(["--rootkit-scan-interval-hours", "0", "--state-dir"])
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Some((
                st.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exec_marker(m: &str) {
    Command::new("/bin/sh")
        .args(["-c", &format!("/bin/true {m}")])
        .status()
        .unwrap();
}

fn has_exec(path: &Path, m: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|e| e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(m)))
}

/// The numbers of the last `counters` line in `stderr` (periodic or final).
fn last_counters(stderr: &str) -> HashMap<String, u64> {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("counters when="))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_server_cannot_choose_where_the_agent_writes() {
    let _serial = serial();
    let (grpc, http) = (18590, 18591);
    let dir = scratch("outpolicy");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let allowed = dir.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let m = marker("x");
    let evil = PathBuf::from(format!("/etc/profile.d/{m}.sh"));
    let _cleanup = Cleanup(vec![evil.clone()]);
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
            .arg("--output-allow")
            .arg(&allowed)
            .args(["--heartbeat-secs", "1"]),
        "control: connected",
    );
    let id = std::fs::read_to_string(dir.join("state/agent-id")).unwrap();
    let refuse = |arg: &str| {
        let o = ctl(&data, http, &["command", &id, "config", arg]);
        let said =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "{arg} accepted: {said}");
        assert!(
            said.contains("refused") && said.contains("--output-allow"),
            "{arg}: {said}"
        );
    };
    // The attack of the issue: an event line with `$(...)` in a file every
    // login shell runs as root.
    refuse(&format!("output=file:{}", evil.display()));
    refuse("output=file:/etc/ld.so.preload");
    refuse(&format!(
        "output=file:{}/../../../etc/profile.d/{m}.sh",
        allowed.display()
    ));
    // Kafka options name files the agent reads or writes.
    refuse("output=kafka://127.0.0.1:9/t?sasl_password_file=/etc/shadow");
    refuse("output=kafka://127.0.0.1:9/t?spool_dir=/etc/kestrel-spool");
    exec_marker(&format!("'$(id)'{m}"));
    wait_until(60, || has_exec(&out, &m).then_some(()))
        .expect("the host's own output stopped after the refusals");
    assert!(!evil.exists(), "{} was written", evil.display());
    assert!(!Path::new("/etc/kestrel-spool").exists());
    assert!(
        agent
            .stderr()
            .contains("the server's output change refused"),
        "no warning in the agent's log:\n{}",
        agent.stderr()
    );
    // What the host allowed still works.
    let ok = allowed.join("b.jsonl");
    let o = ctl(
        &data,
        http,
        &[
            "command",
            &id,
            "config",
            &format!("output=file:{}", ok.display()),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let m2 = marker("allowed");
    exec_marker(&m2);
    wait_until(60, || has_exec(&ok, &m2).then_some(())).expect("the allowed output got nothing");
    agent.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_and_raw_files_are_not_opened_through_other_users_files() {
    let dir = scratch("links");
    let state = dir.join("state");
    // Root's secret, which the links point at.
    let secret = dir.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rootdir = dir.join("rootdir");
    std::fs::create_dir_all(&rootdir).unwrap();
    let m = marker("l");
    let link = PathBuf::from(format!("/tmp/{m}-link"));
    let dirlink = PathBuf::from(format!("/tmp/{m}-dirlink"));
    let planted = PathBuf::from(format!("/tmp/{m}-planted.json"));
    let rawlink = PathBuf::from(format!("/tmp/{m}-raw"));
    let _cleanup = Cleanup(vec![
        link.clone(),
        dirlink.clone(),
        planted.clone(),
        rawlink.clone(),
    ]);
    as_nobody(
        "ln",
        &["-s", secret.to_str().unwrap(), link.to_str().unwrap()],
    );
    as_nobody(
        "ln",
        &["-s", rootdir.to_str().unwrap(), dirlink.to_str().unwrap()],
    );
    as_nobody(
        "ln",
        &["-s", secret.to_str().unwrap(), rawlink.to_str().unwrap()],
    );
    // A file made by the attacker for root to fill: readable by all.
    as_nobody(
        "/bin/sh",
        &["-c", &format!("umask 0; : > {}", planted.display())],
    );
    let root_0666 = dir.join("wide.json");
    std::fs::write(&root_0666, "").unwrap();
    std::fs::set_permissions(&root_0666, std::fs::Permissions::from_mode(0o666)).unwrap();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--output".into(), format!("file:{}", link.display())],
            "symlink",
        ),
        (
            vec![
                "--output".into(),
                format!("file:{}/x.sh", dirlink.display()),
            ],
            "symlink owned by uid 65534",
        ),
        (
            vec!["--output".into(), format!("file:{}", planted.display())],
            "owned by uid 65534",
        ),
        (
            vec!["--output".into(), format!("file:{}", root_0666.display())],
            "writable by group or others",
        ),
        (
            vec!["--record-raw".into(), rawlink.display().to_string()],
            "symlink",
        ),
    ];
    for (args, why) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((code, text)) = refused(&a, &state) else {
            panic!("the agent started with {args:?}");
        };
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(
            text.contains(why),
            "{args:?}: the error does not say {why:?}: {text}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
    assert_eq!(mode(&secret), 0o600);
    assert!(!rootdir.join("x.sh").exists());
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "");

    // Root's own files: a reused one is narrowed, new ones are private.
    let reused = dir.join("events.json");
    std::fs::write(&reused, "").unwrap();
    std::fs::set_permissions(&reused, std::fs::Permissions::from_mode(0o644)).unwrap();
    let raw = dir.join("raw.bin");
    let agent = Agent::start_to_file(
        &reused,
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--record-raw",
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(mode(&reused), 0o640);
    assert_eq!(mode(&raw), 0o600);
    agent.stop();
    let fresh = dir.join("fresh.json");
    let agent = Agent::start_to_file(&fresh, &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(mode(&fresh), 0o640);
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs: {st}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Descriptors of `pid` open on deleted files under `dir`.
fn deleted_fds(pid: u32, dir: &Path) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.starts_with(&dir.display().to_string()) && t.ends_with("(deleted)"))
        .collect()
}

#[test]
fn a_full_disk_is_recovered_from_at_sighup() {
    let dir = scratch("enospc");
    let fs = Tmpfs::mount(&dir.join("fs"), "2m");
    let out = fs.0.join("events.json");
    let agent = Agent::start_to_file(
        &out,
        &[
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--stats-interval-secs",
            "1",
        ],
    );
    // Most of the disk is taken by something else; the events take the
    // rest.
    std::fs::write(fs.0.join("filler"), vec![b'x'; 1536 << 10]).unwrap();
    let errors = || {
        last_counters(&agent.stderr())
            .get("write_errors")
            .copied()
            .unwrap_or(0)
    };
    let m = marker("fill");
    let deadline = Instant::now() + Duration::from_secs(120);
    while errors() == 0 {
        assert!(
            Instant::now() < deadline,
            "the disk never filled:\n{}",
            agent.stderr()
        );
        Command::new("/bin/sh")
            .args([
                "-c",
                &format!("for i in $(seq 200); do /bin/true {m}-$i; done"),
            ])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
    }
    // The admin deletes the full event file and asks for a re-open: its
    // space comes back only once the agent closes it.
    std::fs::remove_file(&out).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let m2 = marker("after");
    let got = wait_until(30, || {
        exec_marker(&m2);
        has_exec(&out, &m2).then_some(())
    });
    assert!(
        got.is_some(),
        "no event in the new file after SIGHUP:\n{}",
        agent.stderr()
    );
    let open = deleted_fds(agent.pid(), &fs.0);
    assert!(open.is_empty(), "the deleted file is still open: {open:?}");
    // The freed space is only the old file's, which other processes' events
    // may fill again: with the filler gone too, later events go on.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let m3 = marker("later");
    wait_until(30, || {
        exec_marker(&m3);
        has_exec(&out, &m3).then_some(())
    })
    .expect("later events lost");
    let c = agent.stop();
    eprintln!(
        "full disk: write_errors={} emitted={} at exit",
        c["write_errors"], c["emitted"]
    );
    assert!(c["write_errors"] > 0 && c["emitted"] > 0, "{c:?}");
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_size_cap_rotates_or_stops() {
    let dir = scratch("cap");
    let state = dir.join("state");
    let out = dir.join("cap.json");
    let agent = Agent::start_to_file(
        &out,
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--output-max-bytes",
            "8192",
            "--output-keep",
            "2",
        ],
    );
    let m = marker("cap");
    let numbered = |i: u32| dir.join(format!("cap.json.{i}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !numbered(2).exists() || !numbered(1).exists() {
        assert!(
            Instant::now() < deadline,
            "no rotation:\n{}",
            agent.stderr()
        );
        Command::new("/bin/sh")
            .args([
                "-c",
                &format!("for i in $(seq 50); do /bin/true {m}-$i; done"),
            ])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Two more rotations, so that the oldest has been dropped.
    let first2 = std::fs::read(numbered(2)).unwrap();
    while std::fs::read(numbered(2)).unwrap() == first2 {
        assert!(Instant::now() < deadline, "no third rotation");
        Command::new("/bin/sh")
            .args([
                "-c",
                &format!("for i in $(seq 50); do /bin/true {m}-$i; done"),
            ])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let c = agent.stop();
    assert!(!numbered(3).exists(), "more than 2 rotated files kept");
    for p in [out.clone(), numbered(1), numbered(2)] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= 8192, "{}: {len} bytes", p.display());
        assert_eq!(mode(&p), 0o640);
    }
    assert!(c["output_rotations"] >= 3, "{c:?}");
    assert_eq!(c["output_capped"], 0);

    // keep = 0: writing stops at the cap, counted.
    let stop = dir.join("stop.json");
    let agent = Agent::start_to_file(
        &stop,
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--output-max-bytes",
            "8192",
            "--output-keep",
            "0",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        Command::new("/bin/sh")
            .args([
                "-c",
                &format!("for i in $(seq 50); do /bin/true {m}-$i; done"),
            ])
            .status()
            .unwrap();
        if agent.stderr().contains("reached its size cap") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never capped:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let c = agent.stop();
    assert!(std::fs::metadata(&stop).unwrap().len() <= 8192);
    assert!(!dir.join("stop.json.1").exists());
    assert!(c["output_capped"] > 0, "{c:?}");
    assert!(c["write_errors"] >= c["output_capped"], "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_state_directory_is_for_root_only() {
    let dir = scratch("state");
    // What an older agent left: a 0755 directory with 0644 files.
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["run", "var_log_x.pos", "journal.cursor"] {
        std::fs::write(old.join(f), "1\n").unwrap();
        std::fs::set_permissions(old.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = dir.join("auth.log");
    std::fs::write(&log, "").unwrap();
    let fresh = dir.join("fresh/state");
    for state in [&old, &fresh] {
        let agent = Agent::start(&[
            "--state-dir",
            state.to_str().unwrap(),
            "--auth-log",
            log.to_str().unwrap(),
        ]);
        std::fs::write(
            &log,
            "Jan  1 00:00:00 h sshd[1]: Accepted password for root from 10.9.9.9 port 1 ssh2\n",
        )
        .unwrap();
        let pos = state.join(format!(
            "{}.pos",
            log.display()
                .to_string()
                .trim_start_matches('/')
                .replace('/', "_")
        ));
        wait_until(20, || pos.exists().then_some(())).expect("no read position written");
        agent.stop();
        assert_eq!(mode(state), 0o700, "{}", state.display());
        for ent in std::fs::read_dir(state).unwrap() {
            let p = ent.unwrap().path();
            if p.is_file() {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
        assert_eq!(mode(&pos), 0o600);
        assert_eq!(mode(&state.join("run")), 0o600);
        assert_eq!(mode(&state.join("agent-id")), 0o600);
    }
    // A state directory another user made is not taken.
    let m = marker("st");
    let theirs = PathBuf::from(format!("/tmp/{m}-state"));
    as_nobody("mkdir", &[theirs.to_str().unwrap()]);
    let r = refused(&[], &theirs);
    let _ = std::fs::remove_dir_all(&theirs);
    let Some((code, text)) = r else {
        panic!("the agent took a state directory of uid 65534")
    };
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("owned by uid 65534"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
