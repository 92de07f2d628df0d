//! Kestrel end to end: the real `kestrel` binary against the real kernel,
//! as root. One test binary with one module per area, so that the support
//! code is compiled once; tests run as threads of this process, and those
//! that do system-wide work take turns (see `support::serial`). One area:
//! `cargo test -p kestrel --test tests exec::`.

mod support;

mod bench;
mod burst;
mod cli;
mod connect;
mod containers;
mod cred;
mod dns;
mod exe_identity;
mod exec;
mod files;
mod inventory;
mod kafka;
mod kafka_auth;
mod logins;
mod loss;
mod module;
mod output_safety;
mod ptrace;
mod qemu;
mod rootkit;
mod server;
mod server_hardening;

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
