//! Micro-workloads, each timed in-process as nanoseconds per operation.

use std::ffi::CString;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Keeps the calling thread on one CPU, the highest it may use, until
/// dropped. Every workload thread (the operations, the TCP listener, the
/// DNS responder) runs there: a request and its answer then switch threads
/// on one CPU instead of waking an idle one. On this VM a cross-CPU wakeup
/// out of the guest's idle state cost more than the operation itself, and
/// varied with whatever else kept the CPUs busy: with no agent running the
/// TCP and DNS storms were slower than with one. The agent is not pinned.
pub struct Pin(Option<libc::cpu_set_t>);

impl Pin {
    pub fn workload_cpu() -> Pin {
        // SAFETY: cpu_set_t is plain data; the calls get its size.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut old) != 0 {
                return Pin(None);
            }
            let Some(cpu) = (0..libc::CPU_SETSIZE as usize)
                .rev()
                .find(|&c| libc::CPU_ISSET(c, &old))
            else {
                return Pin(None);
            };
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                return Pin(None);
            }
            Pin(Some(old))
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restores the mask read in workload_cpu.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// One kind of operation the agent may (or must not) pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// fork+execve of /bin/true (std's spawn: clone(CLONE_VFORK) + execve), waited for.
    Exec,
    /// fork(2), then execve of /bin/true in the child, waited for: how
    /// shells and interpreters start a program (the child runs on a copy
    /// of the parent's memory until the exec, unlike vfork).
    ForkExec,
    /// TCP connect + close (RST, no TIME_WAIT) to a local listener.
    Connect,
    /// UDP DNS query to a local responder on port 53, reply read with recvfrom.
    Dns,
    /// open(O_CREAT|O_EXCL) + close + unlink in a scratch directory.
    FileCreate,
    /// open + close of an existing file (Kestrel must not pay for this).
    OpenExisting,
    /// getppid(2) through syscall(2): the cost of a syscall nobody traces.
    Getppid,
    /// A refused mount(2) (the target does not exist): the whole mount
    /// program, record sent, with no mount made.
    Mount,
    /// setns(2) into the caller's own network namespace, and unshare(0):
    /// both programs of each, records sent, nothing changed.
    Setns,
    /// bpf(BPF_MAP_LOOKUP_ELEM) on a closed descriptor: a command the bpf
    /// program filters out.
    BpfFiltered,
    /// UDP socket + bind(127.0.0.1:0) + close: every bind is reported.
    Bind,
    /// accept4 on a non-blocking listener with nothing queued (EAGAIN):
    /// the accept programs' filtered-out case.
    AcceptEmpty,
    /// kill(self, SIGURG): a signal to the sender itself, filtered out.
    SignalSelf,
    /// kill(a sleeping child, SIGURG): a reported signal.
    SignalOther,
    /// mmap of a file r-x (as ld.so maps a library), mprotect of it to
    /// r-- (as ld.so's RELRO), munmap: the memory programs' filtered case.
    MmapLibrary,
    /// mmap anonymous RWX, mprotect to RX, munmap: two records (data_type 10).
    MmapExec,
    /// memfd_create + close, prctl(PR_SET_NAME): a record each (356, 157).
    MemfdRename,
    /// The path syscalls of data_types 82, 86, 605, 606, once each:
    /// rename, renameat, renameat2, link, linkat, symlink, symlinkat,
    /// unlink, unlinkat (file and AT_REMOVEDIR), rmdir; mkdir twice. The
    /// *at calls name files relative to a directory descriptor (the kernel
    /// program walks its path), the others by absolute path.
    Paths,
    /// open + close of /etc/hostname: starts like the watched paths (/etc)
    /// and matches none, the dearest open the watched-path check filters
    /// out.
    OpenEtcUnwatched,
    /// open + close of /etc/passwd, a watched path: a 609 per open.
    OpenWatched,
    /// open + close of the C library the benchmark itself runs with (under
    /// /usr/lib, as every dynamic exec opens it): starts like a watched
    /// path (/usr/lib/systemd/system/), in a directory no pattern can match
    /// below, whose verdict the kernel keeps.
    OpenLibrary,
    /// umount2 of a directory that is no mount point and pivot_root to
    /// one (both EINVAL): the two programs that only drop the watched-path
    /// verdicts, in their filtered-out case.
    UmountRefused,
    /// A child that drops to uid 65534 keeping saved uid 0 forks a
    /// grandchild that takes root back and exits: a 604 and a 611 at its
    /// exit (root only).
    Regain,
    /// chmod, fchmodat, fchmod, chown, fchownat, fchown of an unwatched
    /// file, no set-id bit, nothing changed: the chmod and chown programs'
    /// filtered-out case (a name read and matched, or a descriptor's file
    /// walked and matched), and fchmod's entry program.
    ModeOwner,
}

