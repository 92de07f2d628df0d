//! Kernel module loading (data_type 603) on a kernel that has modules:
//! Debian 12's 6.1 kernel booted in qemu (TCG) with an initramfs holding
//! this build's kestrel and a test module (tests/qemu/smoke.sh). The guest
//! also proves the agent's programs load and run on 6.1. Needs root.

use crate::support::qemu;

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
}
