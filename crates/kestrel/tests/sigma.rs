//! Sigma rules (`--sigma DIR`) end to end: rules written for these tests,
//! loaded by the real agent and fired by behaviour performed for real
//! (process creation, file events of three kinds, a connection to a name
//! the process looked up, a correlation), benign variants quiet; `kestrel
//! rules check --sigma` and `rules test --sigma`; a Sigma file that does
//! not parse stops the agent, naming file and line.

use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{field, kestrel, marker, Agent};
use serde_json::Value;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(marker(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test's Sigma rules, `MARK` replaced by the run's marker; in a
/// subdirectory, as Sigma trees keep them.
fn write_rules(dir: &Path, mark: &str) {
    let sub = dir.join("linux").join("process_creation");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("decode_to_shell.yml"), DECODE_TO_SHELL).unwrap();
    let files = dir.join("linux").join("file_event");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(
        files.join("dropped_script.yml"),
        DROPPED_SCRIPT.replace("MARK", mark),
    )
    .unwrap();
    let net = dir.join("linux").join("network_connection");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(
        net.join("lookup_then_connect.yml"),
        LOOKUP.replace("MARK", mark),
    )
    .unwrap();
    std::fs::write(dir.join("recon_pair.yml"), RECON.replace("MARK", mark)).unwrap();
    // Served by nobody: reported, not loaded, and the agent still starts.
    std::fs::write(dir.join("windows.yml"), WINDOWS).unwrap();
}

const DECODE_TO_SHELL: &str = "
title: Base64 text decoded into a shell
id: 0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d01
status: test
description: >
  base64 decodes into a pipeline whose last stage is a shell: a payload
  smuggled past command-line inspection.
author: Kestrel tests
logsource:
  product: linux
  category: process_creation
detection:
  decoder:
    Image|endswith: /base64
    CommandLine|contains:
    - ' -d'
    - ' --decode'
  into_shell:
    ParentCommandLine|re: '\\|\\s*(/usr)?(/bin/)?(ba|da|z|k)?sh\\b'
  condition: decoder and into_shell
falsepositives:
- Install scripts that ship their payload encoded
level: high
tags:
- attack.execution
- attack.t1059.004
- attack.defense-evasion
- attack.t1027
";

const DROPPED_SCRIPT: &str = "
title: Script dropped under a marked name
id: 0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d02
description: A shell script appears under a name this test marks, however it got there.
logsource:
  product: linux
  category: file_event
detection:
  sel:
    TargetFilename|contains: '/MARK-drop'
    TargetFilename|endswith: '.sh'
  condition: sel
level: medium
tags: [attack.persistence, attack.t1546.004]
";

const LOOKUP: &str = "
title: Connection to a host under the test's domain
id: 0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d03
description: The process connected to an address its DNS lookup of a marked domain returned.
logsource:
  product: linux
  category: network_connection
detection:
  sel:
    Initiated: 'true'
    DestinationHostname|endswith: '.MARK.example'
  condition: sel
level: low
tags: [attack.command-and-control, attack.t1071]
";

const RECON: &str = "
title: Recon step one
id: recon-one
name: recon_one
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /true, CommandLine|contains: 'MARK-one'}
  condition: sel
---
title: Recon step two
id: recon-two
name: recon_two
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /true, CommandLine|contains: 'MARK-two'}
  condition: sel
---
title: Recon pair from one shell
id: 0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d04
correlation:
  type: temporal_ordered
  rules: [recon_one, recon_two]
  group-by: [ParentProcessId]
  timespan: 30s
  condition: {gte: 2}
level: critical
tags: [attack.discovery, attack.t1082]
";

const WINDOWS: &str = "
title: A Windows rule
id: 0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d05
logsource: {product: windows, category: process_creation}
detection:
  sel: {Image|endswith: '\\whoami.exe'}
  condition: sel
";

