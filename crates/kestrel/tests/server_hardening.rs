//! `kestrel server` under attack from the host and the network: identity
//! takeover by enrollment, the admin token in URLs and cookies, a flood of
//! half-open TLS handshakes under a low descriptor limit, host names that
//! forge terminal and log lines, and an agent given the wrong CA. Each test
//! performs the attack against a real server process on 127.0.0.1.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::server::{browser, ctl, scratch, server_cmd, start_server, wait_until, Proc};
use crate::support::{kestrel, serial};
use kestrel_control::client::{AgentHandle, ClientConfig, Outcome};
use kestrel_control::pb::{Command as AgentCommand, Heartbeat};
use serde_json::{json, Value};

fn ctl_ok(data: &Path, http: u16, args: &[&str]) -> String {
    let out = ctl(data, http, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn agent_view(data: &Path, http: u16, id: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(&ctl_ok(data, http, &["agents", "--json"])).unwrap();
    v.as_array()?.iter().find(|a| a["id"] == id).cloned()
}

/// A simulated agent for the library client: heartbeats, no commands.
struct Sim {
    hostname: String,
    connected: AtomicBool,
    last_error: Mutex<String>,
}

impl AgentHandle for Sim {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            hostname: self.hostname.clone(),
            version: "sim".into(),
            heartbeat_secs: 1,
            ..Default::default()
        }
    }
    fn execute(&self, _: &AgentCommand) -> Outcome {
        Outcome::failed("simulated")
    }
    fn connection(&self, connected: bool, error: Option<&str>) {
        self.connected.store(connected, Ordering::SeqCst);
        if let Some(e) = error {
            *self.last_error.lock().unwrap() = e.to_string();
        }
    }
}

fn client_cfg(data: &Path, grpc: u16, token: &str, id: &str, host: &str) -> ClientConfig {
    ClientConfig {
        server: format!("127.0.0.1:{grpc}"),
        ca_pem: std::fs::read(data.join("ca.pem")).unwrap(),
        enroll_token: token.trim().to_string(),
        agent_id: id.to_string(),
        hostname: host.to_string(),
        secret_file: None,
        heartbeat: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
    }
}

