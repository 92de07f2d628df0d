//! Kernel module loading (data_type 603) on a kernel that has modules:
//! Debian 12's 6.1 kernel booted in qemu (TCG) with an initramfs holding
//! this build's kestrel and a test module (tests/qemu/smoke.sh). The guest
//! also proves the agent's programs load and run on 6.1. Needs root.

use std::path::Path;
use std::process::Command;

#[test]
fn module_load_in_a_qemu_guest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("tests/qemu/smoke.sh"))
        .env("KESTREL_BIN", env!("CARGO_BIN_EXE_kestrel"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let smoke: Vec<&str> = stdout.lines().filter(|l| l.starts_with("SMOKE")).collect();
    println!("{}", smoke.join("\n"));
    assert!(
        out.status.success() && stdout.contains("SMOKE RESULT: PASS"),
        "guest smoke test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("SMOKE module-event: ok"), "{stdout}");
    assert!(stdout.contains("SMOKE exec-event: ok"), "{stdout}");
}
