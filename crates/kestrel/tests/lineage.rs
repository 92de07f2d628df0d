//! Who a process came from: the parent's argv and exe on exec events
//! (59), user-mode helpers' execs (607), and children raised above their
//! parent's credentials (611). Needs root.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{field, marker, Agent, CorePattern, CORE_PATTERN};

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: kill with our child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

fn realpath(p: &str) -> String {
    std::fs::canonicalize(p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exec_events_name_the_parent_s_argv_and_exe() {
    let agent = Agent::start(&[]);
    let mark = marker("lineage");
    // A process group leader with a distinctive argv forks a shell, which
    // forks echo: the shell's parent and group leader are the Python
    // process; echo's parent is the shell, its group leader still Python.
    let code = "import os, sys\n\
                os.setpgid(0, 0)\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    os.execv('/bin/sh', ['/bin/sh', '-c', '/bin/echo ' + sys.argv[1] + '-child; :'])\n\
                os.waitpid(pid, 0)\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", code, &mark])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let py = agent.wait_for("the Python parent", |e| {
        e["data_type"] == "59"
            && e["comm"].as_str().is_some_and(|c| c.starts_with("python"))
            && e["argv"].as_str().is_some_and(|a| a.ends_with(&mark))
    });
    let py_pid = field(&py, "pid").to_string();
    let py_argv = field(&py, "argv").to_string();
    assert!(
        py_argv.starts_with("/usr/bin/python3 -c import os"),
        "{py_argv}"
    );
    let sh = agent.wait_for("the shell", |e| {
        e["data_type"] == "59"
            && e["ppid"] == py_pid.as_str()
            && e["argv"]
                .as_str()
                .is_some_and(|a| a.starts_with("/bin/sh -c"))
    });
    assert_eq!(field(&sh, "ppid_argv"), py_argv);
    assert_eq!(field(&sh, "parent_exe"), realpath("/usr/bin/python3"));
    assert_eq!(field(&sh, "parent_exe"), field(&py, "exe"));
    assert_eq!(field(&sh, "pgid"), py_pid);
    assert_eq!(field(&sh, "pgid_argv"), py_argv);
    let sh_pid = field(&sh, "pid").to_string();
    let echo_argv = format!("/bin/echo {mark}-child");
    let echo = agent.wait_for("echo", |e| {
        e["data_type"] == "59" && e["argv"] == echo_argv.as_str()
    });
    assert_eq!(field(&echo, "ppid"), sh_pid);
    assert_eq!(field(&echo, "ppid_argv"), field(&sh, "argv"));
    assert_eq!(field(&echo, "parent_exe"), realpath("/bin/sh"));
    // Not its parent: found by pid, the latest exec seen with it.
    assert_eq!(field(&echo, "pgid"), py_pid);
    assert_eq!(field(&echo, "pgid_argv"), py_argv);
    let c = agent.stop();
    assert!(c.contains_key("parent_unknown"), "{c:?}");
}

#[test]
fn a_parent_gone_before_its_child_s_exec_is_looked_at_is_counted() {
    // The parent runs before the agent (its exec is not seen), forks a
    // child that execs, waits for it and exits, all while the agent is
    // stopped: when the agent looks, neither its cache nor /proc knows it.
    let mark = marker("orphan");
    let code = "import os, sys\n\
                sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
                sys.stdin.readline()\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    os.execv('/bin/sh', ['/bin/sh', '-c', ': ' + sys.argv[1]])\n\
                os.waitpid(pid, 0)\n";
    let mut parent = Command::new("/usr/bin/python3")
        .args(["-c", code, &mark])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");
    let agent = Agent::start(&[]);
    signal(&agent, libc::SIGSTOP);
    parent.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(parent.wait().unwrap().success());
    signal(&agent, libc::SIGCONT);
    let ev = agent.wait_for("the orphan's exec", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
    });
    assert_eq!(field(&ev, "ppid"), parent.id().to_string());
    assert_eq!(field(&ev, "ppid_argv"), "");
    assert_eq!(field(&ev, "parent_exe"), "");
    let c = agent.stop();
    assert!(c["parent_unknown"] >= 1, "{c:?}");
}