impl Kind {
    /// Every workload, in report order.
    pub const ALL: [Kind; 24] = [
        Kind::Exec,
        Kind::ForkExec,
        Kind::Connect,
        Kind::Dns,
        Kind::FileCreate,
        Kind::OpenExisting,
        Kind::Getppid,
        Kind::Mount,
        Kind::Setns,
        Kind::BpfFiltered,
        Kind::Bind,
        Kind::AcceptEmpty,
        Kind::SignalSelf,
        Kind::SignalOther,
        Kind::MmapLibrary,
        Kind::MmapExec,
        Kind::MemfdRename,
        Kind::Paths,
        Kind::OpenEtcUnwatched,
        Kind::OpenWatched,
        Kind::OpenLibrary,
        Kind::UmountRefused,
        Kind::Regain,
        Kind::ModeOwner,
    ];

    /// Its name on the command line (`--workloads getppid,open-existing`).
    pub fn id(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::ForkExec => "fork-exec",
            Kind::Connect => "connect",
            Kind::Dns => "dns",
            Kind::FileCreate => "file-create",
            Kind::OpenExisting => "open-existing",
            Kind::Getppid => "getppid",
            Kind::Mount => "mount",
            Kind::Setns => "setns",
            Kind::BpfFiltered => "bpf-filtered",
            Kind::Bind => "bind",
            Kind::AcceptEmpty => "accept-empty",
            Kind::SignalSelf => "signal-self",
            Kind::SignalOther => "signal-other",
            Kind::MmapLibrary => "mmap-library",
            Kind::MmapExec => "mmap-exec",
            Kind::MemfdRename => "memfd-rename",
            Kind::Paths => "paths",
            Kind::OpenEtcUnwatched => "open-etc-unwatched",
            Kind::OpenWatched => "open-watched",
            Kind::OpenLibrary => "open-library",
            Kind::UmountRefused => "umount-refused",
            Kind::Regain => "regain",
            Kind::ModeOwner => "mode-owner",
        }
    }

    /// Short name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec storm (spawn /bin/true)",
            Kind::ForkExec => "fork-then-exec storm (fork, execve /bin/true)",
            Kind::Connect => "connect storm (TCP connect+close)",
            Kind::Dns => "DNS storm (UDP query+recvfrom)",
            Kind::FileCreate => "file-create storm (create+unlink)",
            Kind::OpenExisting => "open existing file (open+close)",
            Kind::Getppid => "null syscall (getppid)",
            Kind::Mount => "refused mount(2)",
            Kind::Setns => "setns into own netns + unshare(0)",
            Kind::BpfFiltered => "bpf(MAP_LOOKUP_ELEM), filtered out",
            Kind::Bind => "bind storm (UDP socket+bind+close)",
            Kind::AcceptEmpty => "accept with nothing queued (EAGAIN)",
            Kind::SignalSelf => "signal to self (kill SIGURG)",
            Kind::SignalOther => "signal to another process (kill SIGURG)",
            Kind::MmapLibrary => "library mapping (mmap r-x+mprotect r--+munmap)",
            Kind::MmapExec => "code in memory (mmap rwx+mprotect r-x+munmap)",
            Kind::MemfdRename => "memfd_create+close, prctl(PR_SET_NAME)",
            Kind::Paths => "path storm (rename/link/symlink/unlink/rmdir)",
            Kind::OpenEtcUnwatched => "open unwatched file under /etc (open+close)",
            Kind::OpenWatched => "open watched file /etc/passwd (open+close)",
            Kind::OpenLibrary => "open the C library under /usr/lib (open+close)",
            Kind::UmountRefused => "refused umount2 + pivot_root (EINVAL)",
            Kind::Regain => "root regained by a grandchild (fork x2, 611)",
            Kind::ModeOwner => "mode/owner unchanged, unwatched (chmod/chown x3 each)",
        }
    }

    /// Operations per measurement: long enough to swamp timer noise.
    pub fn iterations(self, quick: bool) -> u64 {
        let (full, q) = match self {
            Kind::Exec => (2_000, 100),
            Kind::ForkExec => (2_000, 100),
            Kind::Connect => (20_000, 1_000),
            Kind::Dns => (20_000, 1_000),
            Kind::FileCreate => (20_000, 1_000),
            Kind::OpenExisting => (200_000, 5_000),
            Kind::Getppid => (2_000_000, 100_000),
            Kind::Mount => (20_000, 1_000),
            Kind::Setns => (20_000, 1_000),
            Kind::BpfFiltered => (200_000, 5_000),
            Kind::Bind => (20_000, 1_000),
            Kind::AcceptEmpty => (200_000, 5_000),
            Kind::SignalSelf => (200_000, 5_000),
            Kind::SignalOther => (20_000, 1_000),
            Kind::MmapLibrary => (200_000, 5_000),
            Kind::MmapExec => (20_000, 1_000),
            Kind::MemfdRename => (20_000, 1_000),
            Kind::Paths => (5_000, 300),
            Kind::OpenEtcUnwatched => (200_000, 5_000),
            Kind::OpenWatched => (20_000, 1_000),
            Kind::OpenLibrary => (200_000, 5_000),
            Kind::UmountRefused => (20_000, 1_000),
            Kind::Regain => (2_000, 100),
            Kind::ModeOwner => (20_000, 1_000),
        };
        if quick {
            q
        } else {
            full
        }
    }
}

