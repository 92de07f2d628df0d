//! Reads the real rpm databases under `shared/fixtures/rpmdb` and compares
//! them with what rpm itself reports (`tests/data/*.txt`, produced by
//! Debian's rpm 4.18; see the first lines of each file for the command).

use std::path::{Path, PathBuf};

use kestrel_inventory::{rpm, Package, PackageSource};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/rpmdb")
}

/// Formats a package like the oracle's `--qf`, `(none)` standing for a
/// missing tag.
fn oracle_line(p: &Package) -> String {
    let none = |s: &str| {
        if s.is_empty() {
            "(none)".to_string()
        } else {
            s.to_string()
        }
    };
    let opt = |v: Option<u64>| v.map_or("(none)".to_string(), |v| v.to_string());
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        p.name,
        opt(p.epoch.map(u64::from)),
        none(&p.version),
        none(&p.release),
        none(&p.arch),
        p.size,
        none(&p.vendor),
        opt(p.install_time),
    )
}

fn oracle(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn read_sorted(path: &Path) -> Vec<String> {
    let (packages, warnings) = rpm::read_db(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(packages.iter().all(|p| p.source == PackageSource::Rpm));
    let mut lines: Vec<String> = packages.iter().map(oracle_line).collect();
    lines.sort();
    lines
}

fn assert_same(ours: &[String], expected: &[String]) {
    for (a, b) in ours.iter().zip(expected) {
        assert_eq!(a, b);
    }
    assert_eq!(
        ours.len(),
        expected.len(),
        "package count differs from the oracle"
    );
}

#[test]
fn sqlite_matches_rpm() {
    let expected = oracle("sqlite-cbl-mariner-2.0.txt");
    assert_eq!(expected.len(), 129);
    let dir = fixtures().join("sqlite-cbl-mariner-2.0");
    // Both the directory and the file itself are accepted.
    assert_same(&read_sorted(&dir), &expected);
    assert_same(&read_sorted(&dir.join("rpmdb.sqlite")), &expected);
}

#[test]
fn berkeley_db_matches_rpm() {
    let expected = oracle("bdb-libuuid.txt");
    assert_eq!(expected.len(), 1);
    let dir = fixtures().join("bdb-libuuid");
    assert_same(&read_sorted(&dir), &expected);
    assert_same(&read_sorted(&dir.join("Packages")), &expected);
}

#[test]
fn ndb_matches_independent_decoder() {
    // rpm on Debian cannot read ndb, so the reference list comes from a
    // separate Python decoder (tests/data/ndb_decode.py).
    let expected = oracle("ndb-sle15-bci.txt");
    assert_eq!(expected.len(), 35);
    let dir = fixtures().join("ndb-sle15-bci");
    let ours = read_sorted(&dir);
    assert_same(&ours, &expected);
    assert_same(&read_sorted(&dir.join("Packages.db")), &expected);

    // Spot checks a reader can verify by eye: a SLE 15 SP3 base image has
    // bash, glibc, the release package and the ndb flavour of rpm itself.
    for known in [
        "bash|(none)|4.4|19.6.1|x86_64|1114706|SUSE LLC <https://www.suse.com/>|1638530310",
        "glibc|(none)|2.31|9.3.2|x86_64|6183407|SUSE LLC <https://www.suse.com/>|1638530310",
        "sles-release|(none)|15.3|55.4.1|x86_64|342491|SUSE LLC <https://www.suse.com/>|1638530311",
        "rpm-ndb|(none)|4.14.3|40.1|x86_64|3132579|SUSE LLC <https://www.suse.com/>|1638535601",
    ] {
        assert!(ours.iter().any(|l| l == known), "missing {known}");
    }
}