#[test]
fn a_child_forked_by_a_process_older_than_the_agent_names_its_program_once_gone() {
    // A daemon started before the agent (cron at boot) forks a worker that
    // never execs, reads /etc/shadow and exits before the agent looks at
    // its event: the worker's program is the daemon's, which the agent
    // learnt from /proc at start and the kernel side passed on at fork.
    let mark = marker("oldparent");
    let code = "import os, sys\n\
                sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
                sys.stdin.readline()\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    open('/etc/shadow', 'rb').close()\n    \
                    os._exit(0)\n\
                os.waitpid(pid, 0)\n\
                sys.stdout.write('%d\\n' % pid); sys.stdout.flush()\n\
                sys.stdin.readline()\n";
    let mut parent = Command::new("/usr/bin/python3")
        .args(["-c", code, &mark])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let agent = Agent::start(&[]);
    signal(&agent, libc::SIGSTOP);
    let mut stdin = parent.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let child = line.trim().to_string();
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "the worker still runs"
    );
    signal(&agent, libc::SIGCONT);
    let ev = agent.wait_for("the worker's read of /etc/shadow", |e| {
        e["data_type"] == "609" && e["pid"] == child.as_str() && e["file"] == "/etc/shadow"
    });
    assert_eq!(field(&ev, "ppid"), parent.id().to_string());
    assert_eq!(field(&ev, "exe"), realpath("/usr/bin/python3"), "{ev}");
    stdin.write_all(b"done\n").unwrap();
    assert!(parent.wait().unwrap().success());
    agent.stop();
}

/// Sets kernel.core_pattern, and puts the old one back when dropped.
fn wait_file(p: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never written", p.display());
}

