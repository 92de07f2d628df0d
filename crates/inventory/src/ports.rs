//! Listening TCP sockets and bound UDP sockets, with the process owning each.
//!
//! Sockets are listed through netlink `NETLINK_SOCK_DIAG`
//! (`SOCK_DIAG_BY_FAMILY` dumps with an `inet_diag_req_v2`, what `ss -ltun`
//! does): TCP sockets in state `LISTEN` and UDP sockets in state `CLOSE`
//! (bound but not connected, `ss`'s `UNCONN`) with a non-zero local port,
//! for IPv4 and IPv6. When a dump fails (no `inet_diag`/`udp_diag` in the
//! kernel, netlink forbidden by a sandbox), that protocol and family are read
//! from `/proc/net/{tcp,tcp6,udp,udp6}` instead, with a [`Warning`].
//!
//! The owner is found by scanning `/proc/*/fd` once for `socket:[INODE]`
//! links. A socket shared by several processes (inherited across `fork`) is
//! attributed to the lowest pid. Without root, other users' processes cannot
//! be scanned and their sockets have `pid: None`.
//!
//! Limits: only the caller's network namespace is seen (containers with
//! their own namespace are not), and connected UDP sockets are not listed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::Warning;

/// One listening (TCP) or bound (UDP) socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningSocket {
    /// `"tcp"` or `"udp"`.
    pub proto: &'static str,
    /// 4 or 6.
    pub family: u8,
    /// Local address (`0.0.0.0` / `::` for a wildcard bind).
    pub addr: IpAddr,
    /// Local port.
    pub port: u16,
    /// Socket inode number (as in `/proc/PID/fd/N -> socket:[INODE]`).
    pub inode: u64,
    /// Owner uid of the socket.
    pub uid: u32,
    /// Process holding the socket open, when one was found.
    pub pid: Option<u32>,
    /// `/proc/PID/exe` target; empty when unknown.
    pub exe: String,
    /// `/proc/PID/cmdline` with NULs turned into spaces; empty when unknown.
    pub cmdline: String,
    /// `/proc/PID/comm`; empty when unknown.
    pub comm: String,
}

const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// Lists the listening sockets of this network namespace. See the module
/// documentation.
pub fn collect() -> (Vec<ListeningSocket>, Vec<Warning>) {
    let mut warnings = Vec::new();
    let mut sockets = Vec::new();
    for (proto, family) in [("tcp", 4u8), ("tcp", 6), ("udp", 4), ("udp", 6)] {
        match netlink::dump(proto, family) {
            Ok(mut s) => sockets.append(&mut s),
            Err(e) => {
                let file = proc_file(proto, family);
                warnings.push(Warning::new(
                    Path::new(&file),
                    None,
                    format!(
                        "sock_diag dump of {proto}{family} failed ({e}); reading {}",
                        file
                    ),
                ));
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        let (mut s, mut w) = parse_proc_net(&text, proto, family);
                        for x in &mut w {
                            x.file = file.clone().into();
                        }
                        sockets.append(&mut s);
                        warnings.append(&mut w);
                    }
                    Err(e) => warnings.push(Warning::new(Path::new(&file), None, format!("{e}"))),
                }
            }
        }
    }

    let owners = socket_owners();
    let mut procs: HashMap<u32, (String, String, String)> = HashMap::new();
    for s in &mut sockets {
        if let Some(&pid) = owners.get(&s.inode) {
            s.pid = Some(pid);
            let (exe, cmdline, comm) = procs.entry(pid).or_insert_with(|| process_info(pid));
            s.exe = exe.clone();
            s.cmdline = cmdline.clone();
            s.comm = comm.clone();
        }
    }
    sockets.sort_by(|a, b| {
        (a.proto, a.family, a.port, a.addr, a.inode)
            .cmp(&(b.proto, b.family, b.port, b.addr, b.inode))
    });
    (sockets, warnings)
}

fn proc_file(proto: &str, family: u8) -> String {
    format!("/proc/net/{proto}{}", if family == 6 { "6" } else { "" })
}

/// Parses the text of `/proc/net/{tcp,tcp6,udp,udp6}` and returns the TCP
/// sockets in `LISTEN` state (`proto == "tcp"`) or the UDP sockets in
/// `CLOSE` state with a non-zero port (any other `proto`). `family` is 4 or
/// 6 and selects the address width. `pid`, `exe`, `cmdline` and `comm` are
/// left empty. Malformed lines become warnings with an empty file name and
/// the 1-based line number.
///
/// Addresses are printed by the kernel as 32-bit words in host byte order,
/// so this is correct when run on the machine that produced the text.
pub fn parse_proc_net(text: &str, proto: &str, family: u8) -> (Vec<ListeningSocket>, Vec<Warning>) {
    let proto: &'static str = if proto == "tcp" { "tcp" } else { "udp" };
    let want_state = if proto == "tcp" {
        TCP_LISTEN
    } else {
        TCP_CLOSE
    };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0] == "sl" {
            continue;
        }
        let bad = |msg: &str| Warning::new(Path::new(""), Some(lineno), msg.to_string());
        if f.len() < 10 {
            warnings.push(bad("fewer than 10 fields"));
            continue;
        }
        let Some(state) = u8::from_str_radix(f[3], 16).ok() else {
            warnings.push(bad("bad state"));
            continue;
        };
        let Some((addr, port)) = parse_hex_endpoint(f[1], family) else {
            warnings.push(bad("bad local address"));
            continue;
        };
        let (Ok(uid), Ok(inode)) = (f[7].parse::<u32>(), f[9].parse::<u64>()) else {
            warnings.push(bad("bad uid or inode"));
            continue;
        };
        if state != want_state || port == 0 {
            continue;
        }
        out.push(ListeningSocket {
            proto,
            family,
            addr,
            port,
            inode,
            uid,
            pid: None,
            exe: String::new(),
            cmdline: String::new(),
            comm: String::new(),
        });
    }
    (out, warnings)
}

