//! What the agent reports about its host and itself: the OS, the kernel,
//! the host's addresses, its own CPU time and memory.

/// This process's CPU time in ms and RSS in bytes.
pub fn self_usage() -> (u64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some(ticks * 1000 / hz)
        })
        .unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

/// The OS's name, "Linux" when /etc/os-release does not say.
pub fn os_name() -> String {
    os_pretty_name().unwrap_or_else(|| "Linux".into())
}

/// PRETTY_NAME from /etc/os-release.
pub fn os_pretty_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The running kernel's release (uname -r).
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// The host's addresses, loopback left out.
pub fn local_ips() -> Vec<String> {
    let mut out: Vec<String> = kestrel_event::host::interface_addrs()
        .into_iter()
        .filter(|a| !a.ip.is_loopback())
        .map(|a| a.ip.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}
