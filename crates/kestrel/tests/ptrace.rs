//! ptrace events (data_type 101): a tracer attaches to a child and writes
//! into its memory. Needs root.

use std::process::Command;

use crate::support::{field, Agent};

/// Start of the first writable private mapping of `pid`.
fn writable_address(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("rw-p"))
        .expect("a writable mapping");
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

#[test]
fn attach_and_poke_are_reported() {
    let agent = Agent::start(&[]);
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    // Let the child finish its exec before looking at its memory.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let addr = writable_address(child.id());
    let word: u64 = 0x6b65_7374_7265_6c21; // "kestrel!"
                                           // SAFETY: ptrace on our own child, which is killed right after.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        let old = libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr, 0);
        let _ = old;
        assert_eq!(libc::ptrace(libc::PTRACE_POKEDATA, pid, addr, word), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let me = std::process::id().to_string();
    let from_me = |req: i32| {
        let me = me.clone();
        move |e: &serde_json::Value| {
            e["data_type"] == "101"
                && e["tgid"].as_str() == Some(me.as_str())
                && e["ptrace_request"].as_str() == Some(&req.to_string())
                && e["target_pid"].as_str() == Some(&pid.to_string())
        }
    };
    let attach = agent.wait_for("PTRACE_ATTACH", from_me(libc::PTRACE_ATTACH as i32));
    assert_eq!(field(&attach, "res"), "0");
    let poke = agent.wait_for("PTRACE_POKEDATA", from_me(libc::PTRACE_POKEDATA as i32));
    assert_eq!(field(&poke, "addr"), format!("{addr:016x}"));
    assert_eq!(field(&poke, "data"), format!("{word:016x}"));
    assert_eq!(field(&poke, "res"), "0");
    assert_eq!(
        field(&poke, "exe"),
        std::env::current_exe().unwrap().to_str().unwrap()
    );
    agent.wait_for("PTRACE_PEEKDATA", from_me(libc::PTRACE_PEEKDATA as i32));
    agent.wait_for("PTRACE_DETACH", from_me(libc::PTRACE_DETACH as i32));
    let c = agent.stop();
    assert_eq!(c["ptrace_lost"], 0);
}
