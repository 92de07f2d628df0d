//! `kestrel server`, real agents, `kestrel ctl`, the dashboard and the
//! bench, end to end: real processes over real TLS connections, as root.
//! Heartbeats every second and an offline timeout of 3 s keep it quick.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::server::{browser, ctl, scratch, server_cmd, start_server, wait_until, Proc};
use crate::support::{kestrel, marker, serial};
use serde_json::Value;

/// A full agent (probes loaded) attached to the server.
fn start_agent(
    data: &Path,
    grpc: u16,
    state: &Path,
    out: &Path,
    extra: &[&str],
    ready: &str,
) -> Proc {
    Proc::spawn(
        kestrel()
            .args(["agent", "--no-logins", "--inventory-interval-hours", "0"])
            .args(["--server", &format!("127.0.0.1:{grpc}")])
            .arg("--ca-file")
            .arg(data.join("ca.pem"))
            .arg("--state-dir")
            .arg(state)
            .arg("--output")
            .arg(format!("file:{}", out.display()))
            .args(["--heartbeat-secs", "1"])
            .args(extra),
        ready,
    )
}

fn agents(data: &Path, http: u16) -> Vec<Value> {
    let out = ctl(data, http, &["agents", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn agent_state(data: &Path, http: u16, id: &str) -> Option<Value> {
    agents(data, http).into_iter().find(|a| a["id"] == id)
}

fn wait_state(data: &Path, http: u16, id: &str, state: &str, secs: u64) -> Value {
    wait_until(secs, || {
        agent_state(data, http, id).filter(|a| a["state"] == state)
    })
    .unwrap_or_else(|| {
        panic!(
            "agent {id} not {state} after {secs} s: {:?}",
            agent_state(data, http, id)
        )
    })
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn command(data: &Path, http: u16, id: &str, args: &[&str]) -> Value {
    let mut all = vec!["command", id];
    all.extend_from_slice(args);
    let out = ctl(data, http, &all);
    assert!(
        out.status.success(),
        "ctl {all:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn exec_marker(m: &str) {
    Command::new("/bin/sh")
        .args(["-c", &format!("/bin/true {m}")])
        .status()
        .unwrap();
}

fn has_exec(evs: &[Value], m: &str) -> bool {
    evs.iter()
        .any(|e| e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(m)))
}

#[test]
fn two_agents_commands_offline_and_server_restart() {
    let _serial = serial();
    let (grpc, http) = (18410, 18411);
    let dir = scratch("fleet");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    for f in ["ca.pem", "enroll.token", "admin.token"] {
        assert!(data.join(f).is_file(), "{f} not written");
    }
    let token = data.join("enroll.token");
    let tok = ["--enroll-token-file", token.to_str().unwrap()];
    let (out_a, out_b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    // The server may move A's output within the directory A's host allowed.
    let mut extra_a = tok.to_vec();
    extra_a.extend(["--output-allow", dir.to_str().unwrap()]);
    let a = start_agent(
        &data,
        grpc,
        &dir.join("state-a"),
        &out_a,
        &extra_a,
        "control: connected",
    );
    let host_b = format!("kestrel-test-b-{}", std::process::id());
    let mut extra_b = tok.to_vec();
    extra_b.extend(["--hostname", &host_b]);
    let start_b = || {
        start_agent(
            &data,
            grpc,
            &dir.join("state-b"),
            &out_b,
            &extra_b,
            "control: connected",
        )
    };
    let b = start_b();
    let id_a = std::fs::read_to_string(dir.join("state-a/agent-id")).unwrap();
    let id_b = std::fs::read_to_string(dir.join("state-b/agent-id")).unwrap();
    assert_ne!(id_a, id_b);

    // Both online, with what the issue asks for.
    let va = wait_state(&data, http, &id_a, "online", 30);
    let vb = wait_state(&data, http, &id_b, "online", 30);
    assert_eq!(vb["hostname"], host_b.as_str());
    assert_ne!(va["hostname"], host_b.as_str());
    for v in [&va, &vb] {
        assert!(v["last_heartbeat"].as_i64().unwrap() > 0, "{v}");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(!v["kernel"].as_str().unwrap().is_empty(), "{v}");
        assert!(!v["probes_active"].as_array().unwrap().is_empty(), "{v}");
    }
    let table = ctl(&data, http, &["agents"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&host_b));

    // inventory: the events go out through the agent's output, the result
    // counts them.
    let r = command(&data, http, &id_a, &["inventory"]);
    assert_eq!(r["status"], "ok", "{r}");
    assert!(
        r["result"].as_str().unwrap().contains("inventory events"),
        "{r}"
    );
    let evs = events(&out_a);
    assert!(
        evs.iter()
            .any(|e| e["data_type"] == "5052" && e["username"] == "root"),
        "no root user in the inventory"
    );
    assert!(
        !events(&out_b).iter().any(|e| e["data_type"] == "5052"),
        "the other agent ran it"
    );
    // "sent N inventory events (...)"
    let sent: u64 = r["result"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent > 0, "{r}");
    let detail = ctl(&data, http, &["agent", &id_a]);
    let detail: Value = serde_json::from_slice(&detail.stdout).unwrap();
    wait_until(10, || {
        let d: Value = serde_json::from_slice(&ctl(&data, http, &["agent", &id_a]).stdout).ok()?;
        (d["heartbeat"]["events_total"].as_u64()? >= sent).then_some(())
    })
    .unwrap_or_else(|| panic!("events_total not counted: {detail}"));
    assert_eq!(detail["commands"][0]["kind"], "inventory", "{detail}");

    // scan-rootkit: runs the real scan in the agent; this host is clean,
    // the result is the scan's summary with its per-table counts.
    let r = command(&data, http, &id_a, &["scan-rootkit"]);
    assert_eq!(r["status"], "ok", "{r}");
    let summary = r["result"].as_str().unwrap();
    assert!(summary.contains("x64_sys_call 0/"), "{r}");
    assert!(summary.contains("0 findings"), "{r}");

    // config: exec events off, then on again; an exec made while they
    // are off is not written, one made after is.
    let (m1, m2) = (marker("off"), marker("on"));
    let r = command(&data, http, &id_a, &["config", "disable=59"]);
    assert_eq!(r["status"], "ok", "{r}");
    exec_marker(&m1);
    // A connect (data_type 42, still enabled) after it: once it is
    // written, the exec before it went through the filter (the ring
    // buffer and the queue keep order).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // Connected again every few seconds: on a busy host the kernel may
    // drop one (and count it).
    let mut last = Instant::now() - Duration::from_secs(10);
    wait_until(90, || {
        if last.elapsed() > Duration::from_secs(3) {
            drop(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
            last = Instant::now();
        }
        events(&out_a)
            .iter()
            .any(|e| e["data_type"] == "42" && e["dport"].as_str() == Some(&port))
            .then_some(())
    })
    .expect("the connect after the disabled exec was not written");
    let r = command(&data, http, &id_a, &["config", "enable=59"]);
    assert_eq!(r["status"], "ok", "{r}");
    exec_marker(&m2);
    wait_until(60, || has_exec(&events(&out_a), &m2).then_some(()))
        .expect("the exec after enable=59 was not written");
    assert!(
        !has_exec(&events(&out_a), &m1),
        "an exec was written while disabled"
    );
    // Agent B was not told: it saw both.
    wait_until(60, || {
        let e = events(&out_b);
        (has_exec(&e, &m1) && has_exec(&e, &m2)).then_some(())
    })
    .expect("agent B missed an exec");
    // output: the agent flushes its file and writes to the new one.
    let out_a2 = dir.join("a2.jsonl");
    let arg = format!("output=file:{}", out_a2.display());
    let r = command(&data, http, &id_a, &["config", &arg]);
    assert_eq!(r["status"], "ok", "{r}");
    let m3 = marker("moved");
    exec_marker(&m3);
    wait_until(60, || has_exec(&events(&out_a2), &m3).then_some(()))
        .expect("the exec after the output change is not in the new file");
    assert!(
        !has_exec(&events(&out_a), &m3),
        "written to the old output too"
    );
    assert!(has_exec(&events(&out_a), &m2), "the old output lost events");

    // An unknown key fails with a clear message, and ctl says so.
    let out = ctl(&data, http, &["command", &id_a, "config", "colour=blue"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown config key"),
        "{out:?}"
    );

    // exclude_path / include_path: creations under the directory stop, in
    // the kernel, and resume; a path that is not a directory is refused.
    let quiet = dir.join("quiet");
    std::fs::create_dir_all(&quiet).unwrap();
    let (hidden, seen) = (quiet.join("hidden"), quiet.join("seen"));
    let arg = format!("exclude_path={}", quiet.display());
    let r = command(&data, http, &id_a, &["config", &arg]);
    assert_eq!(r["status"], "ok", "{r}");
    std::fs::write(&hidden, b"x").unwrap();
    let arg = format!("include_path={}", quiet.display());
    let r = command(&data, http, &id_a, &["config", &arg]);
    assert_eq!(r["status"], "ok", "{r}");
    std::fs::write(&seen, b"x").unwrap();
    let created = |p: &Path| {
        events(&out_a2)
            .iter()
            .any(|e| e["data_type"] == "602" && e["file_path"].as_str() == p.to_str())
    };
    // Created files leave in creation order: once the second is written,
    // the first would have been.
    wait_until(60, || created(&seen).then_some(()))
        .expect("a creation after include_path was not written");
    assert!(
        !created(&hidden),
        "a creation under an excluded directory was written"
    );
    let out = ctl(
        &data,
        http,
        &["command", &id_a, "config", "exclude_path=/nonexistent/dir"],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("/nonexistent/dir") && said.contains("No such file"),
        "{out:?}"
    );

    // The dashboard in headless Chromium lists both agents.
    dashboard(
        &data,
        http,
        &[&va["hostname"].as_str().unwrap().to_string(), &host_b],
    );

    // The server restarts: the agents come back by themselves.
    server.stop();
    let server = start_server(&data, grpc, http, &[]);
    let before = va["last_heartbeat"].as_i64().unwrap();
    for id in [&id_a, &id_b] {
        wait_until(60, || {
            agent_state(&data, http, id).filter(|v| {
                v["connected"] == true && v["last_heartbeat"].as_i64().unwrap_or(0) > before
            })
        })
        .unwrap_or_else(|| panic!("agent {id} did not reconnect:\n{}", a.stderr()));
    }
    // Still commanded after the reconnection.
    let r = command(
        &data,
        http,
        &id_b,
        &["config", "exclude_comm=kestrel-nothing"],
    );
    assert_eq!(r["status"], "ok", "{r}");

    // restart: acknowledged, then the agent re-executes itself (same
    // pid, new process image) and comes back with a new uptime.
    let up = agent_state(&data, http, &id_b).unwrap()["uptime_secs"]
        .as_u64()
        .unwrap();
    let r = command(&data, http, &id_b, &["restart"]);
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["result"].as_str().unwrap().contains("restarting"), "{r}");
    wait_until(90, || {
        (b.stderr().matches("kestrel agent started").count() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("agent B did not restart:\n{}", b.stderr()));
    wait_until(60, || {
        agent_state(&data, http, &id_b).filter(|v| {
            v["connected"] == true && v["uptime_secs"].as_u64().unwrap_or(u64::MAX) < up
        })
    })
    .unwrap_or_else(|| panic!("agent B not back after restart:\n{}", b.stderr()));

    // Agent B stops: offline after the timeout, A stays online.
    b.stop();
    wait_state(&data, http, &id_b, "offline", 30);
    assert_eq!(agent_state(&data, http, &id_a).unwrap()["state"], "online");

    // Commands queued while B is away, more than its stream's queue holds
    // (64): when it is back, every one is delivered, and none twice.
    let mut queued = Vec::new();
    for i in 0..100 {
        let arg = format!("exclude_comm=kestrel-queued-{i}");
        let out = ctl(
            &data,
            http,
            &["command", &id_b, "config", &arg, "--timeout-secs", "0"],
        );
        assert!(out.status.success(), "{out:?}");
        // "command ID queued"
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        queued.push(line.split_whitespace().nth(1).unwrap().to_string());
    }
    // Back again, to the same state directory.
    let b = start_b();
    for cid in &queued {
        wait_until(60, || {
            let out = ctl(&data, http, &["status", cid]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["status"] == "ok").then_some(())
        })
        .unwrap_or_else(|| {
            let out = ctl(&data, http, &["status", cid]);
            panic!(
                "queued command {cid} not done: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                b.stderr()
            )
        });
    }
    assert_eq!(
        b.stderr().matches("control: command received").count(),
        queued.len(),
        "{}",
        b.stderr()
    );
    b.stop();
    a.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Signs in to the dashboard in headless Chromium through its form,
/// checks it lists `hosts` and that an agent's page opens, and saves a
/// screenshot of each page as a test artifact.
fn dashboard(data: &Path, http: u16, hosts: &[&String]) {
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let base = format!("https://127.0.0.1:{http}");
    let mut b = browser::Browser::launch(&data.join("chromium-profile"));
    b.open(&format!("{base}/"));
    b.screenshot("dashboard-sign-in.png");
    b.sign_in(&base, &token);
    let dom = b.html();
    for h in hosts {
        assert!(
            dom.contains(h.as_str()),
            "dashboard does not list {h}:\n{dom}"
        );
    }
    assert!(
        dom.contains(r#"<b id="online">2</b>"#),
        "dashboard counts:\n{dom}"
    );
    b.screenshot("dashboard.png");
    let href = b.eval("document.querySelector('tr.agent a').getAttribute('href')");
    b.open(&format!("{base}{}", href.as_str().unwrap()));
    let dom = b.html();
    assert!(dom.contains("<h2>Probes</h2>"), "agent page:\n{dom}");
    // Each probe's backend and why, from the heartbeat: on this host the
    // syscall hooks are on tracepoints because fentry is refused.
    assert!(
        dom.contains("<th>backend</th>")
            && dom.contains(
                "<td>tracepoint/syscalls/sys_exit_openat</td><td title=\"fentry refused: EPERM"
            ),
        "agent page probes:\n{dom}"
    );
    b.screenshot("dashboard-agent.png");
}

#[test]
fn bad_token_unauthenticated_api_and_revocation() {
    let _serial = serial();
    let (grpc, http) = (18420, 18421);
    let dir = scratch("security");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);

    // The API without the admin token, or with a wrong one: 401.
    let ca = std::fs::read(data.join("ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for token in ["", "not-the-token"] {
        let c = kestrel_server::api_client::ApiClient::new(
            &format!("https://127.0.0.1:{http}"),
            &ca,
            token.into(),
        )
        .unwrap();
        for path in ["/api/agents", "/api/summary"] {
            let (status, _) = rt.block_on(c.call("GET", path, None)).unwrap();
            assert_eq!(status, 401, "{path} with token {token:?}");
        }
    }
    std::fs::write(dir.join("wrong.token"), "wrong\n").unwrap();
    let out = kestrel()
        .args([
            "ctl",
            "--api",
            &format!("https://127.0.0.1:{http}"),
            "--ca-file",
        ])
        .arg(data.join("ca.pem"))
        .arg("--token-file")
        .arg(dir.join("wrong.token"))
        .arg("agents")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    // An agent with a wrong enrollment token is refused, and keeps
    // collecting.
    let bad = start_agent(
        &data,
        grpc,
        &dir.join("state-bad"),
        &dir.join("bad.jsonl"),
        &[
            "--enroll-token-file",
            dir.join("wrong.token").to_str().unwrap(),
        ],
        "bad enrollment token",
    );
    assert!(agents(&data, http).is_empty(), "a refused agent is listed");
    let m = marker("bad");
    exec_marker(&m);
    wait_until(60, || {
        has_exec(&events(&dir.join("bad.jsonl")), &m).then_some(())
    })
    .expect("the refused agent stopped collecting");
    bad.stop();

    // A good agent, revoked: its stream is cut, it cannot come back, and
    // it keeps collecting.
    let token = data.join("enroll.token");
    let good = start_agent(
        &data,
        grpc,
        &dir.join("state-good"),
        &dir.join("good.jsonl"),
        &["--enroll-token-file", token.to_str().unwrap()],
        "control: connected",
    );
    let id = std::fs::read_to_string(dir.join("state-good/agent-id")).unwrap();
    wait_state(&data, http, &id, "online", 30);
    let out = ctl(&data, http, &["revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let v = wait_state(&data, http, &id, "revoked", 10);
    assert_eq!(v["connected"], false);
    wait_until(20, || {
        good.stderr()
            .contains("this agent was revoked")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agent not cut off:\n{}", good.stderr()));
    // Its reconnection attempts are refused too.
    let refusals = |s: &str| s.matches("this agent was revoked").count();
    wait_until(60, || (refusals(&good.stderr()) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no second refusal:\n{}", good.stderr()));
    assert_eq!(agent_state(&data, http, &id).unwrap()["connected"], false);
    // Commands to a revoked agent are refused.
    let out = ctl(&data, http, &["command", &id, "inventory"]);
    assert!(!out.status.success());
    let m = marker("revoked");
    exec_marker(&m);
    wait_until(60, || {
        has_exec(&events(&dir.join("good.jsonl")), &m).then_some(())
    })
    .expect("the revoked agent stopped collecting");
    good.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_thousand_agents() {
    let _serial = serial();
    let out = kestrel()
        .args([
            "bench",
            "server",
            "--agents",
            "1000",
            "--listen",
            "127.0.0.1:18430",
            "--http",
            "127.0.0.1:18431",
            "--heartbeat-secs",
            "5",
            "--measure-secs",
            "3",
            "--timeout-secs",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1000 agents online"), "{stdout}");
    assert!(
        stdout.contains("delivered to 1000 agents and acknowledged by 1000"),
        "{stdout}"
    );
}

#[test]
fn postgres_storage() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    let bin = Path::new("/usr/lib/postgresql/15/bin");
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL 15 is not installed (scripts/install-deps --test installs it)"
    );
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let dir = scratch("pg");
    let pgdata = dir.join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&pgdata, Some(uid), Some(gid)).unwrap();
    let out = Command::new(bin.join("initdb"))
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
        .arg(&pgdata)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {out:?}");
    let pg = Proc::spawn(
        Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&pgdata)
            .args(["-p", "18450", "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&dir)
            .uid(uid)
            .gid(gid),
        "database system is ready to accept connections",
    );

    let (grpc, http) = (18451, 18452);
    let data = dir.join("server");
    let url = "postgres://postgres@127.0.0.1:18450/postgres";
    let postgres_server = || server_cmd(&data, grpc, http, &["--db", url]);
    let server = Proc::spawn(&mut postgres_server(), "kestrel server listening");
    assert!(
        server.stderr().contains("database migrated"),
        "{}",
        server.stderr()
    );
    // 20 simulated agents enroll, heartbeat and acknowledge a command,
    // all through PostgreSQL.
    let out = kestrel()
        .args([
            "bench",
            "server",
            "--agents",
            "20",
            "--heartbeat-secs",
            "1",
            "--timeout-secs",
            "60",
        ])
        .args(["--server", &format!("127.0.0.1:{grpc}")])
        .args(["--api", &format!("https://127.0.0.1:{http}")])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("acknowledged by 20"), "{stdout}");
    assert!(
        !data.join("kestrel.db").exists(),
        "SQLite used instead of PostgreSQL"
    );
    // A new server process finds them all in the database.
    server.stop();
    let server = Proc::spawn(&mut postgres_server(), "kestrel server listening");
    assert!(
        !server.stderr().contains("database migrated"),
        "migrated twice"
    );
    let listed = agents(&data, http);
    assert_eq!(listed.len(), 20, "{listed:?}");
    assert!(listed
        .iter()
        .all(|a| a["last_heartbeat"].as_i64().unwrap_or(0) > 0));
    server.stop();
    pg.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
