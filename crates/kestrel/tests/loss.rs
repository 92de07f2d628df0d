//! Records the kernel could not hand over are counted, for every kind, and
//! the totals add up. The agent is stopped (SIGSTOP) while each kind is
//! flooded, so its smallest ring buffer fills and stays full: every kind
//! then loses records, whatever the machine's speed. Needs root.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{marker, Agent, PERL_CONN};
use kestrel_probes::Kind;

/// Records of each flooded kind that the test makes. The ring buffer
/// (64 KiB) is full long before any of these floods ends.
const EXECS: usize = 300;
const CONNECTS: usize = 1000;
const CREDS: usize = 200;
const DNS_ANSWERS: usize = 1000;
const FILES: usize = 500;
const PTRACES: usize = 1000;
const BINDS: usize = 1000;
const ACCEPTS: usize = 500;
const KILLS: usize = 1000;

fn execs() {
    for _ in 0..EXECS {
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
    }
}

/// One Perl process: CONNECTS refused connects; then CREDS times, uid 1000
/// (saved uid 0) and a connect, root again and a connect, which notices
/// the change to root (one credential record, two more connects).
fn connects_and_creds() {
    let script = format!(
        "{PERL_CONN} conn() for 1..{CONNECTS}; \
         for (1..{CREDS}) {{ \
             syscall(117, 1000, 1000, 0) == 0 or die \"drop: $!\"; conn(); \
             syscall(117, 0, 0, 0) == 0 or die \"regain: $!\"; conn(); \
         }}"
    );
    let st = Command::new("perl").args(["-e", &script]).status().unwrap();
    assert!(st.success(), "perl: {st}");
}

/// Datagrams from port 53, each received with recvfrom: one DNS record
/// each (the kernel does not parse them).
fn dns_answers() {
    let server = UdpSocket::bind("127.0.0.77:53").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 64];
    for i in 0..DNS_ANSWERS {
        let id = (i as u16).to_be_bytes();
        server
            .send_to(
                &[id[0], id[1], 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
                client.local_addr().unwrap(),
            )
            .unwrap();
        client.recv_from(&mut buf).unwrap();
    }
}

fn files(dir: &std::path::Path) {
    for i in 0..FILES {
        std::fs::File::create(dir.join(i.to_string())).unwrap();
    }
}

/// ptrace requests on a child that is not traced: each fails (ESRCH) and
/// each is a record.
fn ptraces() {
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    for _ in 0..PTRACES {
        // SAFETY: a read request on our own child, which it is not tracing.
        unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, pid, 0, 0) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// UDP binds (one record each), TCP connections accepted (one accept
/// record each, beside the connects), and signals to a sleeping child.
fn binds_accepts_kills() {
    for _ in 0..BINDS {
        UdpSocket::bind("127.0.0.1:0").unwrap();
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for _ in 0..ACCEPTS {
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        l.accept().unwrap();
    }
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    for _ in 0..KILLS {
        // SAFETY: our own child; sleep ignores SIGURG.
        unsafe { libc::kill(child.id() as i32, libc::SIGURG) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: kill with our child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

#[test]
fn every_kind_s_losses_are_counted_in_the_totals() {
    let dir = std::env::temp_dir().join(marker("loss"));
    std::fs::create_dir_all(&dir).unwrap();
    let agent = Agent::start(&["--ring-buffer-bytes", "65536", "--wakeup-bytes", "32768"]);

    signal(&agent, libc::SIGSTOP);
    execs();
    connects_and_creds();
    dns_answers();
    files(&dir);
    ptraces();
    binds_accepts_kills();
    signal(&agent, libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(300));
    let c = agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut shown: Vec<_> = c
        .iter()
        .filter(|(k, _)| k.contains("_lost") || k.contains("_submitted") || *k == "received")
        .collect();
    shown.sort();
    println!("final counters: {shown:?}");
    let get = |k: &str| {
        *c.get(k)
            .unwrap_or_else(|| panic!("no counter {k} in the final counters: {c:?}"))
    };
    // The line has a pair of counters for every kind of the table, and no
    // pair for a kind the table does not have.
    let kinds: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    for suffix in ["_submitted", "_lost"] {
        let logged: BTreeSet<&str> = c
            .keys()
            .filter_map(|k| k.strip_suffix(suffix))
            .filter(|k| *k != "kernel")
            .collect();
        assert_eq!(logged, kinds, "kinds with a {suffix} counter: {c:?}");
    }
    let per_kind =
        |suffix: &str| -> u64 { kinds.iter().map(|k| get(&format!("{k}{suffix}"))).sum() };
    let (submitted, lost) = (per_kind("_submitted"), per_kind("_lost"));
    assert_eq!(
        get("kernel_lost"),
        lost,
        "kernel_lost is not every kind's: {c:?}"
    );
    assert_eq!(
        get("kernel_submitted"),
        submitted,
        "kernel_submitted is not every kind's: {c:?}"
    );
    assert_eq!(
        get("kernel_submitted") + get("kernel_lost"),
        submitted + lost
    );
    // The agent detached, then drained the ring buffer: it read every
    // record the kernel wrote.
    assert_eq!(get("received"), get("kernel_submitted"), "{c:?}");

    let caused = [
        (Kind::Exec, EXECS),
        (Kind::Connect, CONNECTS + 2 * CREDS),
        (Kind::Cred, CREDS),
        (Kind::Dns, DNS_ANSWERS),
        (Kind::File, FILES),
        (Kind::Ptrace, PTRACES),
        (Kind::Bind, BINDS),
        (Kind::Accept, ACCEPTS),
        (Kind::Kill, KILLS),
    ];
    for (kind, n) in caused {
        let kind = kind.name();
        let (s, l) = (
            get(&format!("{kind}_submitted")),
            get(&format!("{kind}_lost")),
        );
        assert!(
            s + l >= n as u64,
            "{kind}: {s} submitted + {l} lost < the {n} records caused: {c:?}"
        );
        assert!(
            l > 0,
            "{kind}: the flood lost nothing, so it tested nothing: {c:?}"
        );
    }
}
