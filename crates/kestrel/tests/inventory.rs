//! `kestrel inventory` on this machine: what the test creates shows up
//! with the right owner. Needs root (it adds a user and a cron file).

use std::process::Command;

use crate::support::{field, kestrel, marker, Agent};
use serde_json::Value;

fn inventory(what: &str) -> Vec<Value> {
    let out = kestrel().args(["inventory", what]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kestrel: inventory:"), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Cleanup(Vec<String>, Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for u in &self.0 {
            let _ = Command::new("userdel").arg(u).status();
        }
        for f in &self.1 {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn inventory_shows_what_the_test_created() {
    let tag = marker("inv")
        .replace('-', "")
        .chars()
        .rev()
        .take(10)
        .collect::<String>();
    let user = format!("kt{tag}");
    let cron = std::path::PathBuf::from(format!("/etc/cron.d/kestrel-test-{tag}"));
    let _cleanup = Cleanup(vec![user.clone()], vec![cron.clone()]);
    let st = Command::new("useradd")
        .args([
            "--no-create-home",
            "--shell",
            "/bin/sh",
            "--comment",
            "kestrel test",
            &user,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(&cron, format!("*/5 * * * * {user} /bin/echo {tag}\n")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();

    let events = inventory("all");
    let find = |dt: &str, pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| e["data_type"] == dt && pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {dt} event matching"))
    };
    let u = find("5052", &|e| e["username"].as_str() == Some(user.as_str()));
    assert_eq!(field(&u, "shell"), "/bin/sh");
    assert_eq!(field(&u, "info"), "kestrel test");
    assert_eq!(field(&u, "sudo"), "false");
    // useradd leaves the password locked.
    assert_eq!(field(&u, "password"), "locked");
    let root = find("5052", &|e| e["uid"] == "0");
    assert_eq!(field(&root, "username"), "root");

    let c = find("5053", &|e| {
        e["path"].as_str() == Some(cron.to_str().unwrap())
    });
    assert_eq!(field(&c, "user"), user);
    assert_eq!(field(&c, "schedule"), "*/5 * * * *");
    assert_eq!(field(&c, "command"), format!("/bin/echo {tag}"));

    let p = find("5051", &|e| e["sport"].as_str() == Some(port.as_str()));
    assert_eq!(field(&p, "pid"), std::process::id().to_string());
    assert_eq!(field(&p, "protocol"), "tcp");
    assert_eq!(field(&p, "user"), "root");
    assert_eq!(field(&p, "container_id"), "");
    assert_eq!(field(&p, "sip"), "127.0.0.1");
    assert_eq!(
        field(&p, "exe"),
        std::env::current_exe().unwrap().to_str().unwrap()
    );

    let bash = find("5055", &|e| e["name"] == "bash");
    let want = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "bash"])
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&want.stdout).to_string();
    let epoch = field(&bash, "epoch");
    let release = field(&bash, "release");
    let mut got = String::new();
    if !epoch.is_empty() {
        got.push_str(&format!("{epoch}:"));
    }
    got.push_str(field(&bash, "version"));
    if !release.is_empty() {
        got.push_str(&format!("-{release}"));
    }
    assert_eq!(got, want);
    drop(listener);
}

#[test]
fn inventory_kinds_can_be_asked_one_by_one() {
    for (what, dt) in [("users", "5052"), ("packages", "5055"), ("cron", "5053")] {
        let evs = inventory(what);
        assert!(!evs.is_empty(), "{what}");
        assert!(evs.iter().all(|e| e["data_type"] == dt), "{what}");
        assert!(evs
            .iter()
            .all(|e| e["hostname"].as_str().is_some_and(|h| !h.is_empty())));
    }
}

#[test]
fn the_agent_sends_an_inventory_at_start() {
    let agent = Agent::start(&["--inventory-interval-hours", "24"]);
    agent.wait_for("a package event", |e| {
        e["data_type"] == "5055" && e["name"] == "bash"
    });
    agent.wait_for("a user event", |e| {
        e["data_type"] == "5052" && e["uid"] == "0"
    });
    let c = agent.stop();
    assert!(c["userspace_events"] > 100, "{c:?}");
    // Alerts (data_type 9000) are events the agent adds.
    assert_eq!(
        c["received"] + c["userspace_events"] + c["alerts"],
        c["emitted"] + c["decode_errors"] + c["write_errors"]
    );
}
