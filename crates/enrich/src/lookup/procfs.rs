//! Reads of /proc for one process, each checked against the start time the
//! kernel recorded so a reused pid is never mistaken for the original.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use kestrel_event::lossless_string;

/// Access to a procfs mount.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
    ns_per_tick: u64,
}

/// What /proc showed of a live process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveView {
    /// Target of /proc/PID/exe.
    pub exe: String,
    /// Target of /proc/PID/cwd.
    pub cwd: String,
    /// Target of fd 0.
    pub stdin: String,
    /// Target of fd 1.
    pub stdout: String,
}

impl Procfs {
    /// procfs mounted at `root` (normally /proc).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Procfs {
            root: root.into(),
            ns_per_tick: 1_000_000_000 / hz,
        }
    }

    /// Path of a file of process `pid`.
    pub fn path(&self, pid: u32, name: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        p.push(name);
        p
    }

    fn readlink(&self, pid: u32, name: &str) -> Option<String> {
        std::fs::read_link(self.path(pid, name))
            .ok()
            .map(|t| lossless_string(t.as_os_str().as_bytes()))
    }

    /// The process's start time in clock ticks since boot (stat field 22).
    pub fn start_ticks(&self, pid: u32) -> Option<u64> {
        let stat = std::fs::read(self.path(pid, "stat")).ok()?;
        parse_start_ticks(&stat)
    }

    /// Whether `pid` is still the process that started at `start_boottime`
    /// (ns since boot, as the kernel records it).
    pub fn is_same(&self, pid: u32, start_boottime: u64) -> bool {
        self.start_ticks(pid) == Some(start_boottime / self.ns_per_tick)
    }

    /// Reads what an exec event needs from a live process: its exe, and
    /// each of cwd, fd 0 and fd 1 only when `want` asks for it (the kernel
    /// usually named them already). `None` when the process is gone or its
    /// pid now belongs to another process.
    pub fn live_view(&self, pid: u32, start_boottime: u64, want: [bool; 3]) -> Option<LiveView> {
        let exe = self.readlink(pid, "exe")?;
        let read = |wanted: bool, name: &str| {
            if wanted {
                self.readlink(pid, name).unwrap_or_default()
            } else {
                String::new()
            }
        };
        let view = LiveView {
            exe,
            cwd: read(want[0], "cwd"),
            stdin: read(want[1], "fd/0"),
            stdout: read(want[2], "fd/1"),
        };
        // Checked after the reads: a pid reused before them fails here.
        self.is_same(pid, start_boottime).then_some(view)
    }

    /// The executable path of a live process, checked against its start.
    pub fn exe(&self, pid: u32, start_boottime: Option<u64>) -> Option<String> {
        let exe = self.readlink(pid, "exe")?;
        match start_boottime {
            Some(start) if !self.is_same(pid, start) => None,
            _ => Some(exe),
        }
    }

    /// The process's arguments joined by spaces, from /proc/PID/cmdline
    /// (at most `max` bytes of it). `None` when it cannot be read.
    pub fn cmdline(&self, pid: u32, max: usize) -> Option<String> {
        use std::io::Read;
        let mut data = Vec::new();
        std::fs::File::open(self.path(pid, "cmdline"))
            .ok()?
            .take(max as u64)
            .read_to_end(&mut data)
            .ok()?;
        let args: Vec<String> = data
            .strip_suffix(b"\0")
            .unwrap_or(&data)
            .split(|&b| b == 0)
            .map(lossless_string)
            .collect();
        Some(args.join(" "))
    }

    /// One variable of the process's environment, read from
    /// /proc/PID/environ (at most 1 MiB).
    pub fn environ_var(&self, pid: u32, name: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut data = Vec::new();
        std::fs::File::open(self.path(pid, "environ"))
            .ok()?
            .take(1 << 20)
            .read_to_end(&mut data)
            .ok()?;
        data.split(|&b| b == 0).find_map(|var| {
            var.strip_prefix(name.as_bytes())
                .and_then(|v| v.strip_prefix(b"="))
                .map(<[u8]>::to_vec)
        })
    }
}

/// Field 22 of /proc/PID/stat. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last ')'.
fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_survive_odd_names() {
        let stat = b"42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(12345));
        assert_eq!(parse_start_ticks(b"garbage"), None);
    }

    #[test]
    fn reads_own_process() {
        let p = Procfs::new("/proc");
        let me = std::process::id();
        let ticks = p.start_ticks(me).unwrap();
        let view = p.live_view(me, ticks * p.ns_per_tick, [true; 3]).unwrap();
        assert_eq!(view.exe, std::env::current_exe().unwrap().to_string_lossy());
        assert!(!view.cwd.is_empty());
        let lean = p.live_view(me, ticks * p.ns_per_tick, [false; 3]).unwrap();
        assert!(lean.cwd.is_empty() && lean.stdin.is_empty());
        assert!(p
            .live_view(me, (ticks + 5) * p.ns_per_tick, [true; 3])
            .is_none());
    }
}
