//! False positives: the agent with its default built-in rules watches a
//! benign workload, all of it done for real on this host: a C project built
//! with make and gcc from a git clone, that build packaged as a .deb (a
//! binary in /usr/bin, a job in /etc/cron.d, a systemd unit under
//! /usr/lib/systemd/system, debhelper's maintainer scripts) installed with
//! dpkg, cron running the package's job, a Rust project built by cargo
//! offline, python scripts (file IO in /tmp, subprocesses, an HTTP server on
//! 127.0.0.1 and its client), an ssh login with the correct password that
//! runs a few commands, logrotate renaming, truncating and compressing logs
//! under /var/log, and the package removed and purged. It must raise no high
//! or critical alert, and at most five in all; a failure prints every alert
//! with its rule and trigger events.
//!
//! Other engineers' tests run on the same host (the e2e lock keeps their
//! agents apart, not their other activity): the alerts counted are those
//! whose trigger events come from the workload's processes, the ones this
//! test started and their descendants (by pid tree, parent and process id
//! in the agent's own events), and the logins of this test's own sshd log.
//! The others are printed, not counted. Cron: the host's running daemon
//! when there is one (then it is one of the workload's processes), else
//! `cron -f` started by the test (cron is in `scripts/install-deps --test`);
//! either way the job is the package's own /etc/cron.d file, run by the
//! daemon at the next minute. `KESTREL_BENIGN_DUMP=FILE` writes every event
//! the agent gave to FILE, for `kestrel rules test` replays of a failure.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::sshd::Sshd;
use crate::support::{marker, Agent};

/// Where logrotate's logs go (removed before and after).
const LOG_DIR: &str = "/var/log/kestrel-benign-test";

