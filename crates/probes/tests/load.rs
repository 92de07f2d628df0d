//! Loads the real programs into the running kernel (needs root) and checks
//! that records come out of the ring buffer.

use std::cell::RefCell;
use std::process::Command;
use std::time::{Duration, Instant};

use kestrel_abi as abi;
use kestrel_probes::{Kind, ProbeConfig, Probes};

#[test]
fn exec_and_connect_records_reach_the_ring_buffer() {
    let probes = Probes::load(&ProbeConfig {
        ring_buffer_bytes: 4 << 20,
        wakeup_bytes: 64 << 10,
        exit_events: true,
        btf: None,
        syscall_tracepoints: true,
        hook_backend: Default::default(),
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let seen = RefCell::new(Vec::<(u16, u32)>::new());
    let rb = probes
        .ring_buffer(|data: &[u8]| {
            let kind = u16::from_ne_bytes([data[0], data[1]]);
            let tgid = u32::from_ne_bytes(data[28..32].try_into().unwrap());
            seen.borrow_mut().push((kind, tgid));
            0
        })
        .unwrap();

    let child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    let _ = child.wait_with_output();
    // A connect to a closed local port: refused, but still an event. It
    // comes from a child: the loader's own process is filtered out.
    let sh = Command::new("bash")
        .args(["-c", "echo > /dev/tcp/127.0.0.1/1"])
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    let _ = sh.wait_with_output();

    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        rb.poll(Duration::from_millis(100)).unwrap();
        rb.consume().unwrap();
        let s = seen.borrow();
        let exec = s
            .iter()
            .any(|&(k, p)| k == abi::KESTREL_KIND_EXEC as u16 && p == pid);
        let connect = s
            .iter()
            .any(|&(k, p)| k == abi::KESTREL_KIND_CONNECT as u16 && p == sh_pid);
        if exec && connect {
            let c = probes.counters().unwrap();
            assert!(
                c[Kind::Exec].submitted >= 1 && c[Kind::Connect].submitted >= 1,
                "{c:?}"
            );
            return;
        }
    }
    panic!("records seen: {:?}", seen.borrow());
}
