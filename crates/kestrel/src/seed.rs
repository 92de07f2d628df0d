//! What the kernel side cannot learn about processes that were running
//! before the agent started: read from /proc once, at start.

use std::collections::{HashMap, HashSet};

use kestrel_probes::{SeedExe, SeedProcess};

/// Every process in /proc with its real and effective uid (the "Uid:" line
/// of its status), whether its stdin or stdout is an inet socket, and the
/// nearest ancestor whose is.
pub fn running_processes() -> Vec<SeedProcess> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut ppids = HashMap::new();
    let mut procs: Vec<SeedProcess> = dir
        .filter_map(|e| {
            let tgid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
            let mut it = field("Uid:")?.split_whitespace().map(|v| v.parse::<u32>());
            let (uid, euid) = (it.next()?.ok()?, it.next()?.ok()?);
            if let Some(ppid) = field("PPid:").and_then(|v| v.trim().parse::<u32>().ok()) {
                ppids.insert(tgid, ppid);
            }
            Some(SeedProcess {
                tgid,
                uid,
                euid,
                stdio_inet_socket: stdio_inet_socket(tgid),
                holder: 0,
                exe: exe_identity(tgid),
            })
        })
        .collect();
    let holders: HashSet<u32> = procs
        .iter()
        .filter(|p| p.stdio_inet_socket)
        .map(|p| p.tgid)
        .collect();
    for p in &mut procs {
        p.holder = nearest_holder(p.tgid, &ppids, &holders);
    }
    procs
}

/// The nearest ancestor of `tgid` in `holders`, as the kernel's walk would
/// find it (at most KESTREL_PID_TREE_MAX levels up); 0 if none.
fn nearest_holder(tgid: u32, ppids: &HashMap<u32, u32>, holders: &HashSet<u32>) -> u32 {
    let mut pid = tgid;
    for _ in 0..kestrel_probes::PID_TREE_MAX {
        match ppids.get(&pid) {
            Some(&ppid) if ppid != 0 => {
                if holders.contains(&ppid) {
                    return ppid;
                }
                pid = ppid;
            }
            _ => break,
        }
    }
    0
}

/// The identity of the file the process runs: `stat` through the
/// /proc/PID/exe link reaches the very inode the kernel maps, deleted or
/// not.
fn exe_identity(tgid: u32) -> Option<SeedExe> {
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/{tgid}/exe");
    let name = std::fs::read_link(&link).ok()?;
    let m = std::fs::metadata(&link).ok()?;
    let name = name.as_os_str().as_encoded_bytes();
    let deleted = name.ends_with(b" (deleted)");
    Some(SeedExe {
        dev: kernel_dev(m.dev()),
        ino: m.ino(),
        ctime_ns: u64::try_from(m.ctime()).ok()? * 1_000_000_000
            + u64::try_from(m.ctime_nsec()).ok()?,
        deleted,
        memfd: deleted && name.starts_with(b"/memfd:"),
    })
}

/// User space's st_dev as the kernel's dev_t (major << 20 | minor).
fn kernel_dev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (major << 20) | (minor & 0xfffff)
}

/// Whether fd 0 or 1 of the process is a socket listed in its network
/// namespace's TCP or UDP tables (unix sockets, the common case for
/// daemons logging to the journal, are not).
fn stdio_inet_socket(tgid: u32) -> bool {
    let inodes: Vec<u64> = [0, 1]
        .iter()
        .filter_map(|fd| {
            let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
            socket_inode(link.to_str()?)
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let inet = inet_socket_inodes(tgid);
    inodes.iter().any(|i| inet.contains(i))
}

/// The inode of a "socket:[12345]" descriptor link.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Socket inodes in /proc/PID/net/{tcp,tcp6,udp,udp6}: the tenth column.
fn inet_socket_inodes(tgid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/net/{table}")) else {
            continue;
        };
        set.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse::<u64>().ok()),
        );
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_holder_is_the_closest_socket_holding_ancestor() {
        // 1 <- 10 (holder) <- 20 <- 30 (holder) <- 40
        let ppids = HashMap::from([(10, 1), (20, 10), (30, 20), (40, 30), (1, 0)]);
        let holders = HashSet::from([10, 30]);
        assert_eq!(nearest_holder(40, &ppids, &holders), 30);
        assert_eq!(nearest_holder(30, &ppids, &holders), 10);
        assert_eq!(nearest_holder(20, &ppids, &holders), 10);
        assert_eq!(nearest_holder(10, &ppids, &holders), 0);
        assert_eq!(nearest_holder(99, &ppids, &holders), 0);
    }

    #[test]
    fn this_process_s_exe_is_the_file_it_runs() {
        use std::os::unix::fs::MetadataExt;
        let me = exe_identity(std::process::id()).expect("this process's exe");
        let file = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(me.ino, file.ino());
        assert_eq!(kernel_dev(file.dev()), me.dev);
        assert!(!me.deleted && !me.memfd);
        // The kernel's encoding: 8:1 is 8 << 20 | 1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 300);
        // Kernel threads run no file.
        assert_eq!(exe_identity(2), None);
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn finds_this_process_socket_on_stdio_only_when_there() {
        // The test harness's stdio is not an inet socket.
        let me = std::process::id();
        let seeded = running_processes();
        let mine = seeded.iter().find(|p| p.tgid == me).expect("this process");
        assert!(!mine.stdio_inet_socket);
    }
}
