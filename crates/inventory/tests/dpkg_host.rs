//! Reads this machine's dpkg database and checks it against dpkg-query.

use std::path::Path;
use std::process::Command;

use kestrel_inventory::dpkg;

#[test]
fn host_bash_matches_dpkg_query() {
    let status = Path::new("/var/lib/dpkg/status");
    if !status.exists() {
        // Not a Debian-family host (e.g. a Fedora CI runner): nothing to compare.
        eprintln!("skipping: {} does not exist", status.display());
        return;
    }
    let (packages, warnings) = dpkg::read_status(status).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let bash = packages
        .iter()
        .find(|p| p.name == "bash")
        .unwrap_or_else(|| panic!("bash not among {} packages", packages.len()));

    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "bash"])
        .output()
        .unwrap_or_else(|e| panic!("dpkg-query: {e}"));
    assert!(out.status.success(), "dpkg-query failed: {out:?}");
    let expected = String::from_utf8_lossy(&out.stdout).into_owned();

    let mut ours = String::new();
    if let Some(epoch) = bash.epoch {
        ours.push_str(&format!("{epoch}:"));
    }
    ours.push_str(&bash.version);
    if !bash.release.is_empty() {
        ours.push('-');
        ours.push_str(&bash.release);
    }
    assert_eq!(ours, expected);
    assert!(bash.size > 0);
    assert!(bash.install_time.is_some(), "info/bash.list should exist");

    // Every package dpkg-query calls installed must be listed, and no other.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}|${Package}\\n"])
        .output()
        .unwrap_or_else(|e| panic!("dpkg-query: {e}"));
    let mut installed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // Installed, wanted (ii) or held (hi), with no error flag.
        .filter_map(|l| l.strip_prefix("ii |").or_else(|| l.strip_prefix("hi |")))
        .map(str::to_string)
        .collect();
    installed.sort();
    let mut ours: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
    ours.sort();
    assert_eq!(ours, installed);
}