/// What the test leaves on the host, put back when dropped (on a failure
/// too): the processes it started, the package, the user, the files.
struct Cleanup {
    pkg: String,
    user: String,
    scratch: PathBuf,
    children: Vec<Child>,
    /// `cron -f` started by the test, whose pid file it removes.
    our_cron: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        if let Some(pid) = self.our_cron {
            let pidfile = Path::new("/run/crond.pid");
            if std::fs::read_to_string(pidfile).is_ok_and(|s| s.trim() == pid.to_string()) {
                let _ = std::fs::remove_file(pidfile);
            }
        }
        let _ = quiet(Command::new("dpkg").args(["--purge", &self.pkg]));
        let _ = quiet(Command::new("userdel").args(["-r", &self.user]));
        let _ = std::fs::remove_dir_all(LOG_DIR);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The processes the workload started itself; their descendants are found
/// in the agent's events.
#[derive(Default)]
struct Workload {
    roots: Vec<u32>,
    steps: Vec<(String, Duration)>,
}

impl Workload {
    /// Runs `cmd` to its end; it must succeed. Its standard output.
    fn run(&mut self, what: &str, cmd: &mut Command) -> String {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.roots.push(child.id());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Starts `cmd` in the background.
    fn spawn(&mut self, what: &str, cmd: &mut Command) -> Child {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.roots.push(child.id());
        child
    }

    fn step(&mut self, name: &str, start: Instant) {
        self.steps.push((name.to_string(), start.elapsed()));
    }
}

fn write(path: &Path, content: &str, mode: u32) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    // dpkg-deb wants 0755 directories, whatever the umask.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// A small C project: three sources, a header, a Makefile with an install
/// target. The program appends a line to the file it is given, or prints
/// it.
fn c_project(dir: &Path) {
    let files = [
        (
            "Makefile",
            "CFLAGS ?= -O2 -Wall -Wextra\nPREFIX ?= /usr\nBIN ?= hello\nOBJS = main.o greet.o count.o\n\n\
             all: $(BIN)\n\n\
             $(BIN): $(OBJS)\n\t$(CC) $(CFLAGS) -o $@ $(OBJS)\n\n\
             %.o: %.c greet.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n\
             install: $(BIN)\n\tinstall -d $(DESTDIR)$(PREFIX)/bin\n\
             \tinstall -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/$(BIN)\n\n\
             clean:\n\trm -f $(OBJS) $(BIN)\n\n.PHONY: all install clean\n",
        ),
        (
            "greet.h",
            "#ifndef GREET_H\n#define GREET_H\nconst char *greeting(void);\nint count_words(const char *s);\n#endif\n",
        ),
        (
            "greet.c",
            "#include \"greet.h\"\nconst char *greeting(void) { return \"hello from a benign workload\"; }\n",
        ),
        (
            "count.c",
            "#include <ctype.h>\n#include \"greet.h\"\n\
             int count_words(const char *s) {\n  int n = 0, in = 0;\n\
             for (; *s; s++) { if (isspace((unsigned char)*s)) in = 0; else if (!in) { in = 1; n++; } }\n\
             return n;\n}\n",
        ),
        (
            "main.c",
            "#include <stdio.h>\n#include \"greet.h\"\n\
             int main(int argc, char **argv) {\n\
             if (argc > 1) {\n  FILE *f = fopen(argv[1], \"a\");\n  if (!f) return 1;\n\
             fprintf(f, \"%s %d\\n\", greeting(), count_words(\"a b c\"));\n  return fclose(f) != 0;\n}\n\
             printf(\"%s %d\\n\", greeting(), count_words(\"one two three\"));\nreturn 0;\n}\n",
        ),
    ];
    for (name, content) in files {
        write(&dir.join(name), content, 0o644);
    }
}

/// A Rust project with no dependencies: a library and a binary.
fn rust_project(dir: &Path) {
    write(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"benign-hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        0o644,
    );
    write(
        &dir.join("src/lib.rs"),
        "pub fn words(s: &str) -> usize {\n    s.split_whitespace().count()\n}\n",
        0o644,
    );
    write(
        &dir.join("src/main.rs"),
        "fn main() {\n    let n = benign_hello::words(\"one two three\");\n    println!(\"hello from rust {n}\");\n}\n",
        0o644,
    );
}

/// The maintainer scripts debhelper 13.11.4 (Debian 12's) writes for a
/// package with a systemd unit (dh_installsystemd), as Debian's own
/// packages carry them.
fn maintainer_scripts(unit: &str) -> [(&'static str, String); 3] {
    let postinst = format!(
        r#"#!/bin/sh
set -e
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	# The following line should be removed in trixie or trixie+1
	deb-systemd-helper unmask '{unit}' >/dev/null || true

	# was-enabled defaults to true, so new installations run enable.
	if deb-systemd-helper --quiet was-enabled '{unit}'; then
		# Enables the unit on first installation, creates new
		# symlinks on upgrades if the unit file has changed.
		deb-systemd-helper enable '{unit}' >/dev/null || true
	else
		# Update the statefile to add new symlinks (if any), which need to be
		# cleaned up on purge. Also remove old symlinks.
		deb-systemd-helper update-state '{unit}' >/dev/null || true
	fi
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			_dh_action=restart
		else
			_dh_action=start
		fi
		deb-systemd-invoke $_dh_action '{unit}' >/dev/null || true
	fi
fi
# End automatically added section
"#
    );
    let prerm = format!(
        r#"#!/bin/sh
set -e
# Automatically added by dh_installsystemd/13.11.4
if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	deb-systemd-invoke stop '{unit}' >/dev/null || true
fi
# End automatically added section
"#
    );
    let postrm = format!(
        r#"#!/bin/sh
set -e
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	systemctl --system daemon-reload >/dev/null || true
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge '{unit}' >/dev/null || true
	fi
fi
# End automatically added section
"#
    );
    [("postinst", postinst), ("prerm", prerm), ("postrm", postrm)]
}

const PY_FILEIO: &str = r#"
import json, os, shutil, sys, tempfile
base = sys.argv[1]
data = os.path.join(base, "data")
os.makedirs(data, exist_ok=True)
p = os.path.join(data, "records.json")
with open(p, "w") as f:
    json.dump({"n": list(range(100))}, f)
with open(p) as f:
    assert len(json.load(f)["n"]) == 100
with open(p, "a") as f:
    f.write("\n")
with tempfile.NamedTemporaryFile("w", dir=base, suffix=".tmp", delete=False) as t:
    t.write("scratch\n")
os.replace(t.name, os.path.join(data, "done.txt"))
shutil.copy(p, p + ".bak")
os.remove(p + ".bak")
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "x"), "w") as f:
        f.write("x" * 4096)
print("fileio ok")
"#;

const PY_PROC: &str = r#"
import subprocess, sys
out = subprocess.run(["ls", "-la", sys.argv[1]], capture_output=True, text=True, check=True).stdout
assert "data" in out, out
subprocess.run(["ls", "/"], stdout=subprocess.DEVNULL, check=True)
print("proc ok")
"#;

const PY_CLIENT: &str = r#"
import sys, time, urllib.request
port, dest = int(sys.argv[1]), sys.argv[2]
url = "http://127.0.0.1:%d/" % port
for _ in range(100):
    try:
        body = urllib.request.urlopen(url + "report.txt", timeout=5).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server did not answer")
with open(dest, "wb") as f:
    f.write(body)
index = urllib.request.urlopen(url, timeout=5).read().decode()
assert "report.txt" in index, index
print("http ok", len(body))
"#;

/// A free port on 127.0.0.1 that is none of the ports the mining rule
/// watches (a chance ephemeral 45560 would be a true alert of that rule).
fn free_port() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if ![
            3333, 3334, 3335, 3336, 3357, 4444, 5555, 5556, 6666, 7777, 10128, 10343, 14433, 14444,
            20128, 45560, 45700,
        ]
        .contains(&p)
        {
            return p;
        }
    }
}

