//! ssh logins (data_type 1001) from a real OpenSSH server on 127.0.0.1: a
//! wrong password, an invalid user and a key login. Through the agent: the
//! server's own log file rotated mid-test loses nothing, the systemd
//! journal is read, a restarted agent repeats nothing. And through
//! kestrel-logins alone: its log follower and parser on the same server's
//! log. Needs root, openssh-server and sshpass.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::sshd::{client_key, Sshd};
use crate::support::{field, marker, serial, Agent};
use kestrel_logins::{parse_message, FollowerOptions, LogFollower, Login, Stage, Status};
use serde_json::Value;

/// Eight digits that make this run's user names unique.
fn short_tag() -> String {
    marker("")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .rev()
        .take(8)
        .collect()
}

/// Agent flags for the login monitor, with everything else as tests run it.
fn login_args(auth_log: &Path, journal: &str, state: &Path) -> Vec<String> {
    vec![
        "--auth-log".into(),
        auth_log.display().to_string(),
        "--login-journal".into(),
        journal.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
}

fn logins(agent: &Agent, user: &str) -> Vec<Value> {
    agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "1001" && e["user"].as_str() == Some(user))
        .collect()
}

#[test]
fn ssh_logins_across_rotation_and_restart() {
    // Two agents, and logins while neither runs.
    let _serial = serial();
    let dir = std::env::temp_dir().join(marker("sshd"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let key = client_key(d);
    let log = d.join("sshd.log");
    let sshd = Sshd::start(d, Some(&log));
    let port = sshd.port();
    let state = d.join("state");
    let base = login_args(&log, "off", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let agent = Agent::start_to_file(&d.join("out1.json"), &base);

    let tag = short_tag();
    let (invalid, while_down) = (format!("kx{tag}"), format!("kd{tag}"));
    sshd.wrong_password("root");
    sshd.wrong_password(&invalid);
    let failed = agent.wait_for("the wrong root password", |e| {
        e["data_type"] == "1001"
            && e["user"] == "root"
            && e["status"] == "Failed"
            && e["type"] == "password"
    });
    assert_eq!(field(&failed, "user_exsit"), "true");
    assert_eq!(field(&failed, "from_ip"), "127.0.0.1");
    assert_eq!(field(&failed, "processor"), "ssh2");
    assert_ne!(field(&failed, "port"), "0");
    let inv = agent.wait_for("the invalid user", |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(invalid.as_str())
            && e["type"] == "password"
    });
    assert_eq!(field(&inv, "user_exsit"), "false");
    assert_eq!(field(&inv, "status"), "Failed");

    // Rotation as logrotate does it: rename, then make the writer reopen
    // (sshd re-executes itself on SIGHUP and opens its -E file anew).
    std::fs::rename(&log, d.join("sshd.log.1")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sshd.pid() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while !log.exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not reopen its log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sshd.key_login(&key);
    let ok = agent.wait_for("the key login after rotation", |e| {
        e["data_type"] == "1001" && e["user"] == "root" && e["status"] == "Success"
    });
    assert_eq!(field(&ok, "type"), "publickey");
    assert_eq!(field(&ok, "user_exsit"), "true");
    let before = logins(&agent, &invalid).len();
    agent.stop();

    // A login while the agent is down is reported by the next agent; none
    // of the earlier ones is reported again.
    sshd.wrong_password(&while_down);
    let agent = Agent::start_to_file(&d.join("out2.json"), &base);
    let down = agent.wait_for("the login made while the agent was down", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(while_down.as_str())
    });
    assert_eq!(field(&down, "user_exsit"), "false");
    // Give the follower a few more polls, then check for repeats.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        logins(&agent, &invalid).len(),
        0,
        "the restarted agent repeated old logins"
    );
    assert_eq!(
        logins(&agent, "root").len(),
        0,
        "the restarted agent repeated old logins"
    );
    assert!(
        before >= 2,
        "each invalid-user attempt gives several sshd lines"
    );
    agent.stop();
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

/// A systemd-journald for the test when the machine runs none (a fresh
/// Debian 12 container has the binary but no systemd), with /dev/log
/// pointing at it so sshd's syslog lines land in the journal.
struct Journald {
    child: Option<Child>,
    made_dev_log: bool,
}

impl Journald {
    fn ensure() -> Journald {
        let socket = Path::new("/run/systemd/journal/socket");
        let running = socket.exists()
            && std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(socket))
                .is_ok();
        let child = if running {
            None
        } else {
            std::fs::create_dir_all("/run/systemd/journal").unwrap();
            let c = Command::new("/lib/systemd/systemd-journald")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start systemd-journald");
            let start = Instant::now();
            while !socket.exists() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "journald did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(c)
        };
        let dev_log = Path::new("/dev/log");
        let made_dev_log = dev_log.symlink_metadata().is_err();
        if made_dev_log {
            std::os::unix::fs::symlink("/run/systemd/journal/dev-log", dev_log).unwrap();
        }
        Journald {
            child,
            made_dev_log,
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if self.made_dev_log {
            let _ = std::fs::remove_file("/dev/log");
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ssh_logins_from_the_journal_across_restart() {
    // Two agents, and a login while neither runs.
    let _serial = serial();
    let _journald = Journald::ensure();
    let dir = std::env::temp_dir().join(marker("sshd-journal"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    std::fs::write(d.join("authorized_keys"), b"").unwrap();
    let sshd = Sshd::start(d, None);
    let state = d.join("state");
    let missing = d.join("no-such-auth.log");
    let base = login_args(&missing, "on", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let tag = short_tag();
    let (first, second) = (format!("kj{tag}"), format!("kk{tag}"));

    let agent = Agent::start_to_file(&d.join("out1.json"), &base);
    assert!(
        agent.stderr().contains("reading the systemd journal"),
        "{}",
        agent.stderr()
    );
    sshd.wrong_password(&first);
    let ev = agent.wait_for("the invalid user, from the journal", |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(first.as_str())
            && e["type"] == "password"
    });
    assert_eq!(field(&ev, "user_exsit"), "false");
    assert_eq!(field(&ev, "status"), "Failed");
    assert_eq!(field(&ev, "from_ip"), "127.0.0.1");
    agent.stop();

    // While the agent is down; the next one starts after its cursor.
    sshd.wrong_password(&second);
    let agent = Agent::start_to_file(&d.join("out2.json"), &base);
    agent.wait_for("the login made while the agent was down", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(second.as_str())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        logins(&agent, &first).len(),
        0,
        "the restarted agent repeated old logins"
    );
    agent.stop();
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

/// kestrel-logins without the agent: `LogFollower` follows the server's
/// `sshd -E` file and `parse_message` reads its lines.
#[test]
fn real_sshd_logins() {
    // A daemon and logins with deadlines: not under another test's load.
    let _serial = serial();
    let dir = std::env::temp_dir().join(marker("sshd-follower"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let key = client_key(d);
    let log = d.join("sshd.log");
    let mut follower = LogFollower::open(
        &log,
        FollowerOptions {
            state_path: Some(d.join("state.json")),
            start_at_end: false,
            ..FollowerOptions::default()
        },
    )
    .unwrap();
    let sshd = Sshd::start(d, Some(&log));
    let port = sshd.port();

    sshd.wrong_password("root");
    sshd.wrong_password("nosuchuser");
    sshd.key_login(&key);

    let mut logins: Vec<Login> = Vec::new();
    let mut lines = Vec::new();
    let start = Instant::now();
    let found = |logins: &[Login]| {
        let failed_root = logins.iter().any(|l| {
            l.stage == Stage::Auth
                && l.status == Status::Failed
                && l.method == "password"
                && l.user == "root"
                && l.user_exists
        });
        let failed_invalid = logins.iter().any(|l| {
            l.stage == Stage::Auth
                && l.status == Status::Failed
                && l.user == "nosuchuser"
                && !l.user_exists
        });
        let invalid = logins
            .iter()
            .any(|l| l.stage == Stage::InvalidUser && l.user == "nosuchuser");
        let accepted = logins
            .iter()
            .any(|l| l.status == Status::Success && l.method == "publickey" && l.user == "root");
        failed_root && failed_invalid && invalid && accepted
    };
    while !found(&logins) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "expected logins not seen; lines: {lines:#?}\nlogins: {logins:#?}"
        );
        for line in follower.poll().unwrap() {
            // `sshd -E` writes bare messages (no syslog header).
            if let Some(l) = parse_message("sshd", None, &line) {
                logins.push(l);
            }
            lines.push(line);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for l in &logins {
        assert_eq!(l.from_ip.to_string(), "127.0.0.1");
        assert_ne!(l.port, 0);
        assert_ne!(l.port, port);
    }
    // A new follower from the saved state repeats nothing.
    drop(follower);
    let mut again = LogFollower::open(
        &log,
        FollowerOptions {
            state_path: Some(d.join("state.json")),
            start_at_end: false,
            ..FollowerOptions::default()
        },
    )
    .unwrap();
    let rest = again.poll().unwrap();
    assert!(
        rest.iter().all(|l| !lines.contains(l)),
        "repeated lines: {rest:?}"
    );
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

/// Waits until `path` has not changed size for a second; its size then.
fn quiet_size(path: &Path) -> u64 {
    let mut last = u64::MAX;
    let start = Instant::now();
    loop {
        let len = std::fs::metadata(path).unwrap().len();
        if len == last {
            return len;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} keeps growing",
            path.display()
        );
        last = len;
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn auth_log_truncated_and_refilled_past_the_saved_offset() {
    // The attack of issue #17 point 9: while the agent is down the log is
    // truncated in place (logrotate's copytruncate) and refilled past the
    // saved offset, first by a genuine login, then by an attacker whose
    // user name puts a forged message exactly at the old offset. Resuming
    // there lost the genuine logins and reported a password login as root
    // that never happened.
    let _serial = serial();
    let dir = std::env::temp_dir().join(marker("sshd-truncate"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let key = client_key(d);
    let log = d.join("sshd.log");
    let sshd = Sshd::start(d, Some(&log));
    let state = d.join("state");
    let base = login_args(&log, "off", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let tag = short_tag();

    // The forged text goes into the attacker's "Failed password for
    // invalid user NAME from IP port N ssh2", which ends as an accepted
    // login does. (sshd cuts names to 100 bytes there and takes a ':' as
    // the start of an auth style, so it is all the room there is.) A first
    // attempt measures where in a connection's lines that name starts
    // (the same every time for names of one length: ports have 5 digits);
    // a second one makes the log long enough for the refill to reach the
    // offset.
    let agent = Agent::start_to_file(&d.join("out1.json"), &base);
    let failed = "Failed password for invalid user ";
    let find = |name: &str| {
        let text = std::fs::read(&log).unwrap();
        let needle = format!("{failed}{name} ");
        text.windows(needle.len())
            .rposition(|w| w == needle.as_bytes())
            .map(|at| (at + failed.len()) as u64)
            .expect("sshd logged the failed password")
    };
    let probe = format!("kp{tag}{}", "p".repeat(50));
    let start = quiet_size(&log);
    sshd.wrong_password(&probe);
    quiet_size(&log);
    // Where the name starts, less the name's length.
    let name_base = find(&probe) - start - probe.len() as u64;
    let filler = format!("kq{tag}{}", "q".repeat(140));
    sshd.wrong_password(&filler);
    agent.wait_for("the login before the truncation", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(filler.as_str())
    });
    quiet_size(&log);
    std::thread::sleep(Duration::from_millis(500));
    agent.stop();
    let pos = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pos"))
        .expect("a saved position");
    let saved: Value = serde_json::from_slice(&std::fs::read(pos.path()).unwrap()).unwrap();
    let offset = saved["offset"].as_u64().unwrap();
    assert_eq!(offset, std::fs::metadata(&log).unwrap().len());

    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    // sshd appends (O_APPEND): the refill starts at 0.
    sshd.key_login(&key);
    let mut end = quiet_size(&log);
    // The name is PAD + "Accepted password for root" and the forged text
    // must start at the offset: offset = end + name_base + 26 + 2 * PAD.
    // More attempts (each 3 bytes per byte of name, plus a constant) until
    // the room left is even and small enough for a PAD.
    let tail = "Accepted password for root";
    let mut fillers = Vec::new();
    let mut per_attempt = 219;
    let pad = loop {
        let room = offset
            .checked_sub(end + name_base + tail.len() as u64)
            .unwrap_or_else(|| panic!("offset {offset}, refill at {end}: no room"));
        if room.is_multiple_of(2) && room <= 140 {
            break room / 2;
        }
        assert!(fillers.len() < 10, "room {room} left");
        // Names of 10 to 99 bytes (unique: they end with the tag), of the
        // parity that leaves an even room.
        let (room, c) = (room as i64, per_attempt as i64);
        let mut k = match (room - 70 - c) / 3 {
            k @ 10..=99 => k,
            k if k > 99 => ((room - 400 - c) / 3).clamp(10, 98),
            _ => panic!("room {room} left, an attempt takes {c} + 3 per byte"),
        };
        if (room - 3 * k - c) % 2 != 0 {
            k += if k < 99 { 1 } else { -1 };
        }
        let name = format!("{}{tag}", "r".repeat(k as usize - tag.len()));
        sshd.wrong_password(&name);
        let now = quiet_size(&log);
        per_attempt = now - end - 3 * k as u64;
        end = now;
        fillers.push(name);
    };
    let forged = format!("{}{tail}", "a".repeat(pad as usize));
    sshd.wrong_password(&forged);
    quiet_size(&log);
    let text = std::fs::read(&log).unwrap();
    assert_eq!(
        &text[offset as usize..offset as usize + tail.len()],
        tail.as_bytes(),
        "the forged text is not at the offset"
    );

    let agent = Agent::start_to_file(&d.join("out2.json"), &base);
    let ok = agent.wait_for("the genuine key login after the truncation", |e| {
        e["data_type"] == "1001" && e["user"] == "root" && e["type"] == "publickey"
    });
    assert_eq!(field(&ok, "status"), "Success");
    assert_eq!(field(&ok, "from_ip"), "127.0.0.1");
    agent.wait_for("the attacker's attempt, whole", |e| {
        e["data_type"] == "1001"
            && e["user"].as_str() == Some(forged.as_str())
            && e["user_exsit"] == "false"
    });
    std::thread::sleep(Duration::from_secs(1));
    for name in &fillers {
        assert!(
            !logins(&agent, name).is_empty(),
            "the attempt as {name} after the truncation was lost"
        );
    }
    let fake: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["data_type"] == "1001" && e["user"] == "root" && e["type"] == "password")
        .collect();
    let counters = agent.stop();
    assert!(fake.is_empty(), "forged login events: {fake:?}");
    assert_eq!(counters["login_truncations"], 1, "{counters:?}");
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn forged_journal_entry_from_a_process_named_sshd() {
    // The attack of issue #17 point 8: any user can run a program under the
    // name sshd (here a copy of logger, so journald records _COMM=sshd)
    // and log "Accepted password for root". The journal is read by _COMM;
    // only entries sshd itself sent may become login events.
    let _serial = serial();
    let _journald = Journald::ensure();
    let dir = std::env::temp_dir().join(marker("sshd-forge"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    std::fs::write(d.join("authorized_keys"), b"").unwrap();
    let sshd = Sshd::start(d, None);
    let state = d.join("state");
    let missing = d.join("no-such-auth.log");
    let base = login_args(&missing, "on", &state);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let tag = short_tag();
    let (first, second) = (format!("kf{tag}"), format!("kg{tag}"));
    // The forged login's port, unique to this run.
    let port = 1000 + tag.parse::<u32>().unwrap() % 60000;

    let agent = Agent::start_to_file(&d.join("out.json"), &base);
    sshd.wrong_password(&first);
    agent.wait_for("a genuine sshd message from the journal", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(first.as_str())
    });

    let fake_sshd = d.join("sshd");
    std::fs::copy("/usr/bin/logger", &fake_sshd).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&fake_sshd, std::fs::Permissions::from_mode(0o755)).unwrap();
    use std::os::unix::process::CommandExt;
    let mut forger = Command::new(&fake_sshd)
        .args(["-t", "sshd"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run the forger as nobody");
    {
        use std::io::Write;
        let mut stdin = forger.stdin.take().unwrap();
        writeln!(
            stdin,
            "Accepted password for root from 6.6.6.6 port {port} ssh2"
        )
        .unwrap();
        // Alive while journald looks the sender up (_COMM, _EXE).
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(forger.wait().unwrap().success());

    // A genuine message after the forged one: once it is seen, the forged
    // one was read too.
    sshd.wrong_password(&second);
    agent.wait_for("the genuine message after the forged one", |e| {
        e["data_type"] == "1001" && e["user"].as_str() == Some(second.as_str())
    });
    std::thread::sleep(Duration::from_millis(500));
    let fake: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["data_type"] == "1001"
                && e["from_ip"] == "6.6.6.6"
                && e["port"].as_str() == Some(port.to_string().as_str())
        })
        .collect();
    let counters = agent.stop();
    assert!(fake.is_empty(), "forged login events: {fake:?}");
    assert!(
        counters["login_journal_rejected"] >= 1,
        "the forged entry was not counted: {counters:?}"
    );
    drop(sshd);
    std::fs::remove_dir_all(d).unwrap();
}
