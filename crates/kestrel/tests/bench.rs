//! `kestrel bench all --quick`: the benchmark suite runs end to end (real
//! agent, real workloads, auditd when installed) and prints every table.
//! Figures are not checked: quick mode only proves the suite works.
//! Needs root.

use crate::support::{kestrel, serial};

/// Data rows (not header or rule) of the Markdown table after `heading`.
fn table_rows<'a>(md: &'a str, heading: &str, first_col: &str) -> Vec<&'a str> {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?} in:\n{md}"));
    let section = &md[start..];
    let section = &section[..section[heading.len()..]
        .find("\n### ")
        .map_or(section.len(), |e| e + heading.len())];
    let header = format!("| {first_col} |");
    let at = section
        .find(&header)
        .unwrap_or_else(|| panic!("no table starting {header:?} in:\n{section}"));
    section[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect()
}

fn col(row: &str, i: usize) -> &str {
    row.split('|').nth(i + 1).unwrap_or("").trim()
}

#[test]
fn quick_benchmark_prints_every_table() {
    // Agents and workload storms of its own, measured.
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("kbench-test-{}", std::process::id()));
    let out_file = std::env::temp_dir().join(format!("kbench-test-{}.md", std::process::id()));
    let out = kestrel()
        .args(["bench", "all", "--quick", "--work-dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("run kestrel bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kestrel bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let md = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(md, stdout, "--out holds what was printed");
    std::fs::remove_file(&out_file).unwrap();
    assert!(!dir.exists(), "scratch directory removed");
    assert!(md.contains("- Kernel: Linux "), "{md}");
    assert!(
        md.contains("- Command (as root, from the repository): `scripts/bench --quick`"),
        "{md}"
    );

    // 1. Hooks: the connect storm ran the connect program at least once
    // per connect, the DNS storm the recvfrom program once per reply.
    let hooks = table_rows(&md, "### 1. Per-hook cost", "workload");
    let runs = |workload: &str, program: &str| -> u64 {
        hooks
            .iter()
            .find(|r| col(r, 0).starts_with(workload) && col(r, 2) == format!("`{program}`"))
            .map(|r| col(r, 3).parse().unwrap())
            .unwrap_or_else(|| panic!("no {program} row for {workload}:\n{md}"))
    };
    assert!(runs("connect storm", "handle_connect_exit") >= 1000, "{md}");
    assert!(runs("DNS storm", "handle_recvfrom_exit") >= 1000, "{md}");
    assert!(runs("exec storm", "handle_exec") >= 100, "{md}");
    // Forked first, then exec'd: the fork program runs once per operation
    // in that workload too.
    assert!(runs("fork-then-exec storm", "handle_exec") >= 100, "{md}");
    assert!(runs("fork-then-exec storm", "handle_fork") >= 100, "{md}");
    // Two exits per operation, one noticing the change to root.
    assert!(runs("root regained", "handle_exit") >= 200, "{md}");
    // umount's and pivot_root's programs have the same instructions (one
    // tag): each is still named and counted apart.
    assert!(
        runs("refused umount2", "handle_umount_exit") >= 2000,
        "{md}"
    );
    assert!(
        runs("refused umount2", "handle_pivot_root_exit") >= 2000,
        "{md}"
    );
    assert!(
        runs("open the C library", "handle_openat_exit") >= 10000,
        "{md}"
    );

    // 2. Overhead: every workload, a figure for each configuration.
    let overhead = table_rows(&md, "### 2. Workload overhead", "workload");
    assert_eq!(overhead.len(), 24, "{md}");
    for r in &overhead {
        for i in [2, 3] {
            let ns: f64 = col(r, i).parse().unwrap_or_else(|_| panic!("bad row {r}"));
            assert!(ns > 0.0, "{r}");
        }
    }
    // The test command installs auditd: the comparison must have run.
    let with_audit = md.contains("| auditd ns/op |");
    if std::path::Path::new("/sbin/auditd").exists() {
        assert!(
            with_audit,
            "auditd is installed but was not measured:\n{md}"
        );
    } else {
        assert!(
            md.contains("auditd could not be measured"),
            "auditd neither measured nor said why not:\n{md}"
        );
    }
    assert!(md.contains("Kestrel's getppid overhead: "), "{md}");

    // 3. Pipeline: replay stages and live rows, with events counted.
    let replay = table_rows(&md, "### 3. Pipeline", "stage");
    assert_eq!(replay.len(), 5, "{md}");
    for r in &replay {
        assert!(col(r, 1).parse::<u64>().unwrap() > 0, "{r}");
    }
    assert!(
        md.contains("The bottleneck of the user-space pipeline is **"),
        "{md}"
    );
    let live = table_rows(&md, "### 3. Pipeline", "target ops/s");
    assert_eq!(live.len(), 2, "{md}");
    assert_eq!(col(live[1], 0), "max");
    for r in &live {
        assert!(col(r, 8).parse::<u64>().unwrap() > 0, "events emitted: {r}");
    }

    // 4. Scaling: one row per process count, the agent saw the processes.
    let scaling = table_rows(&md, "### 4. Scaling", "sleeping processes");
    assert_eq!(scaling.len(), 2, "{md}");
    for r in &scaling {
        let n: u64 = col(r, 0).parse().unwrap();
        assert!(
            col(r, 6).parse::<u64>().unwrap() >= n,
            "a record per process: {r}"
        );
    }
}