/// The pid of a cron daemon running on the host, if any.
fn running_cron() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string("/run/crond.pid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    exe.to_string_lossy().ends_with("/cron").then_some(pid)
}

/// The pids in a pid tree (`1(systemd)->812(sshd)->...`).
fn tree_pids(tree: &str) -> impl Iterator<Item = &str> {
    tree.split("->").filter_map(|a| a.split('(').next())
}

/// The workload's processes: `roots` and, from the events, every process
/// whose pid tree has one of them, and their forked children.
fn workload_pids(events: &[Value], roots: &[u32]) -> HashSet<String> {
    let mut ours: HashSet<String> = roots.iter().map(u32::to_string).collect();
    loop {
        let before = ours.len();
        for e in events {
            let Some(tgid) = e["tgid"].as_str() else {
                continue;
            };
            if ours.contains(tgid) {
                continue;
            }
            let by_tree = e["pid_tree"]
                .as_str()
                .is_some_and(|t| tree_pids(t).any(|p| ours.contains(p)));
            let by_parent = e["ppid"].as_str().is_some_and(|p| ours.contains(p));
            if by_tree || by_parent {
                ours.insert(tgid.to_string());
            }
        }
        if ours.len() == before {
            return ours;
        }
    }
}

/// The trigger events of `alert` found in `events`.
fn triggers<'a>(events: &'a [Value], alert: &Value) -> Vec<&'a Value> {
    let ids: HashSet<&str> = alert["trigger_event_ids"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .collect();
    events
        .iter()
        .filter(|e| e["event_id"].as_str().is_some_and(|id| ids.contains(id)))
        .collect()
}

/// Whether the workload made `alert`: one of its triggers is a login of
/// this test's sshd log (the only log the agent follows), an event of one
/// of the workload's processes, or of the test process itself; an alert
/// whose triggers are not in the stream counts too.
fn by_workload(events: &[Value], alert: &Value, ours: &HashSet<String>, me: &str) -> bool {
    let t = triggers(events, alert);
    t.is_empty()
        || t.iter().any(|e| {
            e["data_type"] == "1001"
                || e["tgid"]
                    .as_str()
                    .is_some_and(|p| p == me || ours.contains(p))
                || e["pid_tree"]
                    .as_str()
                    .is_some_and(|tr| tree_pids(tr).any(|p| ours.contains(p)))
        })
}

/// An alert, its process and each of its trigger events, for a reader to
/// see what fired on what.
fn describe(events: &[Value], alert: &Value) -> String {
    let s = |k: &str| alert[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "- {} ({}), suppressed {}: {}\n    process: tgid {} exe {} argv {:?} pid_tree {}\n",
        s("rule_id"),
        s("severity"),
        s("suppressed"),
        s("rule_name"),
        s("tgid"),
        s("exe"),
        s("argv"),
        s("pid_tree"),
    );
    let t = triggers(events, alert);
    if t.is_empty() {
        out.push_str(&format!(
            "    triggers {} not in the stream\n",
            s("trigger_event_ids")
        ));
    }
    for e in t {
        out.push_str(&format!("    trigger: {e}\n"));
    }
    out
}

