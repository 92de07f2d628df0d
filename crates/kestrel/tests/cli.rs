//! Errors a user meets first: they must say what is wrong and what to do.

use std::os::unix::process::CommandExt;

use crate::support::kestrel;

fn run(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn help_documents_every_option() {
    let (code, text) = run(kestrel().args(["agent", "--help"]));
    assert_eq!(code, 0);
    for opt in [
        "--config",
        "--output",
        "--ring-buffer-bytes",
        "--wakeup-bytes",
        "--max-latency-ms",
        "--stats-interval-secs",
        "--exe-md5-max-bytes",
        "--process-cache-entries",
        "--hash-cache-entries",
        "--queue-events",
        "--btf",
        "--log-level",
        "--output-allow",
        "--output-max-bytes",
        "--output-keep",
    ] {
        assert!(text.contains(opt), "agent --help lacks {opt}");
    }
    let (code, text) = run(kestrel().arg("--help"));
    assert_eq!(code, 0);
    assert!(text.contains("agent"));
}

#[test]
fn unknown_option_is_refused() {
    let (code, text) = run(kestrel().args(["agent", "--no-such-option"]));
    assert_eq!(code, 2);
    assert!(text.contains("--no-such-option"), "{text}");
}

#[test]
fn bad_config_values_name_the_key() {
    let dir = std::env::temp_dir().join(format!("kestrel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (toml, key) in [
        ("ring_buffer_bytes = 12345\n", "ring_buffer_bytes"),
        ("output = \"carrier-pigeon\"\n", "output"),
        ("max_latency_ms = -5\n", "max_latency_ms"),
        ("surprise = true\n", "surprise"),
        ("file_excludes = [\"relative/dir\"]\n", "file_excludes"),
    ] {
        let f = dir.join("k.toml");
        std::fs::write(&f, toml).unwrap();
        let (code, text) = run(kestrel().args(["agent", "--config", f.to_str().unwrap()]));
        assert_eq!(code, 1, "{toml}: {text}");
        assert!(
            text.contains(key),
            "{toml}: error does not name {key}: {text}"
        );
    }
    let (code, text) = run(kestrel().args(["agent", "--wakeup-bytes", "0"]));
    assert_eq!(code, 1);
    assert!(text.contains("wakeup_bytes"), "{text}");
    let (code, text) = run(kestrel().args(["agent", "--config", "/nonexistent/k.toml"]));
    assert_eq!(code, 1);
    assert!(text.contains("/nonexistent/k.toml"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn not_root_is_explained() {
    let (code, text) = run(kestrel().arg("agent").uid(65534).gid(65534));
    assert_eq!(code, 1);
    assert!(text.contains("must run as root"), "{text}");
}

#[test]
fn missing_btf_is_explained() {
    let (code, text) = run(kestrel().args(["agent", "--btf", "/nonexistent/vmlinux"]));
    assert_eq!(code, 1);
    assert!(
        text.contains("btf") && text.contains("/nonexistent/vmlinux"),
        "{text}"
    );
}

#[test]
fn btf_that_is_not_btf_is_refused_clearly() {
    let f = std::env::temp_dir().join(format!("kestrel-notbtf-{}", std::process::id()));
    std::fs::write(&f, b"this is not BTF").unwrap();
    let (code, text) = run(kestrel().args(["agent", "--btf", f.to_str().unwrap()]));
    std::fs::remove_file(&f).unwrap();
    assert_eq!(code, 1);
    assert!(text.contains("kestrel: error:"), "{text}");
    assert!(
        text.contains("libbpf said"),
        "the error shows libbpf's reason: {text}"
    );
}

#[test]
fn a_closed_pipe_ends_a_one_shot_command_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    // The package inventory is far larger than a pipe's buffer: the
    // command is still writing when the reader goes away, like `| head`.
    let mut child = kestrel()
        .args(["inventory", "packages"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
}

/// `kestrel agent ARGS`, killed if it still runs after 30 s (it accepted
/// what it should have refused): exit code and output, or None.
fn run_refused(args: &[&str]) -> Option<(i32, String)> {
    use std::process::Stdio;
    let _serial = crate::support::serial();
    let state = std::env::temp_dir().join(format!("kestrel-cli-state-{}", std::process::id()));
    let mut child = kestrel()
        .args(["agent", "--inventory-interval-hours", "0"])
        .args(["--rootkit-scan-interval-hours", "0", "--state-dir"])
        .arg(&state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn conflicting_or_relative_settings_are_refused() {
    let dir = std::env::temp_dir().join(format!("kestrel-cli-conflict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("k.toml");
    let f = f.to_str().unwrap();
    for (args, toml, names) in [
        (
            &["--no-logins", "--login-journal", "on"][..],
            "no_logins = true\nlogin_journal = \"on\"\n",
            &["no_logins", "login_journal"][..],
        ),
        (
            &["--cred-allow", "sudo"][..],
            "cred_allowlist = [\"/usr/bin/su\", \"bin/sudo\"]\n",
            &["cred_allowlist", "absolute"][..],
        ),
        (
            &["--output-allow", "var/log"][..],
            "output_allow = [\"/var/log/../../etc\"]\n",
            &["output_allow", "absolute"][..],
        ),
    ] {
        std::fs::write(f, toml).unwrap();
        for a in [args, &["--config", f][..]] {
            let Some((code, text)) = run_refused(a) else {
                panic!("the agent started with {a:?} ({toml:?})");
            };
            assert_eq!(code, 1, "{a:?}: {text}");
            for n in names {
                assert!(
                    text.contains(n),
                    "{a:?}: the error does not name {n}: {text}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