/// The C library this process runs with, from its own mappings.
fn own_libc() -> Result<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(PathBuf::from)
        .context("this process maps no C library (a static build?)")
}

/// The local services the workloads talk to, alive for the whole run.
pub struct Env {
    pub tcp: SocketAddr,
    pub dns: SocketAddr,
    pub dir: PathBuf,
    pub existing: PathBuf,
    stop: Option<Arc<AtomicBool>>,
}

/// Ports given to this benchmark (127.0.0.1:18600..18699).
pub const TCP_PORT: u16 = 18600;

impl Env {
    /// Starts the TCP listener and the DNS responder and makes the scratch
    /// directory.
    pub fn start(dir: &Path) -> Result<Env> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = (TCP_PORT..TCP_PORT + 20)
            .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .context("no free TCP port in 127.0.0.1:18600..18619")?;
        let tcp = listener.local_addr()?;
        {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-listener".into())
                .spawn(move || {
                    let _pin = Pin::workload_cpu();
                    for s in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        drop(s);
                    }
                })?;
        }
        // The agent's DNS probe copies only datagrams from port 53.
        let candidates = ["127.0.0.3:53", "127.0.86.53:53", "127.0.87.53:53"];
        let sock = candidates
            .iter()
            .find_map(|a| UdpSocket::bind(a).ok())
            .with_context(|| format!("cannot bind a DNS responder on any of {candidates:?}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let dns = sock.local_addr()?;
        {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-dns".into())
                .spawn(move || {
                    let _pin = Pin::workload_cpu();
                    responder(sock, stop)
                })?;
        }
        let dir = dir.join("files");
        std::fs::create_dir_all(&dir)?;
        let existing = dir.join("existing");
        std::fs::write(&existing, b"kestrel bench\n")?;
        Ok(Env {
            tcp,
            dns,
            dir,
            existing,
            stop: Some(stop),
        })
    }

    /// The services of another process's `Env` (a worker's view).
    pub fn remote(tcp: SocketAddr, dns: SocketAddr, dir: PathBuf, existing: PathBuf) -> Env {
        Env {
            tcp,
            dns,
            dir,
            existing,
            stop: None,
        }
    }

    /// Runs `n` operations of `kind`; returns ns per operation.
    pub fn measure(&self, kind: Kind, n: u64) -> Result<f64> {
        let t = Instant::now();
        self.run(kind, n, None)?;
        Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
    }

    /// Runs `n` operations of `kind`, at most `rate` per second if given.
    pub fn run(&self, kind: Kind, n: u64, rate: Option<f64>) -> Result<()> {
        let _pin = Pin::workload_cpu();
        let start = Instant::now();
        let mut op = self.op(kind)?;
        for i in 0..n {
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / r);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            op(i)?;
        }
        Ok(())
    }

    /// TCP connect to the listener, close with RST. With `wait`, first
    /// waits until the listener has accepted and closed the connection (the
    /// overhead and hook storms); without, as fast as one thread can
    /// connect (the pipeline's live load, which needs 10,000 a second).
    pub fn connect_op(&self, wait: bool) -> Box<dyn FnMut(u64) -> Result<()> + '_> {
        Box::new(move |_| {
            let s = TcpStream::connect(self.tcp).context("connecting to the listener")?;
            // Linger 0: close sends RST, so no TIME_WAIT piles up and
            // ephemeral ports never run out.
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: valid socket fd and a linger struct of the right size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &l as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                )
            };
            if !wait {
                return Ok(());
            }
            // Wait for the listener to accept and close it (EOF):
            // otherwise a client that outruns the listener on their
            // shared CPU overflows the accept queue, the SYN is dropped
            // and connect() waits a second for its retransmission, which
            // made this storm's figures swing by 3x between runs. read(2),
            // not recv: nothing of Kestrel's runs on it.
            let mut b = [0u8; 1];
            loop {
                // SAFETY: valid socket fd, a one-byte buffer.
                let n = unsafe { libc::read(s.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                if n == 0 {
                    break;
                }
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e).context("waiting for the listener to close");
                }
            }
            Ok(())
        })
    }

    /// One round of every path syscall on one file of the scratch
    /// directory, leaving it as it found it.
    fn mode_owner_op(&self) -> Result<Box<dyn FnMut(u64) -> Result<()> + '_>> {
        let dir = self.dir.join("modes");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("f");
        std::fs::write(&file, b"")?;
        let mut path = file.into_os_string().into_vec();
        path.push(0);
        let open = std::fs::File::open(&dir)?;
        let f = std::fs::File::open(dir.join("f"))?;
        let (at, fd) = (
            open.as_raw_fd() as libc::c_long,
            f.as_raw_fd() as libc::c_long,
        );
        let name = c"f".as_ptr() as libc::c_long;
        Ok(Box::new(move |_| {
            let _open = (&open, &f);
            let p = path.as_ptr() as libc::c_long;
            // Owner -1 and -1: nothing changes, every call succeeds.
            let keep = -1 as libc::c_long;
            let calls: [(libc::c_long, [libc::c_long; 5]); 6] = [
                (libc::SYS_chmod, [p, 0o644, 0, 0, 0]),
                (libc::SYS_fchmodat, [at, name, 0o644, 0, 0]),
                (libc::SYS_fchmod, [fd, 0o644, 0, 0, 0]),
                (libc::SYS_chown, [p, keep, keep, 0, 0]),
                (libc::SYS_fchownat, [at, name, keep, keep, 0]),
                (libc::SYS_fchown, [fd, keep, keep, 0, 0]),
            ];
            for (nr, a) in calls {
                // SAFETY: NUL-terminated paths and descriptors owned here.
                if unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("mode/owner syscall {nr}"));
                }
            }
            Ok(())
        }))
    }

    fn paths_op(&self) -> Result<Box<dyn FnMut(u64) -> Result<()> + '_>> {
        let dir = self.dir.join("paths");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("f"), b"")?;
        let name = |n: &str| {
            let mut p = dir.join(n).into_os_string().into_vec();
            p.push(0);
            p
        };
        let [f, g, h, s, d] = ["f", "g", "h", "s", "d"].map(name);
        let [rf, rg, rh, rk, rt, rd] = ["f", "g", "h", "k", "t", "d"].map(|n| format!("{n}\0"));
        let dirfd = std::fs::File::open(&dir)?;
        let at = dirfd.as_raw_fd() as libc::c_long;
        Ok(Box::new(move |_| {
            let _open = &dirfd;
            let p = |v: &Vec<u8>| v.as_ptr() as libc::c_long;
            let r = |v: &String| v.as_ptr() as libc::c_long;
            let calls: [(libc::c_long, [libc::c_long; 5]); 13] = [
                (libc::SYS_rename, [p(&f), p(&g), 0, 0, 0]),
                (libc::SYS_renameat, [at, r(&rg), at, r(&rf), 0]),
                (libc::SYS_renameat2, [at, r(&rf), at, r(&rg), 0]),
                (libc::SYS_link, [p(&g), p(&h), 0, 0, 0]),
                (libc::SYS_linkat, [at, r(&rh), at, r(&rk), 0]),
                (libc::SYS_symlink, [p(&g), p(&s), 0, 0, 0]),
                (libc::SYS_symlinkat, [p(&g), at, r(&rt), 0, 0]),
                (libc::SYS_unlink, [p(&h), 0, 0, 0, 0]),
                (libc::SYS_unlinkat, [at, r(&rk), 0, 0, 0]),
                (libc::SYS_unlink, [p(&s), 0, 0, 0, 0]),
                (libc::SYS_unlinkat, [at, r(&rt), 0, 0, 0]),
                (libc::SYS_mkdir, [p(&d), 0o700, 0, 0, 0]),
                (libc::SYS_rmdir, [p(&d), 0, 0, 0, 0]),
            ];
            for (nr, a) in calls {
                // SAFETY: every pointer is a NUL-terminated path owned here.
                if unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("path syscall {nr}"));
                }
            }
            // Back to the start, and unlinkat's AT_REMOVEDIR form.
            // SAFETY: as above.
            unsafe {
                libc::syscall(libc::SYS_rename, p(&g), p(&f));
                libc::syscall(libc::SYS_mkdir, p(&d), 0o700);
                if libc::syscall(libc::SYS_unlinkat, at, r(&rd), libc::AT_REMOVEDIR) != 0 {
                    return Err(std::io::Error::last_os_error()).context("unlinkat AT_REMOVEDIR");
                }
            }
            Ok(())
        }))
    }

    /// One operation of `kind` as a closure (set-up done once).
    pub fn op(&self, kind: Kind) -> Result<Box<dyn FnMut(u64) -> Result<()> + '_>> {
        Ok(match kind {
            Kind::Exec => Box::new(|_| {
                let st = std::process::Command::new("/bin/true")
                    .status()
                    .context("spawning /bin/true")?;
                if !st.success() {
                    bail!("/bin/true failed: {st}");
                }
                Ok(())
            }),
            Kind::Connect => self.connect_op(true),
            Kind::Dns => {
                let sock = UdpSocket::bind((self.dns.ip(), 0))?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut q = query(0);
                let mut buf = [0u8; 512];
                Box::new(move |i| {
                    let id = (i & 0xffff) as u16;
                    q[..2].copy_from_slice(&id.to_be_bytes());
                    sock.send_to(&q, self.dns)?;
                    // std's recv_from is recvfrom(2): the syscall whose exit
                    // the agent's DNS probe watches.
                    let (n, _) = sock
                        .recv_from(&mut buf)
                        .context("no reply from the DNS responder")?;
                    if n < 12 || buf[..2] != id.to_be_bytes() {
                        bail!("unexpected DNS reply");
                    }
                    Ok(())
                })
            }
            Kind::FileCreate => {
                let base = self.dir.join("c").into_os_string();
                Box::new(move |i| {
                    let mut p = base.as_bytes().to_vec();
                    p.extend_from_slice(format!("{i}\0").as_bytes());
                    // SAFETY: p is NUL-terminated.
                    let fd = unsafe {
                        libc::open(
                            p.as_ptr().cast(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o600,
                        )
                    };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error()).context("creating a file");
                    }
                    // SAFETY: fd was just opened; p is NUL-terminated.
                    unsafe {
                        libc::close(fd);
                        libc::unlink(p.as_ptr().cast());
                    }
                    Ok(())
                })
            }
            Kind::OpenExisting | Kind::OpenEtcUnwatched | Kind::OpenWatched | Kind::OpenLibrary => {
                let mut p = match kind {
                    Kind::OpenEtcUnwatched => b"/etc/hostname".to_vec(),
                    Kind::OpenWatched => b"/etc/passwd".to_vec(),
                    Kind::OpenLibrary => own_libc()?.into_os_string().into_vec(),
                    _ => self.existing.as_os_str().as_bytes().to_vec(),
                };
                p.push(0);
                Box::new(move |_| {
                    // SAFETY: p is NUL-terminated.
                    let fd =
                        unsafe { libc::open(p.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error()).context("opening a file");
                    }
                    // SAFETY: fd was just opened.
                    unsafe { libc::close(fd) };
                    Ok(())
                })
            }
            Kind::Paths => self.paths_op()?,
            Kind::ModeOwner => self.mode_owner_op()?,
            Kind::Regain => Box::new(|_| regain()),
            Kind::ForkExec => {
                let path = CString::new("/bin/true").unwrap();
                Box::new(move |_| fork_exec(&path))
            }
            Kind::Getppid => Box::new(|_| {
                // SAFETY: getppid takes no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
                Ok(())
            }),
            Kind::UmountRefused => {
                let d = CString::new(self.dir.as_os_str().as_bytes())?;
                Box::new(move |_| {
                    // SAFETY: NUL-terminated paths; both calls fail (EINVAL:
                    // not a mount point, not a mount root).
                    let (u, p) = unsafe {
                        (
                            libc::umount2(d.as_ptr(), 0),
                            libc::syscall(libc::SYS_pivot_root, d.as_ptr(), d.as_ptr()),
                        )
                    };
                    if u == 0 || p == 0 {
                        bail!("umount2 or pivot_root of the scratch directory succeeded");
                    }
                    Ok(())
                })
            }
            Kind::Mount => Box::new(|_| {
                // SAFETY: NUL-terminated strings; the call fails (ENOENT).
                let r = unsafe {
                    libc::mount(
                        c"kestrel-bench".as_ptr(),
                        c"/nonexistent-kestrel-bench".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                };
                if r == 0 {
                    bail!("mount on a missing directory succeeded");
                }
                Ok(())
            }),
            Kind::Setns => {
                let ns = std::fs::File::open("/proc/self/ns/net").context("opening the netns")?;
                let fd = ns.as_raw_fd();
                Box::new(move |_| {
                    let _keep = &ns;
                    // SAFETY: fd is open; joining one's own namespace and
                    // unsharing nothing change nothing.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0
                        || unsafe { libc::unshare(0) } != 0
                    {
                        return Err(std::io::Error::last_os_error()).context("setns/unshare");
                    }
                    Ok(())
                })
            }
            Kind::Bind => Box::new(|_| {
                UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
                Ok(())
            }),
            Kind::AcceptEmpty => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                l.set_nonblocking(true)?;
                Box::new(move |_| match l.accept() {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(e).context("accept on an empty listener"),
                    Ok(_) => bail!("an empty listener accepted a connection"),
                })
            }
            Kind::SignalSelf => Box::new(|_| {
                // SAFETY: SIGURG is ignored unless handled; this process
                // does not handle it.
                if unsafe { libc::kill(libc::getpid(), libc::SIGURG) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("kill(self)");
                }
                Ok(())
            }),
            Kind::SignalOther => {
                let child = Sleeper::start()?;
                Box::new(move |_| {
                    // SAFETY: the child is alive (killed when `child` drops)
                    // and sleep(1) ignores SIGURG.
                    if unsafe { libc::kill(child.0.id() as i32, libc::SIGURG) } != 0 {
                        return Err(std::io::Error::last_os_error()).context("kill(child)");
                    }
                    Ok(())
                })
            }
            Kind::MmapLibrary => {
                let file = std::fs::File::open(&self.existing)?;
                Box::new(move |_| {
                    let fd = file.as_raw_fd();
                    // SAFETY: a fresh private mapping of an open file,
                    // unmapped before the closure returns.
                    unsafe {
                        let p = libc::mmap(
                            std::ptr::null_mut(),
                            4096,
                            libc::PROT_READ | libc::PROT_EXEC,
                            libc::MAP_PRIVATE,
                            fd,
                            0,
                        );
                        if p == libc::MAP_FAILED {
                            return Err(std::io::Error::last_os_error()).context("mmap");
                        }
                        libc::mprotect(p, 4096, libc::PROT_READ);
                        libc::munmap(p, 4096);
                    }
                    Ok(())
                })
            }
            Kind::MmapExec => Box::new(|_| {
                // SAFETY: a fresh anonymous mapping, unmapped before return.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        return Err(std::io::Error::last_os_error()).context("mmap");
                    }
                    libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
                    libc::munmap(p, 4096);
                }
                Ok(())
            }),
            Kind::MemfdRename => Box::new(|_| {
                // SAFETY: NUL-terminated names; the descriptor is closed.
                unsafe {
                    let fd = libc::memfd_create(c"kestrel-bench".as_ptr(), libc::MFD_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error()).context("memfd_create");
                    }
                    libc::close(fd);
                    libc::prctl(libc::PR_SET_NAME, c"kestrel-bench".as_ptr());
                }
                Ok(())
            }),
            Kind::BpfFiltered => Box::new(|_| {
                let attr = [0u8; 32];
                // SAFETY: a zeroed attr of its size; fails with EBADF.
                unsafe { libc::syscall(libc::SYS_bpf, 1, attr.as_ptr(), attr.len()) };
                Ok(())
            }),
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
            // Wake the listener so it sees `stop`.
            let _ = TcpStream::connect(self.tcp).map(|mut s| s.read(&mut [0u8; 1]));
        }
    }
}