/// `0100007F:0016` (IPv4) or 32 hex digits `:PORT` (IPv6).
fn parse_hex_endpoint(s: &str, family: u8) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let words = match (family, a.len()) {
        (4, 8) | (6, 32) => a.len() / 8,
        _ => return None,
    };
    let mut bytes = [0u8; 16];
    for w in 0..words {
        let v = u32::from_str_radix(a.get(w * 8..w * 8 + 8)?, 16).ok()?;
        bytes[w * 4..w * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    Some((ip_from_bytes(family, &bytes), port))
}

fn ip_from_bytes(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// Maps socket inode → lowest pid holding it, from `/proc/*/fd`.
fn socket_owners() -> HashMap<u64, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                map.entry(inode).or_insert(pid);
            }
        }
    }
    map
}

fn process_info(pid: u32) -> (String, String, String) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    (exe, cmdline, comm)
}

/// A hand-written `SOCK_DIAG_BY_FAMILY` client.
mod netlink {
    use super::{ip_from_bytes, ListeningSocket, TCP_CLOSE, TCP_LISTEN};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_HDRLEN: usize = 16;
    /// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid(48).
    const REQ_LEN: usize = 8 + 48;
    /// `struct inet_diag_msg`: family, state, timer, retrans, sockid(48),
    /// expires, rqueue, wqueue, uid, inode.
    const MSG_LEN: usize = 4 + 48 + 20;
    /// A dump of a busy host is finite, but never loop forever on a kernel
    /// that keeps answering.
    const MAX_MESSAGES: usize = 4_000_000;

    pub(super) fn dump(proto: &'static str, family: u8) -> io::Result<Vec<ListeningSocket>> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let (ipproto, state) = if proto == "tcp" {
            (libc::IPPROTO_TCP as u8, TCP_LISTEN)
        } else {
            (libc::IPPROTO_UDP as u8, TCP_CLOSE)
        };
        let af = if family == 4 {
            libc::AF_INET
        } else {
            libc::AF_INET6
        } as u8;
        let seq: u32 = 0x6b65_7374;
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
        req.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[af, ipproto, 0, 0]);
        req.extend_from_slice(&(1u32 << state).to_ne_bytes());
        req.extend_from_slice(&[0u8; 48]);

        // SAFETY: zeroed sockaddr_nl is valid; nl_family set to AF_NETLINK,
        // nl_pid 0 addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }

        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0usize;
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink closed before NLMSG_DONE",
                ));
            }
            let mut data = &buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(data[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &data[NLMSG_HDRLEN..len];
                seen += 1;
                if seen > MAX_MESSAGES {
                    return Err(io::Error::other("too many netlink messages"));
                }
                if mseq == seq {
                    match ty {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let errno = payload
                                .get(0..4)
                                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                                .unwrap_or(0);
                            if errno == 0 {
                                // An acknowledgement, not an error.
                            } else {
                                return Err(io::Error::from_raw_os_error(-errno));
                            }
                        }
                        SOCK_DIAG_BY_FAMILY => {
                            if let Some(s) = parse_msg(payload, proto, family, state) {
                                out.push(s);
                            }
                        }
                        _ => {}
                    }
                }
                let aligned = (len + 3) & !3;
                data = data.get(aligned..).unwrap_or(&[]);
            }
        }
    }

    fn parse_msg(p: &[u8], proto: &'static str, family: u8, want: u8) -> Option<ListeningSocket> {
        if p.len() < MSG_LEN {
            return None;
        }
        let state = p[1];
        // inet_diag_sockid starts at offset 4: sport(be16), dport(be16),
        // src[16], dst[16], if(4), cookie(8).
        let sport = u16::from_be_bytes([p[4], p[5]]);
        let mut src = [0u8; 16];
        src.copy_from_slice(&p[8..24]);
        let rest = &p[52..];
        let uid = u32::from_ne_bytes(rest[12..16].try_into().ok()?);
        let inode = u32::from_ne_bytes(rest[16..20].try_into().ok()?);
        if state != want || sport == 0 {
            return None;
        }
        let fam = match p[0] as libc::c_int {
            libc::AF_INET => 4,
            libc::AF_INET6 => 6,
            _ => family,
        };
        Some(ListeningSocket {
            proto,
            family: fam,
            addr: ip_from_bytes(fam, &src),
            port: sport,
            inode: u64::from(inode),
            uid,
            pid: None,
            exe: String::new(),
            cmdline: String::new(),
            comm: String::new(),
        })
    }
}