fn sigma_alert(agent: &Agent, rule: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let a = agent.wait_for(what, |e| {
        e["data_type"] == "9000" && e["rule_id"] == rule && pred(e)
    });
    assert_eq!(field(&a, "source"), "sigma");
    assert!(a.as_object().unwrap().values().all(Value::is_string), "{a}");
    a
}

fn trigger(agent: &Agent, alert: &Value) -> Vec<Value> {
    let evs = agent.events();
    field(alert, "trigger_event_ids")
        .split(',')
        .map(|id| {
            evs.iter()
                .find(|e| e["event_id"].as_str() == Some(id))
                .unwrap_or_else(|| panic!("trigger {id} not in the stream"))
                .clone()
        })
        .collect()
}

fn sh(shell: &str, script: &str) {
    let st = Command::new(shell)
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{shell} -c {script}");
}

/// Asks `name` of the responder (which answers `addr`), from this process.
fn lookup(resp: &UdpSocket, name: &str, addr: IpAddr) {
    use kestrel_decode::dns::build;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let qtype = if addr.is_ipv4() { 1 } else { 28 };
    client
        .send_to(
            &build::message(3, 0x0100, name, qtype),
            resp.local_addr().unwrap(),
        )
        .unwrap();
    let mut buf = [0u8; 512];
    let (_, peer) = resp.recv_from(&mut buf).unwrap();
    resp.send_to(
        &build::with_answers(build::message(3, 0x8180, name, qtype), &[Some(addr)]),
        peer,
    )
    .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.recv_from(&mut buf).unwrap();
}

