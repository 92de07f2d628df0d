//! Guests booting other kernels in qemu (tests/qemu): what this host's
//! kernel cannot show (modules, kprobes, other struct layouts).

use std::path::Path;
use std::process::Command;

/// What a qemu test script (tests/qemu/*.sh) did.
pub struct GuestRun {
    pub ok: bool,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the qemu test script `script` (under tests/qemu) with `args` and
/// this build's kestrel, prints the guest's lines that start with
/// `prefix`, and says whether it exited 0 with "`prefix` RESULT: PASS".
/// A TCG guest keeps a core busy for minutes: one at a time, and nothing
/// else system-wide meanwhile, or both would run past their timeouts.
pub fn run_script(script: &str, args: &[&str], prefix: &str) -> GuestRun {
    let _serial = super::serial();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("tests/qemu").join(script))
        .args(args)
        .env("KESTREL_BIN", env!("CARGO_BIN_EXE_kestrel"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(prefix)).collect();
    println!("{}", lines.join("\n"));
    GuestRun {
        ok: out.status.success() && stdout.contains(&format!("{prefix} RESULT: PASS")),
        status: out.status,
        stdout,
        stderr,
    }
}
