//! File creations (602) in lean mode (`--syscall-tracepoints off`), from
//! fanotify rather than the open/creat/mknod/linkat syscall tracepoints:
//! fanotify's hooks are in the VFS, so watching costs nothing to the
//! syscalls that create nothing.
//!
//! One fanotify group reports FAN_CREATE of files (FAN_ONDIR is left out,
//! as the BPF side reports no mkdir) with FAN_REPORT_DFID_NAME: each event
//! names its directory by file handle and the new entry by name, and the
//! handle is opened with open_by_handle_at to find the directory's path.
//! Marks are on whole filesystems (FAN_MARK_FILESYSTEM), one per mounted
//! superblock, so that every mount and bind mount of it is covered.
//!
//! The event carries the creator's process id and nothing else about it:
//! the rest of the task is read from /proc/PID when the event is read
//! (docs/events.md, 602, says which fields are approximate). nix's
//! fanotify wrapper reads the event metadata only, not the info records
//! that carry the handle and the name, hence libc here.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use crossbeam_channel::{Receiver, Sender};
use kestrel_decode::{FileCreate, Record, Task};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// What the fanotify group reads at a time.
const READ_BYTES: usize = 64 << 10;

/// An fsid, as fanotify's info records and statfs give it.
type Fsid = [i32; 2];

/// The fanotify group and what it needs to turn its events into records.
pub struct FanCreate {
    group: OwnedFd,
    /// Per marked filesystem, a directory of it to open handles against.
    mounts: HashMap<Fsid, OwnedFd>,
    buf: Vec<u8>,
    self_pid: u32,
    ns_per_tick: u64,
    uts_ns: u64,
    nodename: Vec<u8>,
    stats: Arc<FanStats>,
    last_warning: Option<Instant>,
}

/// What the fanotify thread counts.
#[derive(Debug, Default)]
pub struct FanStats {
    /// Records made.
    pub made: AtomicU64,
    /// Times the fanotify queue overflowed (FAN_Q_OVERFLOW): creations
    /// lost, how many unknown.
    pub overflows: AtomicU64,
    /// Events whose directory handle no longer opened or whose
    /// filesystem is not one the group marked.
    pub unresolved: AtomicU64,
}

/// The running fanotify thread: its records, in creation order.
pub struct FanSource {
    pub records: Receiver<Record>,
    pub stats: Arc<FanStats>,
    thread: std::thread::JoinHandle<()>,
}

impl FanSource {
    /// Waits for the thread, which ends once `stop` is set, after one
    /// last read of what is queued, and hands every record left to
    /// `each` meanwhile (the thread may wait for room in the queue).
    pub fn finish(self, mut each: impl FnMut(&Receiver<Record>)) -> Arc<FanStats> {
        while !self.thread.is_finished() {
            each(&self.records);
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        each(&self.records);
        self.stats
    }
}

/// One line of /proc/self/mountinfo, as far as marking needs it.
struct Mount {
    dev: String,
    root: String,
    point: PathBuf,
    fstype: String,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            Some(Mount {
                dev: f.get(2)?.to_string(),
                root: f.get(3)?.to_string(),
                point: PathBuf::from(OsStr::from_bytes(&unescape(f.get(4)?))),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

fn fsid_of(fd: &OwnedFd) -> io::Result<Fsid> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fd is open and st is large enough for statfs to fill.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so st is initialized; fsid_t is two ints
    // whose fields libc keeps private.
    let st = unsafe { st.assume_init() };
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, Fsid>(st.f_fsid) })
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: c is a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why marking failed, with what it means for this filesystem.
fn mark_error(e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ENODEV) => "it has no fsid (fanotify cannot name its files)",
        Some(libc::EOPNOTSUPP) => "it cannot encode file handles",
        Some(libc::EXDEV) => "its fsid is not unique (a subvolume or a shared fsid)",
        Some(libc::EINVAL) => "fanotify refuses filesystem marks on it",
        _ => "",
    };
    if why.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {why}")
    }
}