#[test]
fn a_core_pattern_pipe_helper_is_a_user_mode_helper_exec() {
    let dir = PathBuf::from(format!("/tmp/kumh{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let helper = dir.join("h");
    let done = dir.join("done");
    // The helper takes the core on stdin, then runs a program of its own:
    // an ordinary exec whose parent (the helper) is not a kernel thread.
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n/bin/cat >/dev/null\n/bin/echo \"$1 $$\" >{}\n",
            done.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start(&[]);
    let crashed = {
        let _pattern = CorePattern::set(&format!("|{} %P", helper.display()));
        // The crash, in a child: a shell that allows cores kills itself
        // with SIGSEGV.
        let st = Command::new("/bin/sh")
            .args(["-c", "ulimit -c unlimited; echo $$; kill -SEGV $$"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st.status),
            Some(libc::SIGSEGV)
        );
        let crashed = String::from_utf8(st.stdout).unwrap().trim().to_string();
        let ran = wait_file(&done);
        let mut it = ran.split_whitespace();
        assert_eq!(it.next(), Some(crashed.as_str()));
        crashed
    };
    assert_ne!(std::fs::read_to_string(CORE_PATTERN).unwrap(), "");
    let h = helper.display().to_string();
    let umh_argv = format!("/bin/sh {h} {crashed}");
    let ev = agent.wait_for("the helper's 607", |e| {
        e["data_type"] == "607" && e["argv"] == umh_argv.as_str()
    });
    let pid = field(&ev, "pid").to_string();
    assert_eq!(field(&ev, "exe"), realpath("/bin/sh"));
    // core dumps call the helper with UMH_WAIT_EXEC: kthreadd runs it, and
    // that does not say whether the caller waited for the exec.
    assert_eq!(field(&ev, "wait"), "");
    assert_eq!(field(&ev, "umh_parent"), "kthreadd");
    assert_eq!(field(&ev, "ppid"), "2");
    assert_eq!(field(&ev, "tgid"), pid);
    assert_eq!(field(&ev, "uid"), "0");
    assert_eq!(field(&ev, "comm"), "h");
    assert_eq!(field(&ev, "pid_tree"), format!("2(kthreadd)->{pid}(h)"));
    assert_eq!(field(&ev, "filename"), h);
    assert_eq!(field(&ev, "res"), "0");
    assert!(!field(&ev, "hostname").is_empty());
    assert!(ev.get("container_id").is_some());
    // Its exec event too, whose parent is known to have no argv.
    let exec = agent.wait_for("the helper's 59", |e| {
        e["data_type"] == "59" && e["pid"] == pid.as_str() && e["argv"] == umh_argv.as_str()
    });
    assert_eq!(field(&exec, "ppid_argv"), "");
    // The helper's own child is an ordinary exec: 59 and not 607; and so
    // is the crashing shell's.
    let cat = agent.wait_for("the helper's cat", |e| {
        e["data_type"] == "59" && e["ppid"] == pid.as_str() && e["argv"] == "/bin/cat"
    });
    assert_eq!(field(&cat, "ppid_argv"), umh_argv);
    let cat_pid = field(&cat, "pid").to_string();
    agent.wait_for("the crashing shell's exec", |e| {
        e["data_type"] == "59" && e["pid"] == crashed.as_str()
    });
    let events = agent.events();
    let umh: Vec<_> = events.iter().filter(|e| e["data_type"] == "607").collect();
    assert!(
        !umh.iter()
            .any(|e| e["pid"] == cat_pid.as_str() || e["pid"] == crashed.as_str()),
        "an ordinary exec reported as a user-mode helper: {umh:?}"
    );
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_child_regaining_root_its_parent_lacks_is_611_and_a_setuid_exec_is_not() {
    let agent = Agent::start(&[]);
    let mark = marker("privesc");
    // Root drops to uid 65534 keeping saved uid 0, forks; the child takes
    // uid 0 back and execs: its credentials exceed its parent's.
    let code = "import os, sys\n\
                os.setresuid(65534, 65534, 0)\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    os.setresuid(0, 0, 0)\n    \
                    os.execv('/bin/true', ['/bin/true', sys.argv[1]])\n\
                os.waitpid(pid, 0)\n\
                print(os.getpid(), pid)\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", code, &mark])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let (ppid, cpid) = (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
    );
    let ev = agent.wait_for("the child's 611", |e| {
        e["data_type"] == "611" && e["pid"] == cpid.as_str()
    });
    assert_eq!(field(&ev, "p_pid"), ppid);
    assert_eq!(field(&ev, "ppid"), ppid);
    assert_eq!(field(&ev, "tgid"), cpid);
    assert_eq!(field(&ev, "p_cred"), "65534|65534|0|65534|0|0|0|0");
    assert_eq!(field(&ev, "c_cred"), "0|0|0|0|0|0|0|0");
    assert_eq!(field(&ev, "uid"), "0");
    assert_eq!(field(&ev, "euid"), "0");
    assert_eq!(field(&ev, "trigger"), "exec_start");
    assert_eq!(field(&ev, "exe"), realpath("/usr/bin/python3"));
    assert!(
        field(&ev, "pid_tree").ends_with(&format!("->{ppid}(python3)->{cpid}(python3)")),
        "{ev}"
    );
    assert_eq!(field(&ev, "user"), "root");
    assert!(!field(&ev, "hostname").is_empty());
    assert!(ev.get("container_id").is_some());
    // The same change is a 604 too.
    agent.wait_for("the child's 604", |e| {
        e["data_type"] == "604" && e["pid"] == cpid.as_str()
    });
    // The parent itself went down, never up: no 611.
    assert!(!agent
        .events()
        .iter()
        .any(|e| e["data_type"] == "611" && e["pid"] == ppid.as_str()));

    // Benign: uid 65534 (nothing saved) runs a setuid-root copy of id,
    // which the exec makes root.
    let suid = std::env::temp_dir().join(format!("kestrel-suid-{mark}"));
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let code = "import os, sys\n\
                os.setresuid(65534, 65534, 65534)\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    os.execv(sys.argv[1], [sys.argv[1], '-u'])\n\
                os.waitpid(pid, 0)\n\
                print(pid)\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", code, suid.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("0"),
        "the setuid copy did not run as root"
    );
    let id_pid = lines.next().unwrap().to_string();
    let p = suid.to_str().unwrap().to_string();
    agent.wait_for("the setuid exec's 604", |e| {
        e["data_type"] == "604" && e["pid"] == id_pid.as_str() && e["filename"] == p.as_str()
    });
    // An event after its exit, to know the agent has seen all of it.
    let after = marker("after");
    Command::new("/bin/true").arg(&after).status().unwrap();
    agent.wait_for("the marker", |e| {
        e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&after))
    });
    std::thread::sleep(Duration::from_millis(300));
    let wrong: Vec<_> = agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "611" && e["pid"] == id_pid.as_str())
        .collect();
    assert!(wrong.is_empty(), "a setuid exec reported as 611: {wrong:?}");
    agent.stop();
    std::fs::remove_file(&suid).unwrap();
}