/// A sleep(1) child to send signals to, killed when dropped.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Result<Sleeper> {
        let c = std::process::Command::new("sleep")
            .arg("3600")
            .spawn()
            .context("spawning sleep")?;
        Ok(Sleeper(c))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `Kind::ForkExec` operation: the child only execs (the benchmark
/// has other threads, so nothing that allocates or locks after fork).
fn fork_exec(path: &CString) -> Result<()> {
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: fork, then only execve and _exit in the child; argv and envp
    // are NULL-terminated arrays of valid strings made before the fork.
    unsafe {
        let c = libc::fork();
        if c < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if c == 0 {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        let mut st = 0;
        libc::waitpid(c, &mut st, 0);
        if st != 0 {
            bail!("the fork-then-exec child failed (status {st})");
        }
    }
    Ok(())
}

/// One `Kind::Regain` operation. The children make raw syscalls only (the
/// benchmark has other threads).
fn regain() -> Result<()> {
    // SAFETY: fork, then only async-signal-safe calls in the children.
    unsafe {
        let a = libc::fork();
        if a < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if a == 0 {
            if libc::setresuid(65534, 65534, 0) != 0 {
                libc::_exit(1);
            }
            let b = libc::fork();
            if b == 0 {
                libc::_exit(if libc::setresuid(0, 0, 0) == 0 { 0 } else { 1 });
            }
            let mut st = 0;
            libc::waitpid(b, &mut st, 0);
            libc::_exit(if b > 0 && st == 0 { 0 } else { 1 });
        }
        let mut st = 0;
        libc::waitpid(a, &mut st, 0);
        if st != 0 {
            bail!("the regain workload's children failed (status {st}): run as root");
        }
    }
    Ok(())
}

/// An A query for "bench.kestrel.test" with id 0, recursion desired.
fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["bench", "kestrel", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers every query with one A record, 192.0.2.1 (documentation range).
fn responder(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n < 17 {
            continue;
        }
        let mut a = buf[..n].to_vec();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let _ = sock.send_to(&a, peer);
    }
}
