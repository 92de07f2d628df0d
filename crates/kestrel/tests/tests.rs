//! Kestrel end to end: the real `kestrel` binary against the real kernel,
//! as root. One test binary with one module per area, so that the support
//! code is compiled once; tests run as threads of this process, and those
//! that do system-wide work take turns (see `support::serial`). One area:
//! `cargo test -p kestrel --test tests exec::`.

mod support;

mod attrs;
mod backends;
mod bench;
mod benign;
mod burst;
mod cli;
mod connect;
mod containers;
mod cred;
mod detect;
mod dns;
mod exe_identity;
mod exec;
mod files;
mod inventory;
mod kafka;
mod kafka_auth;
mod lean;
mod lineage;
mod logins;
mod loss;
mod memory;
mod module;
mod net;
mod ns;
mod output_safety;
mod paths;
mod ptrace;
mod qemu;
mod rootkit;
mod server;
mod server_hardening;
mod sigma;
mod usb;
mod watched;

/// Cargo builds this file only (`autotests = false`): a test file added
/// next to it but not declared above would never run.
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = include_str!("tests.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "tests" && !this.contains(&format!("\nmod {module};\n")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "{missing:?} in {} are not modules of tests.rs: add `mod NAME;` there \
         (and use `crate::support::` instead of `mod common;`)",
        dir.display()
    );
}

/// Every kind of the table of kinds (crates/abi/include/kestrel_abi.h) has
/// an end-to-end test: one here that waits for its events
/// (`e["data_type"] == "..."`), or, for what this host's kernel cannot do,
/// a qemu guest script that greps for them (tests/qemu/*.sh).
#[test]
fn every_kind_has_an_end_to_end_test() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    for dir in [root.join("tests"), root.join("../../tests/qemu")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs" || e == "sh") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let untested: Vec<_> = kestrel_probes::Kind::ALL
        .iter()
        .flat_map(|k| k.spec().data_types)
        .filter(|dt| {
            !sources.contains(&format!("e[\"data_type\"] == \"{dt}\""))
                && !sources.contains(&format!(r#""data_type":"{dt}""#))
        })
        .collect();
    assert!(
        untested.is_empty(),
        "no end-to-end test waits for the events of data_type {untested:?}: add one to \
         the area's module in crates/kestrel/tests/ (e[\"data_type\"] == \"...\")"
    );
}