impl FanCreate {
    /// Makes the group and marks every mounted filesystem but those
    /// mounted under a directory in `excluded` (their creations would be
    /// dropped anyway). Fails if fanotify is missing or `/` cannot be
    /// marked: lean mode would then see no file creation at all.
    pub fn start(excluded: &[PathBuf], stats: Arc<FanStats>) -> Result<Self> {
        // SAFETY: fanotify_init takes flags only.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            bail!(
                "lean mode's file creations need fanotify with FAN_REPORT_DFID_NAME (Linux 5.9, \
                 CONFIG_FANOTIFY), and fanotify_init failed: {e}; run with \
                 --syscall-tracepoints on to see file creations through the syscall tracepoints"
            );
        }
        // SAFETY: fd was just made and is owned by nothing else.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let text = std::fs::read_to_string(MOUNTINFO)
            .map_err(|e| anyhow::anyhow!("reading {MOUNTINFO}: {e}"))?;
        let mut mounts = parse_mountinfo(&text);
        // A filesystem's handles open against any of its mounts, but its
        // paths are only whole through a mount of its root.
        mounts.sort_by_key(|m| m.root != "/");
        let mut by_dev = HashSet::new();
        let mut marked = Vec::new();
        let mut failed = Vec::new();
        let mut skipped = Vec::new();
        let mut fds = HashMap::new();
        for m in &mounts {
            if !by_dev.insert(m.dev.clone()) {
                continue;
            }
            if excluded.iter().any(|d| m.point.starts_with(d)) {
                skipped.push(m.point.display().to_string());
                continue;
            }
            let r = open_dir(&m.point).and_then(|dir| {
                // A mount covered by a later one on the same point is
                // reached only through the one on top: that one's turn.
                let st = std::fs::metadata(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
                let here = format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev()));
                if here != m.dev {
                    return Ok(None);
                }
                // SAFETY: group and dir are open; a null path marks dir.
                let rc = unsafe {
                    libc::fanotify_mark(
                        group.as_raw_fd(),
                        libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                        libc::FAN_CREATE,
                        dir.as_raw_fd(),
                        std::ptr::null(),
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Some((fsid_of(&dir)?, dir)))
            });
            match r {
                // Another mount of the same filesystem may be reachable.
                Ok(None) => {
                    by_dev.remove(&m.dev);
                }
                Ok(Some((fsid, dir))) => {
                    fds.entry(fsid).or_insert(dir);
                    marked.push(format!("{} ({})", m.point.display(), m.fstype));
                }
                Err(e) => {
                    if m.point == Path::new("/") {
                        bail!(
                            "lean mode cannot watch file creations on / ({}): {}; run with \
                             --syscall-tracepoints on",
                            m.fstype,
                            mark_error(&e)
                        );
                    }
                    failed.push(format!(
                        "{} ({}): {}",
                        m.point.display(),
                        m.fstype,
                        mark_error(&e)
                    ));
                }
            }
        }
        if !marked.iter().any(|m| m.starts_with("/ (")) {
            bail!("lean mode found no / in {MOUNTINFO} to watch file creations on");
        }
        tracing::info!(
            filesystems = marked.len(),
            marked = %marked.join(", "),
            "lean mode: file creations (602) watched with fanotify"
        );
        if !skipped.is_empty() {
            tracing::info!(
                mounts = %skipped.join(", "),
                "lean mode: filesystems under an excluded directory not watched"
            );
        }
        if !failed.is_empty() {
            tracing::warn!(
                filesystems = failed.len(),
                unwatched = %failed.join("; "),
                "lean mode: these filesystems could not be marked: files created on them are \
                 not seen (use --syscall-tracepoints on to see them)"
            );
        }
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let uts_ns = std::fs::metadata("/proc/self/ns/uts")
            .map(|m| m.ino())
            .unwrap_or(0);
        Ok(FanCreate {
            group,
            mounts: fds,
            buf: vec![0; READ_BYTES],
            self_pid: std::process::id(),
            ns_per_tick: 1_000_000_000 / ticks,
            uts_ns,
            nodename: nodename(),
            stats,
            last_warning: None,
        })
    }

    /// Reads events on a thread of its own, so that the creator's /proc
    /// entry is read as soon as the event is, before a short-lived
    /// creator is gone; the records wait in a queue of `queue` for the
    /// collecting thread, and when it is full the kernel's queue fills
    /// and overflows (counted) rather than the agent's memory growing.
    pub fn spawn(mut self, queue: usize, stop: Arc<AtomicBool>) -> Result<FanSource> {
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let stats = self.stats.clone();
        let thread = std::thread::Builder::new()
            .name("kestrel-fanotify".into())
            .spawn(move || {
                let mut fds = libc::pollfd {
                    fd: self.group.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    // SAFETY: fds is one valid pollfd.
                    unsafe { libc::poll(&mut fds, 1, 200) };
                    if self.drain(&tx).is_err() || stopping {
                        return;
                    }
                }
            })?;
        Ok(FanSource {
            records: rx,
            stats,
            thread,
        })
    }

    /// Reads every event queued and sends its records. Never blocks on
    /// the group; Err when the receiving side is gone.
    fn drain(&mut self, tx: &Sender<Record>) -> Result<(), ()> {
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::read(
                    self.group.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n < 0 && !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    self.warn(|| tracing::warn!(error = %e, "reading fanotify events failed"));
                }
                return Ok(());
            }
            let buf = std::mem::take(&mut self.buf);
            let recs = self.records(&buf[..n as usize]);
            self.buf = buf;
            for r in recs {
                self.stats.made.fetch_add(1, Ordering::Relaxed);
                tx.send(r).map_err(|_| ())?;
            }
        }
    }

    /// The records of one read's events.
    fn records(&mut self, buf: &[u8]) -> Vec<Record> {
        let mut recs = Vec::new();
        let mut off = 0;
        while off + 24 <= buf.len() {
            let ev = &buf[off..];
            let len = u32::from_ne_bytes(ev[0..4].try_into().unwrap()) as usize;
            if len < 24 || len > ev.len() || ev[4] != libc::FANOTIFY_METADATA_VERSION {
                self.warn(|| {
                    tracing::warn!(
                        "a fanotify event this agent cannot read (another metadata version?): \
                         the rest of the read is dropped"
                    )
                });
                break;
            }
            if let Some(r) = self.record(&ev[..len]) {
                recs.push(r);
            }
            off += len;
        }
        recs
    }

    /// The record of one event, None for one not reported.
    fn record(&mut self, ev: &[u8]) -> Option<Record> {
        let meta_len = u16::from_ne_bytes(ev[6..8].try_into().unwrap()) as usize;
        let mask = u64::from_ne_bytes(ev[8..16].try_into().unwrap());
        let pid = i32::from_ne_bytes(ev[20..24].try_into().unwrap()) as u32;
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            self.stats.overflows.fetch_add(1, Ordering::Relaxed);
            self.warn(|| {
                tracing::warn!(
                    "the fanotify queue overflowed: file creations were lost (counted in \
                     kestrel_fanotify_overflows_total and in the exit log)"
                )
            });
            return None;
        }
        if mask & libc::FAN_CREATE == 0 || mask & libc::FAN_ONDIR != 0 || pid == self.self_pid {
            return None;
        }
        let mut off = meta_len;
        while off + 4 <= ev.len() {
            let info = &ev[off..];
            let (kind, len) = (info[0], u16::from_ne_bytes([info[2], info[3]]) as usize);
            if len < 4 || len > info.len() {
                return None;
            }
            if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                let r = self.resolve(&info[..len], pid);
                if r.is_none() {
                    self.stats.unresolved.fetch_add(1, Ordering::Relaxed);
                }
                return r.flatten();
            }
            off += len;
        }
        None
    }

    /// Some(None): resolved and not reported (a symlink, a directory).
    /// Exclusions are the collecting thread's to apply: it owns their
    /// list, which the control server's commands change.
    fn resolve(&self, info: &[u8], pid: u32) -> Option<Option<Record>> {
        let fsid: Fsid = [
            i32::from_ne_bytes(info.get(4..8)?.try_into().ok()?),
            i32::from_ne_bytes(info.get(8..12)?.try_into().ok()?),
        ];
        let hbytes = u32::from_ne_bytes(info.get(12..16)?.try_into().ok()?) as usize;
        let handle = info.get(12..20 + hbytes)?;
        let name = CStr::from_bytes_until_nul(info.get(20 + hbytes..)?).ok()?;
        let mount = self.mounts.get(&fsid)?;
        // file_handle wants its ints aligned: copy into u32s.
        let mut h = vec![0u32; handle.len().div_ceil(4)];
        // SAFETY: h holds at least handle.len() bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(handle.as_ptr(), h.as_mut_ptr().cast(), handle.len())
        };
        // SAFETY: h is a file_handle whose handle_bytes matches its length.
        let dfd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                h.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if dfd < 0 {
            return None;
        }
        // SAFETY: dfd was just opened and is owned by nothing else.
        let dir = unsafe { OwnedFd::from_raw_fd(dfd) };
        let mut path = std::fs::read_link(format!("/proc/self/fd/{dfd}"))
            .ok()?
            .into_os_string()
            .into_vec();
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: dir is open, name NUL-terminated, st large enough.
        let statted = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0;
        // SAFETY: fstatat filled st when it succeeded.
        let (mode, nlink) = if statted {
            let st = unsafe { st.assume_init() };
            (st.st_mode, st.st_nlink)
        } else {
            (0, 0)
        };
        let fmt = mode & libc::S_IFMT;
        // A symlink is a link event (86) and a directory is no creation in
        // the default mode: lean mode reports neither as 602.
        if fmt == libc::S_IFLNK || fmt == libc::S_IFDIR {
            return Some(None);
        }
        let regular = fmt == libc::S_IFREG || mode == 0;
        Some(Some(Record::File(FileCreate {
            ktime_ns: kestrel_event::host::clock_ns(libc::CLOCK_BOOTTIME) as u64,
            task: self.task(pid),
            res: 0,
            path,
            path_truncated: false,
            tmpfile: false,
            mknod: !regular,
            // A second name of an existing file (link(2)): the default
            // mode reports it as a link event, not as a creation.
            linked: regular && nlink > 1,
            mode,
        })))
    }

    /// What /proc says of process `pid` now; a process already gone gets
    /// its pid alone, and ids of u32::MAX (unknown, not root).
    fn task(&self, pid: u32) -> Task {
        let mut t = Task {
            pid,
            tgid: pid,
            sessionid: u32::MAX,
            uid: u32::MAX,
            euid: u32::MAX,
            gid: u32::MAX,
            egid: u32::MAX,
            ..Task::default()
        };
        let dir = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(stat) = std::fs::read(dir.join("stat")) {
            if let (Some(a), Some(b)) = (
                stat.iter().position(|&c| c == b'('),
                stat.iter().rposition(|&c| c == b')'),
            ) {
                t.comm = stat[a + 1..b].to_vec();
                let rest = String::from_utf8_lossy(&stat[b + 1..]).into_owned();
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                t.ppid = num(1) as u32;
                t.pgid = num(2) as u32;
                t.sid = num(3) as u32;
                t.start_boottime = num(19) * self.ns_per_tick;
            }
        }
        if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
            for l in status.lines() {
                let ids = |l: &str| -> Vec<u32> {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect()
                };
                if l.starts_with("Uid:") {
                    if let [r, e, ..] = ids(l)[..] {
                        (t.uid, t.euid) = (r, e);
                    }
                } else if l.starts_with("Gid:") {
                    if let [r, e, ..] = ids(l)[..] {
                        (t.gid, t.egid) = (r, e);
                    }
                } else if l.starts_with("NSpid:") {
                    t.ns_pid = ids(l).last().copied().unwrap_or(pid);
                }
            }
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("sessionid")) {
            t.sessionid = s.trim().parse().unwrap_or(u32::MAX);
        }
        let ns = |n: &str| {
            std::fs::metadata(dir.join("ns").join(n))
                .map(|m| m.ino())
                .unwrap_or(0)
        };
        t.pid_ns = ns("pid") as u32;
        t.mnt_ns = ns("mnt") as u32;
        t.net_ns = ns("net") as u32;
        // Another UTS namespace's name is not readable from outside it.
        if ns("uts") == self.uts_ns {
            t.nodename = self.nodename.clone();
        }
        t.cgroup_id = cgroup_id(&dir).unwrap_or(0);
        t
    }

    /// Runs `log` at most every 10 s.
    fn warn(&mut self, log: impl FnOnce()) {
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            log();
            self.last_warning = Some(Instant::now());
        }
    }
}

/// The inode of the process's cgroup directory, as the kernel's cgroup id
/// is: the unified hierarchy's, else (cgroup v1) the memory controller's.
fn cgroup_id(proc_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    let dir = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.is_empty() {
            Some(format!("/sys/fs/cgroup{path}"))
        } else if ctrl.split(',').any(|c| c == "memory") {
            Some(format!("/sys/fs/cgroup/memory{path}"))
        } else {
            None
        }
    })?;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

fn nodename() -> Vec<u8> {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: u is large enough for uname to fill.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return Vec::new();
    }
    // SAFETY: uname succeeded; nodename is NUL-terminated.
    let u = unsafe { u.assume_init() };
    unsafe { CStr::from_ptr(u.nodename.as_ptr()) }
        .to_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_root_point_and_type() {
        let m = parse_mountinfo(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             30 22 0:25 /sub /mnt/with\\040space rw - tmpfs tmpfs rw\n\
             bad line\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].dev.as_str(), m[0].root.as_str()), ("8:1", "/"));
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[1].point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].root, "/sub");
        assert_eq!(unescape("a\\134b"), b"a\\b");
        assert_eq!(unescape("trailing\\"), b"trailing\\");
    }
}