#[test]
fn sigma_rules_load_and_fire_on_real_activity() {
    let d = scratch("sigma");
    let m = marker("sg");
    let rules = d.join("rules");
    write_rules(&rules, &m);
    let rules_arg = rules.display().to_string();
    let agent = Agent::start(&["--alert-suppress-secs", "0", "--sigma", &rules_arg]);
    assert!(
        agent
            .stderr()
            .contains("rule not loaded: Kestrel cannot serve it")
            && agent
                .stderr()
                .contains("0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d05"),
        "the Windows rule is not reported:\n{}",
        agent.stderr()
    );

    // Process creation: decoded into a shell, by several shells and
    // spellings; quiet when the decoded text goes to a file.
    let payload = "ZWNobyBoaQo="; // "echo hi"
    let decode = "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d01";
    for (i, (shell, script)) in [
        ("sh", format!("echo {payload} | base64 -d | sh # {m}-0")),
        (
            "bash",
            format!("echo {payload}|base64 --decode|bash # {m}-1"),
        ),
        (
            "dash",
            format!("printf %s {payload} | base64 -di | /bin/sh -s # {m}-2"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        sh(shell, &script);
        let a = sigma_alert(&agent, decode, "the decode-to-shell alert", |e| {
            trigger(&agent, e).iter().any(|t| {
                t["ppid_argv"]
                    .as_str()
                    .is_some_and(|p| p.contains(&format!("{m}-{i}")))
            })
        });
        assert_eq!(field(&a, "rule_name"), "Base64 text decoded into a shell");
        assert_eq!(field(&a, "severity"), "high");
        assert_eq!(field(&a, "mitre_technique"), "T1059.004,T1027");
        assert!(field(&a, "description").contains("Known false positives: Install scripts"));
        assert!(field(&a, "exe").ends_with("/base64"), "{a}");
    }
    let out = d.join("decoded.txt");
    sh(
        "sh",
        &format!(
            "echo {payload} | base64 -d > {} # {m}-benign",
            out.display()
        ),
    );

    // File events: created by a redirection (602), moved into the name
    // (82), and written where paths are watched (608, beside its 602).
    let dropped = "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d02";
    let created = d.join(format!("{m}-drop-a.sh"));
    sh("sh", &format!("echo true > {}", created.display()));
    let staged = d.join("staged.txt");
    std::fs::write(&staged, "true\n").unwrap();
    let renamed = d.join(format!("{m}-drop-b.sh"));
    std::fs::rename(&staged, &renamed).unwrap();
    let profile = PathBuf::from(format!("/etc/profile.d/{m}-drop-c.sh"));
    std::fs::write(&profile, "# kestrel test\n").unwrap();
    std::fs::write(&profile, "# written again\n").unwrap();
    for (path, kinds) in [
        (&created, &["602"][..]),
        (&renamed, &["82"][..]),
        (&profile, &["602", "608"][..]),
    ] {
        let p = path.display().to_string();
        for kind in kinds {
            sigma_alert(
                &agent,
                dropped,
                &format!("the drop alert for {p} ({kind})"),
                |e| {
                    trigger(&agent, e).iter().any(|t| {
                        t["data_type"] == *kind
                            && [&t["file_path"], &t["file"], &t["new_name"]]
                                .iter()
                                .any(|v| v.as_str() == Some(p.as_str()))
                    })
                },
            );
        }
    }
    // The old name of a rename is not a file dropped.
    let away = d.join("renamed-away.txt");
    std::fs::rename(&renamed, &away).unwrap();
    let _ = std::fs::remove_file(&profile);

    // Network: this process looks names up (A and AAAA) and connects to
    // the answers; a child connecting to the same address without a
    // lookup of its own is quiet.
    let net = "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d03";
    let resp = UdpSocket::bind("127.0.0.13:53").unwrap();
    resp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    for (host, l) in [("api", &l4), ("cdn", &l6)] {
        let name = format!("{host}.{m}.example");
        let addr = l.local_addr().unwrap();
        lookup(&resp, &name, addr.ip());
        let c = TcpStream::connect(addr).unwrap();
        let a = sigma_alert(&agent, net, &format!("the connection to {name}"), |e| {
            trigger(&agent, e)
                .iter()
                .any(|t| t["dip_hostname"].as_str() == Some(name.as_str()))
        });
        let t = &trigger(&agent, &a)[0];
        assert_eq!(t["data_type"], "42");
        assert_eq!(t["dport"], addr.port().to_string().as_str());
        assert_eq!(field(&a, "mitre_technique"), "T1071");
        drop(c);
    }
    let port4 = l4.local_addr().unwrap().port();
    let st = Command::new("perl")
        .args([
            "-e",
            &format!(
                "use Socket; socket(S,PF_INET,SOCK_STREAM,0); connect(S,pack_sockaddr_in({port4},inet_aton('127.0.0.1'))) or die; # {m}-nolookup"
            ),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let child_connect = agent.wait_for("the child's connect", |e| {
        e["data_type"] == "42"
            && e["dport"] == port4.to_string().as_str()
            && e["exe"].as_str().is_some_and(|x| x.contains("perl"))
    });
    assert_eq!(field(&child_connect, "dip_hostname"), "");

    // A correlation: step one then step two from the same shell; the
    // steps alone raise nothing (generate: false), nor does step two
    // from another shell.
    let pair = "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d04";
    // `; :` keeps the shell from exec'ing its last command in its own
    // process (dash does), which would give that step another parent.
    sh("sh", &format!("/bin/true {m}-one; /bin/true {m}-two; :"));
    let a = sigma_alert(&agent, pair, "the recon pair", |_| true);
    assert_eq!(field(&a, "severity"), "critical");
    let t = trigger(&agent, &a);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["ppid"], t[1]["ppid"]);
    sh("sh", &format!("/bin/true {m}-one; :"));
    sh("sh", &format!("/bin/true {m}-two; :"));

    // Then the quiet checks, after the last variant had time to pass.
    std::thread::sleep(Duration::from_millis(2000));
    let evs = agent.events();
    let alerts_of = |rule: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["data_type"] == "9000" && e["rule_id"] == rule)
            .collect()
    };
    for a in alerts_of(decode) {
        assert!(
            !trigger(&agent, a).iter().any(|t| t["ppid_argv"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("{m}-benign")))),
            "decoding into a file alerted: {a}"
        );
    }
    let away = away.display().to_string();
    for a in alerts_of(dropped) {
        assert!(
            !trigger(&agent, a)
                .iter()
                .any(|t| t["new_name"].as_str() == Some(away.as_str())),
            "a rename away alerted: {a}"
        );
    }
    assert_eq!(alerts_of(pair).len(), 1, "the pair alerted again");
    assert!(alerts_of("recon-one").is_empty() && alerts_of("recon-two").is_empty());
    let c = agent.stop();
    assert_eq!(c["rules_unsupported"], 1);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn rules_check_and_test_with_sigma_and_a_bad_file() {
    let d = scratch("sigmacli");
    let m = marker("sc");
    let rules = d.join("rules");
    write_rules(&rules, &m);
    let out = kestrel()
        .args(["rules", "check", "--no-builtin-rules", "--sigma"])
        .arg(&rules)
        .output()
        .unwrap();
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
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["rule_id"] == id)
            .unwrap_or_else(|| panic!("{id} not reported: {lines:?}"))
    };
    for l in &lines {
        assert_eq!(l["source"], "sigma", "{l}");
    }
    let win = by_id("0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d05");
    assert_eq!(win["status"], "unsupported");
    assert!(win["reason"].as_str().unwrap().contains("windows"), "{win}");
    for id in [
        "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d01",
        "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d02",
        "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d03",
        "0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d04",
    ] {
        assert_eq!(by_id(id)["status"], "loaded", "{}", by_id(id));
        assert_eq!(by_id(id)["reason"], "");
    }
    assert_eq!(by_id("recon-one")["status"], "loaded");
    assert!(by_id("recon-one")["reason"]
        .as_str()
        .unwrap()
        .contains("generate: false"));
    assert_eq!(
        by_id("0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d01")["title"],
        "Base64 text decoded into a shell"
    );

    // Replay through the Sigma rules, as a rule author would.
    let events = d.join("events.json");
    std::fs::write(
        &events,
        [
            r#"{"data_type":"59","res":"0","exe":"/usr/bin/base64","argv":"base64 -d","ppid_argv":"sh -c echo x | base64 -d | sh","time":"1000","tgid":"9","event_id":"r-0"}"#,
            r#"{"data_type":"59","res":"0","exe":"/usr/bin/base64","argv":"base64 -d","ppid_argv":"sh -c base64 -d f > g","time":"2000","tgid":"9","event_id":"r-1"}"#,
            &format!(r#"{{"data_type":"82","res":"0","old_name":"/tmp/x","new_name":"/tmp/{m}-drop-z.sh","time":"3000","event_id":"r-2"}}"#),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = kestrel()
        .args(["rules", "test", "--no-builtin-rules", "--events"])
        .arg(&events)
        .arg("--sigma")
        .arg(&rules)
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
    let got: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (field(a, "rule_id"), field(a, "trigger_event_ids")))
        .collect();
    assert_eq!(
        got,
        [
            ("0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d01", "r-0"),
            ("0b6f3f5e-8d7c-4c2e-9a51-5e3f7a0c1d02", "r-2")
        ]
    );

    // A Sigma file that does not parse: check and the agent name it.
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("broken.yml"),
        "title: fine\nlogsource: {product: linux, category: process_creation}\n\
         detection: {s: {Image: x}, condition: s}\n---\ntitle: broken\n\
         logsource: {product: linux, category: process_creation}\n\
         detection: {s: {Image: x}, condition: 's and and'}\n",
    )
    .unwrap();
    let want = format!("{}:5:", bad.join("broken.yml").display());
    let out = kestrel()
        .args(["rules", "check", "--sigma"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&want), "{err}");
    let out = kestrel()
        .args(["agent", "--no-logins", "--state-dir"])
        .arg(d.join("state"))
        .arg("--sigma")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&want), "{err}");
    let _ = std::fs::remove_dir_all(d);
}
