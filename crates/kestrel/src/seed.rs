//! What the kernel side cannot learn about processes that were running
//! before the agent started: read from /proc once, at start.

use std::collections::HashSet;

use kestrel_probes::SeedProcess;

/// Every process in /proc with its real and effective uid (the "Uid:" line
/// of its status) and whether its stdin or stdout is an inet socket.
pub fn running_processes() -> Vec<SeedProcess> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tgid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        let mut it = uids.split_whitespace().map(|v| v.parse::<u32>());
        let (uid, euid) = (it.next()?.ok()?, it.next()?.ok()?);
        Some(SeedProcess {
            tgid,
            uid,
            euid,
            stdio_inet_socket: stdio_inet_socket(tgid),
        })
    })
    .collect()
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
