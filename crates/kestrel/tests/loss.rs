//! Records the kernel could not hand over are counted, for every kind, and
//! the totals add up. The agent is stopped (SIGSTOP) while each kind is
//! flooded, so its smallest ring buffer fills and stays full: every kind
//! then loses records, whatever the machine's speed. Needs root.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{marker, Agent, CorePattern, PERL_CONN};
use kestrel_probes::Kind;

/// Records of each flooded kind that the test makes. The ring buffer
/// (64 KiB) is full long before any of these floods ends.
const EXECS: usize = 300;
const CONNECTS: usize = 1000;
const CREDS: usize = 200;
const DNS_ANSWERS: usize = 1000;
const FILES: usize = 500;
const PTRACES: usize = 1000;
/// Refused mount(2)s, unshare(0)s and refused bpf(BPF_PROG_LOAD)s.
const NS_CALLS: usize = 1000;
const BINDS: usize = 1000;
const ACCEPTS: usize = 500;
const KILLS: usize = 1000;
const MEMORY: usize = 1000;

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
/// MEMORY memfd_create calls, thread renames and anonymous RWX mappings.
fn memory_kinds() {
    let script = format!(
        "import ctypes, mmap, os\n\
         libc = ctypes.CDLL(None)\n\
         for i in range({MEMORY}):\n\
         \x20   os.close(os.memfd_create('kestrel-loss'))\n\
         \x20   libc.prctl(15, b'kestrel-loss', 0, 0, 0)\n\
         \x20   mmap.mmap(-1, 4096, prot=7).close()\n"
    );
    let st = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(st.success());
}

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

/// mount (165), unshare (272) and bpf (321) records: each call refused or
/// changing nothing, each a record.
fn mounts_nses_bpfs() {
    let attr = [0xffu8; 4]; // prog_type 0xffffffff: EINVAL
    for _ in 0..NS_CALLS {
        // SAFETY: NUL-terminated strings and a valid buffer; every call
        // fails or changes nothing.
        unsafe {
            libc::mount(
                c"kestrel-loss".as_ptr(),
                c"/nonexistent-kestrel-loss".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            );
            libc::unshare(0);
            libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len());
        }
    }
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

/// Path syscalls on a name that does not exist: each fails (ENOENT) and
/// each is a record of its kind (82, 86, 605, 606).
const PATH_CALLS: usize = 200;
fn path_calls(dir: &std::path::Path) {
    let c = |n: &str| std::ffi::CString::new(dir.join(n).to_str().unwrap()).unwrap();
    let (missing, other) = (c("missing"), c("other"));
    for _ in 0..PATH_CALLS {
        // SAFETY: plain syscalls on NUL-terminated paths owned here.
        unsafe {
            libc::rename(missing.as_ptr(), other.as_ptr());
            libc::link(missing.as_ptr(), other.as_ptr());
            libc::unlink(missing.as_ptr());
            libc::rmdir(missing.as_ptr());
        }
    }
}

/// Set-id chmods and chowns of a watched name that does not exist: each
/// fails (ENOENT) and each is a record (90, 92).
const ATTR_CALLS: usize = 500;
fn attr_calls(dir: &std::path::Path) {
    let missing = std::ffi::CString::new(dir.join("missing").to_str().unwrap()).unwrap();
    for _ in 0..ATTR_CALLS {
        // SAFETY: plain syscalls on a NUL-terminated path owned here.
        unsafe {
            libc::chmod(missing.as_ptr(), 0o4755);
            libc::chown(missing.as_ptr(), 0, 0);
        }
    }
}

/// Children that drop to uid 65534 keeping saved uid 0, each forking a
/// grandchild that takes root back: a 604 and a 611 each.
const REGAINS: usize = 300;
fn regains() {
    for _ in 0..REGAINS {
        // SAFETY: fork, then only raw syscalls and _exit in the children,
        // which have one thread each.
        unsafe {
            let a = libc::fork();
            assert!(a >= 0, "fork: {}", std::io::Error::last_os_error());
            if a == 0 {
                if libc::setresuid(65534, 65534, 0) != 0 {
                    libc::_exit(1);
                }
                let b = libc::fork();
                if b == 0 {
                    libc::_exit(i32::from(libc::setresuid(0, 0, 0) != 0));
                }
                let mut st = 0;
                libc::waitpid(b, &mut st, 0);
                libc::_exit(i32::from(b <= 0 || st != 0));
            }
            let mut st = 0;
            libc::waitpid(a, &mut st, 0);
            assert_eq!(st, 0, "the regaining children failed");
        }
    }
}

/// Children that crash with cores allowed while core_pattern pipes to a
/// helper: the kernel runs the helper from a kernel thread, a 607 each.
const CRASHES: usize = 200;
fn crashes() {
    let _pattern = CorePattern::set("|/bin/true");
    for _ in 0..CRASHES {
        // SAFETY: fork, then only raw syscalls in the child.
        unsafe {
            let a = libc::fork();
            assert!(a >= 0, "fork: {}", std::io::Error::last_os_error());
            if a == 0 {
                let all = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &all);
                // Rust's runtime handles SIGSEGV (stack overflows): the
                // kernel's default action is what dumps the core.
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::kill(libc::getpid(), libc::SIGSEGV);
                libc::_exit(1);
            }
            let mut st = 0;
            libc::waitpid(a, &mut st, 0);
            assert!(
                libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
                "the crashing child ended with status {st}"
            );
        }
    }
}

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: kill with our child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

#[test]
fn every_kind_s_losses_are_counted_in_the_totals() {
    let dir = std::env::temp_dir().join(marker("loss"));
    std::fs::create_dir_all(&dir).unwrap();
    let watched = format!("{}/", dir.display());
    let agent = Agent::start(&[
        "--ring-buffer-bytes",
        "65536",
        "--wakeup-bytes",
        "32768",
        "--watch-path",
        &watched,
    ]);

    signal(&agent, libc::SIGSTOP);
    execs();
    connects_and_creds();
    dns_answers();
    files(&dir);
    ptraces();
    mounts_nses_bpfs();
    binds_accepts_kills();
    memory_kinds();
    path_calls(&dir);
    attr_calls(&dir);
    regains();
    crashes();
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
        (Kind::Mount, NS_CALLS),
        (Kind::Ns, NS_CALLS),
        (Kind::Bpf, NS_CALLS),
        (Kind::Bind, BINDS),
        (Kind::Accept, ACCEPTS),
        (Kind::Kill, KILLS),
        (Kind::Memfd, MEMORY),
        (Kind::Mprotect, MEMORY),
        (Kind::Prctl, MEMORY),
        // Every process exec'd above ended.
        (Kind::Exit, EXECS),
        (Kind::Rename, PATH_CALLS),
        (Kind::Link, PATH_CALLS),
        (Kind::Unlink, PATH_CALLS),
        (Kind::Rmdir, PATH_CALLS),
        (Kind::Chmod, ATTR_CALLS),
        (Kind::Chown, ATTR_CALLS),
        (Kind::Privesc, REGAINS),
        (Kind::Umh, CRASHES),
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