/// Waits up to `secs` for an event matching `pred`.
fn wait_event(agent: &Agent, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(e) = agent.events().into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no event for {what} within {secs} s; stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ends_with(e: &Value, key: &str, suffix: &str) -> bool {
    e[key].as_str().is_some_and(|s| s.ends_with(suffix))
}

#[test]
fn a_benign_workload_raises_no_high_or_critical_alert_and_at_most_five() {
    let started = Instant::now();
    let m = marker("benign");
    let digits: String = m.chars().filter(char::is_ascii_digit).collect();
    let tag = &digits[digits.len() - 12..];
    let pkg = format!("kestrel-benign-{tag}");
    let user = format!("kb{}", &tag[tag.len() - 8..]);
    let password = format!("Benign-{tag}-pw");
    let d = std::env::temp_dir().join(&m);
    let _ = std::fs::remove_dir_all(LOG_DIR);
    std::fs::create_dir_all(&d).unwrap();
    let mut cleanup = Cleanup {
        pkg: pkg.clone(),
        user: user.clone(),
        scratch: d.clone(),
        children: Vec::new(),
        our_cron: None,
    };
    let mut w = Workload::default();

    // The host as the workload finds it: an account with a password, sshd
    // and cron running.
    assert!(
        quiet(Command::new("useradd").args(["-m", "-s", "/bin/bash", &user])),
        "useradd {user}"
    );
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}:{password}\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd");
    let sshd_dir = d.join("sshd");
    std::fs::create_dir_all(&sshd_dir).unwrap();
    let sshd_log = sshd_dir.join("sshd.log");
    let sshd = Sshd::start(&sshd_dir, Some(&sshd_log));
    w.roots.push(sshd.pid());
    match running_cron() {
        Some(pid) => w.roots.push(pid),
        None => {
            assert!(
                Path::new("/usr/sbin/cron").exists(),
                "cron is not installed (scripts/install-deps --test installs it)"
            );
            let c = w.spawn("cron -f", Command::new("/usr/sbin/cron").arg("-f"));
            cleanup.our_cron = Some(c.id());
            cleanup.children.push(c);
        }
    }
    std::fs::create_dir_all(LOG_DIR).unwrap();

    let state = d.join("state");
    let agent = Agent::start(&[
        "--auth-log",
        sshd_log.to_str().unwrap(),
        "--login-journal",
        "off",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let me = std::process::id().to_string();

    // 1. git: a C project committed, cloned through the git transport,
    // its log read; the clone built with make and gcc and installed into a
    // package root.
    let t = Instant::now();
    let src = d.join("c-src");
    let build = d.join("c-build");
    c_project(&src);
    let git = |args: &[&str], dir: &Path| {
        let mut c = Command::new("git");
        c.args([
            "-c",
            "user.name=Kestrel Test",
            "-c",
            "user.email=kestrel@example.org",
        ])
        .args(args)
        .current_dir(dir);
        c
    };
    w.run("git init", &mut git(&["init", "-q"], &src));
    w.run("git add", &mut git(&["add", "-A"], &src));
    w.run(
        "git commit",
        &mut git(&["commit", "-q", "-m", "A small C project"], &src),
    );
    w.run(
        "git clone",
        &mut git(
            &[
                "clone",
                "-q",
                "--no-local",
                src.to_str().unwrap(),
                build.to_str().unwrap(),
            ],
            &d,
        ),
    );
    let log = w.run("git log", &mut git(&["log", "--oneline"], &build));
    assert!(log.contains("A small C project"), "{log}");
    w.step("git", t);
    let t = Instant::now();
    let bin_arg = format!("BIN={pkg}");
    w.run(
        "make",
        Command::new("make")
            .args(["-s", "-j2", &bin_arg])
            .current_dir(&build),
    );
    let out = w.run("the C program", &mut Command::new(build.join(&pkg)));
    assert_eq!(out, "hello from a benign workload 3\n");
    let root = d.join("pkg-root");
    w.run(
        "make install",
        Command::new("make")
            .args(["-s", "install", &bin_arg])
            .arg(format!("DESTDIR={}", root.display()))
            .current_dir(&build),
    );
    w.step("C build (make, gcc)", t);

    // 2. The build packaged with a cron job, a systemd unit and
    // debhelper's maintainer scripts, installed with dpkg.
    let t = Instant::now();
    let job_log = PathBuf::from(format!("{LOG_DIR}/cron-{tag}.log"));
    let cron_file = format!("/etc/cron.d/{pkg}");
    let unit = format!("{pkg}.service");
    write(
        &root.join(cron_file.trim_start_matches('/')),
        &format!(
            "# kestrel benign test package\n* * * * * root /usr/bin/{pkg} {}\n",
            job_log.display()
        ),
        0o644,
    );
    write(
        &root.join(format!("usr/lib/systemd/system/{unit}")),
        &format!(
            "[Unit]\nDescription=Kestrel benign test\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/{pkg}\n\n[Install]\nWantedBy=multi-user.target\n"
        ),
        0o644,
    );
    write(
        &root.join("DEBIAN/control"),
        &format!(
            "Package: {pkg}\nVersion: 1.0\nArchitecture: all\nMaintainer: kestrel tests <t@example.org>\nDescription: kestrel benign workload test package\n"
        ),
        0o644,
    );
    write(
        &root.join("DEBIAN/conffiles"),
        &format!("{cron_file}\n"),
        0o644,
    );
    for (name, script) in maintainer_scripts(&unit) {
        write(&root.join("DEBIAN").join(name), &script, 0o755);
    }
    let deb = d.join(format!("{pkg}.deb"));
    w.run(
        "dpkg-deb --build",
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb),
    );
    w.run("dpkg -i", Command::new("dpkg").arg("-i").arg(&deb));
    let installed = Instant::now();
    assert!(Path::new(&cron_file).exists());
    w.step("dpkg -i", t);

    // 3. Rust: cargo offline, its own CARGO_HOME and target directory.
    let t = Instant::now();
    let rust = d.join("rust-src");
    rust_project(&rust);
    let target = d.join("rust-target");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut cargo = Command::new("cargo");
    cargo
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("CARGO_HOME", d.join("cargo-home"))
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "RUSTUP_HOME",
            std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup")),
        );
    if let Ok(tc) = std::env::var("RUSTUP_TOOLCHAIN") {
        cargo.env("RUSTUP_TOOLCHAIN", tc);
    }
    w.run(
        "cargo build --offline",
        cargo.args(["build", "--offline", "-q"]).current_dir(&rust),
    );
    let out = w.run(
        "the Rust program",
        &mut Command::new(target.join("debug/benign-hello")),
    );
    assert_eq!(out, "hello from rust 3\n");
    w.step("Rust build (cargo --offline)", t);

    // 4. Python: file IO in /tmp, subprocesses, an HTTP server on
    // 127.0.0.1 and a client fetching from it.
    let t = Instant::now();
    let py = d.join("py");
    for (name, code) in [
        ("fileio.py", PY_FILEIO),
        ("proc.py", PY_PROC),
        ("client.py", PY_CLIENT),
    ] {
        write(&py.join(name), code, 0o644);
    }
    let www = py.join("www");
    write(&www.join("report.txt"), "a report\n", 0o644);
    let python = "/usr/bin/python3";
    let out = w.run(
        "fileio.py",
        Command::new(python).arg(py.join("fileio.py")).arg(&py),
    );
    assert_eq!(out, "fileio ok\n");
    let out = w.run(
        "proc.py",
        Command::new(python).arg(py.join("proc.py")).arg(&py),
    );
    assert_eq!(out, "proc ok\n");
    let port = free_port();
    let server = w.spawn(
        "http.server",
        Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(&www)
            .arg(port.to_string()),
    );
    cleanup.children.push(server);
    let out = w.run(
        "client.py",
        Command::new(python)
            .arg(py.join("client.py"))
            .arg(port.to_string())
            .arg(py.join("downloaded.txt")),
    );
    assert_eq!(out, "http ok 9\n");
    w.step("python", t);

    // 5. An ssh login with the correct password, running a few commands.
    let t = Instant::now();
    let done = format!("done-{tag}");
    let out = w.run(
        "ssh login",
        &mut sshd.password_login(
            &user,
            &password,
            &format!("id -un; uname -r; ls -a ~ >/dev/null; echo {done}"),
        ),
    );
    assert!(out.starts_with(&format!("{user}\n")), "{out}");
    assert!(out.contains(&done), "{out}");
    let login = wait_event(&agent, "the password login", 20, |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(user.as_str())
            && e["status"] == "Success"
    });
    assert_eq!(login["type"], "password", "{login}");
    w.step("ssh login", t);

    // 6. logrotate: one log rotated by rename with a new one created, one
    // copied and truncated, both compressed, the oldest removed.
    let t = Instant::now();
    let app = Path::new(LOG_DIR).join("app.log");
    let worker = Path::new(LOG_DIR).join("worker.log");
    let conf = d.join("logrotate.conf");
    write(
        &conf,
        &format!(
            "{}\n{{\n    rotate 2\n    compress\n    missingok\n    notifempty\n    create 0640 root adm\n}}\n\
             {}\n{{\n    rotate 2\n    compress\n    delaycompress\n    copytruncate\n    missingok\n    notifempty\n}}\n",
            app.display(),
            worker.display()
        ),
        0o644,
    );
    let lr_state = d.join("logrotate.status");
    for round in 0..4 {
        for n in 0..20 {
            append(&app, &format!("round {round} request {n} ok"));
            append(&worker, &format!("round {round} job {n} done"));
        }
        w.run(
            "logrotate -f",
            Command::new("logrotate")
                .args(["-f", "-s"])
                .arg(&lr_state)
                .arg(&conf),
        );
    }
    assert!(Path::new(LOG_DIR).join("app.log.2.gz").exists());
    assert!(!Path::new(LOG_DIR).join("app.log.3.gz").exists());
    assert!(Path::new(LOG_DIR).join("worker.log.2.gz").exists());
    w.step("logrotate", t);

    // 7. cron runs the package's job (at the next minute: cron reads
    // /etc/cron.d again when its mtime changed).
    let t = Instant::now();
    let job = format!("/usr/bin/{pkg}");
    let left = 125u64.saturating_sub(installed.elapsed().as_secs());
    let ran = wait_event(&agent, "the cron job", left.max(5), |e| {
        e["data_type"] == "59"
            && e["exe"].as_str() == Some(job.as_str())
            && e["pid_tree"].as_str().is_some_and(|t| t.contains("(cron)"))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&job_log).is_ok_and(|s| s.contains("benign workload")) {
        assert!(
            Instant::now() < deadline,
            "the cron job wrote nothing: {ran}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    w.step("cron job (waiting for the minute)", t);

    // 8. The package removed, then purged.
    let t = Instant::now();
    w.run("dpkg -r", Command::new("dpkg").args(["-r", &pkg]));
    w.run("dpkg --purge", Command::new("dpkg").args(["--purge", &pkg]));
    assert!(!Path::new(&cron_file).exists());
    assert!(!Path::new(&job).exists());
    w.step("dpkg -r, --purge", t);

    // Delayed file events (hashing) come within about a second.
    std::thread::sleep(Duration::from_secs(3));
    let events = agent.events();
    let stderr = agent.stderr();
    if let Ok(p) = std::env::var("KESTREL_BENIGN_DUMP") {
        let all: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        std::fs::write(p, all.join("\n")).unwrap();
    }
    // Before the stop: the test's own SIGTERM to the agent is no workload.
    let counters = agent.stop();

    // The agent saw the workload.
    let saw = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        assert!(
            events.iter().any(pred),
            "the agent saw no {what}; stderr:\n{stderr}"
        );
    };
    saw("make exec", &|e: &Value| {
        e["data_type"] == "59" && ends_with(e, "exe", "/make")
    });
    saw("dpkg exec", &|e: &Value| {
        e["data_type"] == "59" && ends_with(e, "exe", "/dpkg")
    });
    saw("rustc exec", &|e: &Value| {
        e["data_type"] == "59" && ends_with(e, "exe", "/rustc")
    });
    saw("python connect", &|e: &Value| {
        e["data_type"] == "42" && e["dport"].as_str() == Some(port.to_string().as_str())
    });
    saw("dpkg's cron file", &|e: &Value| {
        e["data_type"] == "602"
            && e["file_path"]
                .as_str()
                .is_some_and(|f| f.starts_with(&cron_file))
    });
    saw("logrotate rename", &|e: &Value| {
        e["data_type"] == "82"
            && ends_with(e, "exe", "/logrotate")
            && e["old_name"]
                .as_str()
                .is_some_and(|f| f.starts_with(LOG_DIR))
    });
    saw("logrotate truncation", &|e: &Value| {
        e["data_type"] == "608" && e["truncates"] == "true" && ends_with(e, "exe", "/logrotate")
    });

    let ours = workload_pids(&events, &w.roots);
    let alerts: Vec<&Value> = events.iter().filter(|e| e["data_type"] == "9000").collect();
    let (mine, others): (Vec<&Value>, Vec<&Value>) = alerts
        .into_iter()
        .partition(|a| by_workload(&events, a, &ours, &me));
    let mut by_rule: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in &mine {
        let k = (
            a["rule_id"].as_str().unwrap_or("").to_string(),
            a["severity"].as_str().unwrap_or("").to_string(),
        );
        let suppressed: u64 = a["suppressed"].as_str().unwrap_or("0").parse().unwrap_or(0);
        *by_rule.entry(k).or_default() += 1 + suppressed;
    }
    let listing: String = mine.iter().map(|a| describe(&events, a)).collect();
    let steps: Vec<String> = w
        .steps
        .iter()
        .map(|(n, t)| format!("{n} {:.1} s", t.as_secs_f64()))
        .collect();
    eprintln!(
        "benign workload: {} events, {} workload processes, {} alerts of the workload \
         {by_rule:?}, {} of other activity on the host (not counted); alerts_suppressed {:?}, \
         lost {:?}; steps: {}; total {:.1} s\n{listing}",
        events.len(),
        ours.len(),
        mine.len(),
        others.len(),
        counters.get("alerts_suppressed"),
        counters.get("kernel_lost"),
        steps.join(", "),
        started.elapsed().as_secs_f64(),
    );
    for a in &others {
        eprintln!("not the workload's: {}", describe(&events, a));
    }
    let severe: Vec<&&Value> = mine
        .iter()
        .filter(|a| a["severity"] == "high" || a["severity"] == "critical")
        .collect();
    assert!(
        severe.is_empty(),
        "the benign workload raised {} high or critical alerts:\n{listing}",
        severe.len()
    );
    let total: u64 = by_rule.values().sum();
    assert!(
        total <= 5,
        "the benign workload raised {total} alerts (suppressed repeats counted), more than five:\n{listing}"
    );
    drop(sshd);
    drop(cleanup);
    exceptions_stay_narrow(&d);
}

/// The exception this workload needed (docs/detections.md) takes only
/// what it did: replayed through the built-in rules, systemctl enabling a
/// vendor unit is quiet, and the same event with one field changed still
/// alerts. cron's PAM child is excepted by its program (the workload runs
/// against a cron older than the agent when one runs), not by its name: a
/// reader of /etc/shadow that only calls itself cron alerts.
fn exceptions_stay_narrow(dir: &Path) {
    let link = |id: &str, exe: &str, target: &str| {
        serde_json::json!({"data_type": "86", "exe": exe, "comm": "systemctl",
            "link_type": "symlink", "old_name": target, "res": "0",
            "new_name": "/etc/systemd/system/multi-user.target.wants/x.service",
            "tgid": id, "pid": id, "time": format!("{id}000"), "event_id": id})
    };
    let read = |id: &str, exe: &str, comm: &str| {
        serde_json::json!({"data_type": "609", "exe": exe, "comm": comm,
            "file": "/etc/shadow", "tgid": id, "pid": id,
            "time": format!("{id}000"), "event_id": id})
    };
    let events = [
        link("1", "/usr/bin/systemctl", "/lib/systemd/system/x.service"),
        link("2", "/usr/bin/systemctl", "/tmp/x.service"),
        link("3", "/usr/bin/systemctl", "/etc/systemd/system/x.service"),
        link("4", "/usr/bin/perl", "/lib/systemd/system/x.service"),
        read("5", "", "cron"),
        read("6", "", "python3"),
        read("7", "/usr/bin/python3", "cron"),
        read("8", "/usr/sbin/cron", "cron"),
    ];
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("variants.json");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = crate::support::kestrel()
        .args(["rules", "test", "--events"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fired: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let a: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                a["trigger_event_ids"].as_str().unwrap(),
                a["rule_id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        fired,
        [
            "2 kestrel.persistence.systemd_unit",
            "3 kestrel.persistence.systemd_unit",
            "4 kestrel.persistence.systemd_unit",
            "5 kestrel.credential_access.shadow_or_key_read",
            "6 kestrel.credential_access.shadow_or_key_read",
            "7 kestrel.credential_access.shadow_or_key_read",
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}