/// One enrollment over a fresh connection: the secret, or the server's
/// refusal.
async fn enroll_once(cfg: &ClientConfig) -> Result<String, kestrel_control::client::Error> {
    let ch = kestrel_control::client::endpoint(cfg)?.connect().await?;
    kestrel_control::client::enroll(cfg, ch).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn code(r: &Result<String, kestrel_control::client::Error>) -> Option<tonic::Code> {
    match r {
        Err(kestrel_control::client::Error::Status(s)) => Some(s.code()),
        _ => None,
    }
}

#[test]
fn enrolled_identity_cannot_be_taken_over() {
    let _serial = serial();
    let (grpc, http) = (18460, 18461);
    let dir = scratch("takeover");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let fleet = std::fs::read_to_string(data.join("enroll.token")).unwrap();
    let rt = runtime();

    // The victim: enrolled, connected, heartbeating.
    let id = format!("victim-{}", std::process::id());
    let victim = Arc::new(Sim {
        hostname: "victim-host".into(),
        connected: AtomicBool::new(false),
        last_error: Mutex::new(String::new()),
    });
    rt.spawn(kestrel_control::client::run(
        client_cfg(&data, grpc, &fleet, &id, "victim-host"),
        victim.clone(),
    ));
    wait_until(30, || {
        agent_view(&data, http, &id).filter(|v| v["state"] == "online" && v["connected"] == true)
    })
    .unwrap_or_else(|| panic!("victim not online:\n{}", server.stderr()));

    // The attacker has the fleet token and the id (it is in every event):
    // refused, and the victim keeps its identity and its stream.
    let attack = client_cfg(&data, grpc, &fleet, &id, "attacker-host");
    let r = rt.block_on(enroll_once(&attack));
    assert_eq!(
        code(&r),
        Some(tonic::Code::AlreadyExists),
        "takeover not refused: {:?}",
        r.as_ref().map(|_| "a secret was issued")
    );
    std::thread::sleep(Duration::from_secs(2));
    let v = agent_view(&data, http, &id).unwrap();
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["hostname"], "victim-host", "{v}");
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("already enrolled"))
        .unwrap_or_else(|| panic!("takeover attempt not logged:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("attacker-host") && line.contains("127.0.0.1"),
        "{line}"
    );

    // Repeated attempts do not flood the log: a line a second at most,
    // with the count of those left out.
    for _ in 0..20 {
        let r = rt.block_on(enroll_once(&attack));
        assert_eq!(code(&r), Some(tonic::Code::AlreadyExists));
    }
    let lines = server.stderr().matches("already enrolled").count();
    assert!(lines <= 4, "{lines} takeover lines for 21 attempts");

    // An admin approves: the next enrollment of the id replaces the secret
    // and cuts the stream that used the old one.
    ctl_ok(&data, http, &["approve", &id]);
    let r = rt.block_on(enroll_once(&attack));
    assert!(r.is_ok(), "approved re-enrollment refused: {:?}", r.err());
    wait_until(10, || {
        agent_view(&data, http, &id).filter(|v| v["connected"] == false)
    })
    .expect("the old secret's stream was not cut");
    // The approval is used up.
    assert_eq!(
        code(&rt.block_on(enroll_once(&attack))),
        Some(tonic::Code::AlreadyExists)
    );
    // A revoked id cannot be approved.
    ctl_ok(&data, http, &["revoke", &id]);
    let out = ctl(&data, http, &["approve", &id]);
    assert!(!out.status.success(), "{out:?}");

    // Per-host tokens: each enrolls one agent, a revoked one none.
    let made = ctl(&data, http, &["token", "create", "web-1"]);
    assert!(made.status.success(), "{made:?}");
    let t1 = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert_eq!(t1.len(), 48, "{made:?}");
    let a1 = format!("host-a-{}", std::process::id());
    let a2 = format!("host-b-{}", std::process::id());
    assert!(rt
        .block_on(enroll_once(&client_cfg(&data, grpc, &t1, &a1, "web-1")))
        .is_ok());
    assert_eq!(
        code(&rt.block_on(enroll_once(&client_cfg(&data, grpc, &t1, &a2, "web-2")))),
        Some(tonic::Code::Unauthenticated),
        "a per-host token enrolled twice"
    );
    let t2 = ctl_ok(
        &data,
        http,
        &["token", "create", "web-2", "--valid-hours", "1"],
    );
    let list: Value =
        serde_json::from_str(&ctl_ok(&data, http, &["token", "list", "--json"])).unwrap();
    let t2_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["host"] == "web-2")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !list.to_string().contains(&t1) && !list.to_string().contains(t2.trim()),
        "the list shows tokens: {list}"
    );
    ctl_ok(&data, http, &["token", "revoke", &t2_id]);
    assert_eq!(
        code(&rt.block_on(enroll_once(&client_cfg(&data, grpc, &t2, &a2, "web-2")))),
        Some(tonic::Code::Unauthenticated),
        "a revoked token enrolled"
    );
    let table = ctl_ok(&data, http, &["token", "list"]);
    assert!(table.contains("used") && table.contains(&a1), "{table}");
    assert!(table.contains("revoked"), "{table}");
    drop(rt);
    server.stop();

    // Per-host tokens only: the fleet token is refused.
    let server = start_server(&data, grpc, http, &["--no-fleet-token"]);
    let rt = runtime();
    let a3 = format!("host-c-{}", std::process::id());
    assert_eq!(
        code(&rt.block_on(enroll_once(&client_cfg(&data, grpc, &fleet, &a3, "web-3")))),
        Some(tonic::Code::Unauthenticated),
        "the fleet token enrolled with --no-fleet-token"
    );
    drop(rt);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dashboard_signs_in_with_a_post_and_a_server_side_session() {
    let _serial = serial();
    let (grpc, http) = (18462, 18463);
    let dir = scratch("dashboard");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("https://127.0.0.1:{http}");
    let mut b = browser::Browser::launch(&dir.join("chromium-profile"));
    let status = |b: &mut browser::Browser| {
        b.eval("performance.getEntriesByType('navigation')[0].responseStatus")
    };
    let cookies = |b: &mut browser::Browser| -> Vec<Value> {
        let r = b.browser_call("Storage.getCookies", json!({}));
        r["cookies"].as_array().cloned().unwrap_or_default()
    };

    // The token in the URL signs nobody in, and sets no cookie.
    b.open(&format!("{base}/?token={token}"));
    assert_eq!(status(&mut b), json!(401), "{}", b.html());
    assert!(b.html().contains(r#"<form method="post" action="/login""#));
    assert!(!b.html().contains(r#"id="agents""#));
    assert!(cookies(&mut b).is_empty(), "{:?}", cookies(&mut b));
    b.screenshot("hardening-sign-in.png");

    // Nor does the token as a cookie, under the old name or the new.
    for name in ["kestrel_admin", "kestrel_session"] {
        b.set_cookie(name, &token, http);
        b.open(&format!("{base}/"));
        assert_eq!(status(&mut b), json!(401), "cookie {name}");
        b.browser_call("Storage.clearCookies", json!({}));
    }

    // A wrong token through the form: refused, logged.
    b.sign_in(&base, "not-the-token");
    assert!(b.html().contains(r#"id="error""#), "{}", b.html());
    assert_eq!(status(&mut b), json!(401));
    assert!(
        server.stderr().contains("dashboard sign-in refused"),
        "{}",
        server.stderr()
    );

    // The right one: a session id, not the token, in an HttpOnly, Secure,
    // SameSite=Strict cookie.
    b.sign_in(&base, &token);
    assert!(b.html().contains(r#"id="agents""#), "{}", b.html());
    b.screenshot("hardening-dashboard.png");
    let c = cookies(&mut b);
    assert_eq!(c.len(), 1, "{c:?}");
    let c = &c[0];
    assert_eq!(c["name"], "kestrel_session", "{c}");
    let sid = c["value"].as_str().unwrap().to_string();
    assert!(
        sid.len() == 64 && sid != token && !sid.contains(&token),
        "{c}"
    );
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    assert!(
        b.eval("document.cookie") == json!(""),
        "the session is visible to scripts"
    );

    // The API does not take the dashboard's session: bearer token only.
    // (The page's own policy forbids scripts to fetch: lifted for the test.)
    b.page_call("Page.setBypassCSP", json!({"enabled": true}));
    b.open(&format!("{base}/"));
    let api_status =
        b.eval_async("fetch('/api/summary', {credentials: 'include'}).then(r => r.status)");
    assert_eq!(api_status, json!(401));
    let out = ctl(&data, http, &["agents", "--json"]);
    assert!(out.status.success(), "{out:?}");

    // Sign out: the session ends on the server, not only in the browser.
    b.eval("window.__kestrel_old = true; document.getElementById('logout').click()");
    b.wait(
        "signed out",
        "window.__kestrel_old === undefined && document.querySelector('form#login') !== null",
        20,
    );
    b.screenshot("hardening-signed-out.png");
    assert!(cookies(&mut b).is_empty());
    b.set_cookie("kestrel_session", &sid, http);
    b.open(&format!("{base}/"));
    assert_eq!(status(&mut b), json!(401), "a closed session still works");
    drop(b);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP connection to `dst` from the local address `src` (any of
/// 127.0.0.0/8 is this host), so that a flood can come from many sources.
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own, with valid
    // sockaddr_in structures; the descriptor goes to a TcpStream at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        // Bounds connect(): a server that no longer accepts fills its
        // backlog, and a connect would wait minutes.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        let tvlen = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            tvlen,
        );
        let a = sa(src, 0);
        if libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = sa(*dst.ip(), dst.port());
        if libc::connect(fd, (&d as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn half_open_handshake_flood_does_not_blind_the_server() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    let (grpc, http) = (18464, 18465);
    let dir = scratch("flood");
    let data = dir.join("server");
    // The tester's setting: 600 descriptors, the server cannot raise it.
    let mut cmd = server_cmd(&data, grpc, http, &["--auth-timeout-secs", "3"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 600,
                rlim_max: 600,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Proc::spawn(&mut cmd, "kestrel server listening");
    assert!(
        server.stderr().contains("nofile=600"),
        "{}",
        server.stderr()
    );
    // This process holds the flood: raise its own limit.
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is valid to fill and pass back.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let fleet = std::fs::read_to_string(data.join("enroll.token")).unwrap();
    let target: SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();
    let cpu_before = (cpu_ticks(server.pid()), Instant::now());

    // 820 half-open handshakes: a TLS record header announcing a
    // ClientHello that never comes. 200 from one address, 620 spread over
    // 20 more.
    let mut flood: Vec<(TcpStream, Instant)> = Vec::new();
    let mut sources: Vec<Ipv4Addr> = vec![Ipv4Addr::new(127, 0, 0, 2); 200];
    for i in 0..620u32 {
        sources.push(Ipv4Addr::new(127, 0, 1, 1 + (i % 20) as u8));
    }
    let mut failed = 0;
    for src in sources {
        // A server that stopped accepting lets connects time out: the
        // flood holds what it got.
        let Ok(mut s) = connect_from(src, target) else {
            failed += 1;
            if failed == 5 {
                break;
            }
            continue;
        };
        use std::io::Write;
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        flood.push((s, Instant::now()));
    }
    println!(
        "flood: {} connections, {failed} connects failed",
        flood.len()
    );
    let flooded = Instant::now();

    // Meanwhile, a legitimate agent enrolls and the API answers.
    let rt = runtime();
    let id = format!("legit-{}", std::process::id());
    let cfg = client_cfg(&data, grpc, &fleet, &id, "legit-host");
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), enroll_once(&cfg)).await });
    assert!(
        matches!(r, Ok(Ok(_))),
        "enrollment during the flood failed: {r:?}\n{}",
        server.stderr()
    );
    let api_start = Instant::now();
    let out = ctl(&data, http, &["agents", "--json"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&id),
        "API during the flood: {out:?}"
    );
    assert!(api_start.elapsed() < Duration::from_secs(10));

    // Every flood connection is closed by the server within the timeout
    // (3 s) of being opened, plus slack for a busy host.
    for (s, _) in &flood {
        s.set_nonblocking(true).unwrap();
    }
    let mut closed_at: Vec<Option<Instant>> = vec![None; flood.len()];
    let deadline = flooded + Duration::from_secs(3 + 7);
    while Instant::now() < deadline && closed_at.iter().any(Option::is_none) {
        for (i, (s, _)) in flood.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => closed_at[i] = Some(Instant::now()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed_at[i] = Some(Instant::now()),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open,
        0,
        "{open} of {} half-open connections still open after {:?}",
        flood.len(),
        deadline.duration_since(flood[0].1)
    );
    let slowest = flood
        .iter()
        .zip(&closed_at)
        .map(|((_, opened), c)| c.unwrap().duration_since(*opened))
        .max()
        .unwrap();
    println!("slowest close: {slowest:?}");
    assert!(slowest < Duration::from_secs(3 + 7), "{slowest:?}");
    drop(flood);

    // Not spinning: well under a core over the flood, and no flood of
    // accept errors in the log.
    let (t0, at0) = cpu_before;
    let ticks = cpu_ticks(server.pid()) - t0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = ticks as f64 / hz / at0.elapsed().as_secs_f64();
    println!("server CPU during the flood: {:.0} %", cpu * 100.0);
    assert!(cpu < 0.5, "server CPU {:.0} % of a core", cpu * 100.0);
    let log = server.stderr();
    assert!(
        log.matches("Too many open files").count() <= 2,
        "accept errors not rate-limited:\n{log}"
    );
    assert!(
        log.contains("too many unauthenticated connections from this address"),
        "{log}"
    );

    // And the legitimate agent, which authenticated, still works.
    let victim = Arc::new(Sim {
        hostname: "after-flood".into(),
        connected: AtomicBool::new(false),
        last_error: Mutex::new(String::new()),
    });
    let id2 = format!("after-{}", std::process::id());
    rt.spawn(kestrel_control::client::run(
        client_cfg(&data, grpc, &fleet, &id2, "after-flood"),
        victim.clone(),
    ));
    wait_until(30, || victim.connected.load(Ordering::SeqCst).then_some(())).unwrap_or_else(|| {
        panic!(
            "agent cannot connect after the flood: {}",
            victim.last_error.lock().unwrap()
        )
    });
    drop(rt);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_names_cannot_forge_terminal_or_log_lines() {
    let _serial = serial();
    let (grpc, http) = (18466, 18467);
    let dir = scratch("escape");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let fleet = std::fs::read_to_string(data.join("enroll.token")).unwrap();
    let rt = runtime();

    // A host name that rewrites the terminal line and adds a fake row, and
    // would add a fake log line.
    let id = format!("forger-{}", std::process::id());
    let evil = "evil\r\x1b[2Kfake-agent  online\nINFO agent enrolled agent_id=admin\u{202e}";
    let r = rt.block_on(enroll_once(&client_cfg(&data, grpc, &fleet, &id, evil)));
    assert!(r.is_ok(), "{:?}", r.err());
    let out = ctl(&data, http, &["agents"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !table.contains(['\r', '\x1b', '\u{202e}']),
        "raw control characters in the table: {table:?}"
    );
    assert_eq!(table.lines().count(), 2, "a row was forged: {table:?}");
    assert!(table.contains(r"evil\u{d}\u{1b}[2Kfake-agent"), "{table}");
    let log = server.stderr();
    assert!(
        !log.lines().any(|l| l.starts_with("INFO agent enrolled")),
        "a log line was forged:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("agent enrolled") && l.contains(&id))
        .unwrap_or_else(|| panic!("no enrollment line:\n{log}"));
    assert!(line.contains(r"\r") && line.contains(r"\u{1b}"), "{line}");
    assert!(!line.contains('\r') && !line.contains('\x1b'), "{line:?}");
    drop(rt);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_given_the_wrong_ca_says_so() {
    let _serial = serial();
    let (grpc, http) = (18468, 18469);
    let dir = scratch("wrong-ca");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);

    // An agent given another CA says that the certificate did not verify
    // against it, not "transport error".
    let other = dir.join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    kestrel_server::tls::load_or_create(&other, None, &[]).unwrap();
    let agent = Proc::spawn(
        kestrel()
            .args(["agent", "--no-logins", "--inventory-interval-hours", "0"])
            .args(["--rootkit-scan-interval-hours", "0"])
            .args(["--server", &format!("127.0.0.1:{grpc}")])
            .arg("--ca-file")
            .arg(other.join("ca.pem"))
            .arg("--enroll-token-file")
            .arg(data.join("enroll.token"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--output")
            .arg(format!("file:{}", dir.join("events.jsonl").display())),
        "control: not connected",
    );
    let log = agent.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("control: not connected"))
        .unwrap();
    assert!(
        line.contains("certificate did not verify against the CA file given (--ca-file)"),
        "{line}"
    );
    // With rustls's reason (the other CA has the same name: BadSignature).
    assert!(line.contains("invalid peer certificate"), "{line}");
    agent.stop();
    // And so does `kestrel ctl`.
    let out = kestrel()
        .args(["ctl", "--api", &format!("https://127.0.0.1:{http}")])
        .arg("--ca-file")
        .arg(other.join("ca.pem"))
        .arg("--token-file")
        .arg(data.join("admin.token"))
        .arg("agents")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the server's certificate did not verify against the CA file (--ca-file)"),
        "{said}"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn start_agent(data: &Path, grpc: u16, dir: &Path, ready: &str) -> Proc {
    Proc::spawn(
        kestrel()
            .args(["agent", "--no-logins", "--inventory-interval-hours", "0"])
            .args(["--rootkit-scan-interval-hours", "0"])
            .args(["--server", &format!("127.0.0.1:{grpc}")])
            .args(["--heartbeat-secs", "1"])
            .arg("--ca-file")
            .arg(data.join("ca.pem"))
            .arg("--enroll-token-file")
            .arg(data.join("enroll.token"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--output")
            .arg(format!("file:{}", dir.join("events.jsonl").display())),
        ready,
    )
}

#[test]
fn an_agent_that_lost_its_secret_comes_back_once_approved() {
    let _serial = serial();
    let (grpc, http) = (18470, 18471);
    let dir = scratch("lost-secret");
    let data = dir.join("server");
    let server = start_server(&data, grpc, http, &[]);
    let agent = start_agent(&data, grpc, &dir, "control: connected");
    let id = std::fs::read_to_string(dir.join("state/agent-id")).unwrap();
    agent.stop();

    // Its secret is gone, its id stays: enrolling again is refused, and
    // the agent keeps collecting while it waits.
    std::fs::remove_file(dir.join("state").join(kestrel_control::SECRET_FILE)).unwrap();
    let agent = start_agent(&data, grpc, &dir, "already enrolled");
    assert!(
        !agent.stderr().contains("control: connected"),
        "{}",
        agent.stderr()
    );
    assert_eq!(agent_view(&data, http, &id).unwrap()["connected"], false);

    // An admin approves: it enrolls at its next attempt (30 s backoff at
    // most, plus jitter) and connects.
    ctl_ok(&data, http, &["approve", &id]);
    wait_until(60, || {
        agent_view(&data, http, &id).filter(|v| v["connected"] == true && v["state"] == "online")
    })
    .unwrap_or_else(|| panic!("not back after approval:\n{}", agent.stderr()));
    assert!(dir
        .join("state")
        .join(kestrel_control::SECRET_FILE)
        .exists());
    agent.stop();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
