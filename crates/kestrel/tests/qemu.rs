//! Kernel module loading (data_type 603) on a kernel that has modules:
//! Debian 12's 6.1 kernel booted in qemu (TCG) with an initramfs holding
//! this build's kestrel and a test module (tests/qemu/smoke.sh). The guest
//! also proves the agent's programs load and run on 6.1, and, with the
//! agent's built-in rules, that `kestrel.persistence.kernel_module` alerts
//! on loads from outside the module tree and `rootkit_finding` stays quiet
//! on a clean kernel's scan. Needs root.

use serde_json::Value;

use crate::support::qemu;

/// The JSON documents of the output lines that start with `prefix`.
pub(crate) fn json_lines(output: &str, prefix: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("bad JSON line {j}: {e}")))
        .collect()
}

/// The alerts of `rule` that `event` alone triggered.
pub(crate) fn alerts_on<'a>(alerts: &'a [Value], rule: &str, event: &Value) -> Vec<&'a Value> {
    let id = event["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("event without event_id: {event}"));
    alerts
        .iter()
        .filter(|a| a["rule_id"] == rule && a["trigger_event_ids"] == id)
        .collect()
}

/// The one alert of `rule` on `event`, with the built-in rule's fields.
pub(crate) fn assert_one_builtin_alert(
    alerts: &[Value],
    rule: &str,
    event: &Value,
    severity: &str,
    technique: &str,
) {
    let on = alerts_on(alerts, rule, event);
    assert_eq!(on.len(), 1, "{rule} alerts on {event}: {on:?}");
    let a = on[0];
    assert_eq!(a["data_type"], "9000", "{a}");
    assert_eq!(a["severity"], severity, "{a}");
    assert_eq!(a["source"], "builtin", "{a}");
    let techniques = a["mitre_technique"].as_str().unwrap_or_default();
    assert!(techniques.split(',').any(|t| t == technique), "{a}");
    assert!(
        a["rule_name"].as_str().is_some_and(|n| !n.is_empty()),
        "{a}"
    );
    assert_eq!(a["time"], event["time"], "the trigger's time: {a}");
    assert!(
        a["event_id"]
            .as_str()
            .is_some_and(|i| i != event["event_id"]),
        "{a}"
    );
}

#[test]
fn module_load_in_a_qemu_guest() {
    let run = qemu::run_script("smoke.sh", &[], "SMOKE");
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.ok,
        "guest smoke test failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(stdout.contains("SMOKE module-event: ok"), "{stdout}");
    assert!(stdout.contains("SMOKE exec-event: ok"), "{stdout}");
    assert!(stdout.contains("SMOKE umh-event: ok"), "{stdout}");

    // The summary smoke.sh prints from the console log (the console was
    // streamed before it: each line is there twice).
    let (_, summary) = stdout
        .split_once("smoke: summary (from")
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let events = json_lines(summary, "SMOKE event: ");
    let alerts = json_lines(summary, "SMOKE alert: ");
    let load = |what: &str, matches: &dyn Fn(&Value) -> bool| -> &Value {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e["data_type"] == "603" && matches(e))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "603 events for {what}: {found:?}\n{summary}"
        );
        found[0]
    };
    let km = "kestrel.persistence.kernel_module";

    // Outside the module tree: a copy in /tmp (finit_module), and from
    // memory (init_module of the image busybox decompressed, after the
    // kernel refused the gzipped file's finit_module).
    let tmp = load("the load from /tmp", &|e| {
        e["lkm_file"] == "/tmp/kestrel_test_mod.ko" && e["syscall"] == "finit_module"
    });
    assert_eq!(tmp["res"], "0", "{tmp}");
    assert_one_builtin_alert(&alerts, km, tmp, "high", "T1547.006");
    let memory = load("the load from memory", &|e| e["syscall"] == "init_module");
    assert_eq!(memory["res"], "0", "{memory}");
    assert_eq!(
        memory["lkm_file"].as_str().unwrap_or_default(),
        "",
        "{memory}"
    );
    assert_one_builtin_alert(&alerts, km, memory, "high", "T1547.006");
    let refused = load("the gzipped file's finit_module", &|e| {
        e["lkm_file"] == "/tmp/kestrel_test_mod.ko.gz"
    });
    assert_ne!(refused["res"], "0", "{refused}");
    assert!(alerts_on(&alerts, km, refused).is_empty(), "{alerts:?}");

    // Benign: modprobe from /lib/modules/$(uname -r), and the reload of
    // the file under /lib/modules.
    let tree = load("modprobe's load from the tree", &|e| {
        e["lkm_file"].as_str().is_some_and(|f| {
            f.starts_with("/lib/modules/6.") && f.ends_with("/extra/kestrel_test_mod.ko")
        })
    });
    assert_eq!(tree["res"], "0", "{tree}");
    assert_eq!(tree["comm"], "modprobe", "{tree}");
    assert!(alerts_on(&alerts, km, tree).is_empty(), "{alerts:?}");
    let lib = load("the reload from /lib/modules", &|e| {
        e["lkm_file"] == "/lib/modules/kestrel_test_mod.ko"
    });
    assert!(alerts_on(&alerts, km, lib).is_empty(), "{alerts:?}");
    let all: Vec<_> = alerts.iter().filter(|a| a["rule_id"] == km).collect();
    assert_eq!(all.len(), 2, "{km} alerts: {all:?}");

    // The agent's rootkit scan at start, on a clean kernel (a visible
    // out-of-tree module loaded): no finding, no rootkit_finding alert.
    assert!(stdout.contains("SMOKE clean-scan: ok"), "{stdout}");
    assert!(
        !events
            .iter()
            .any(|e| e["data_type"].as_str().is_some_and(|t| t.starts_with("70"))),
        "findings on a clean kernel:\n{summary}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["rule_id"] == "kestrel.defense_evasion.rootkit_finding"),
        "{alerts:?}"
    );
}
