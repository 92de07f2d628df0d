//! Agent CPU and memory against the number of live processes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::workloads::{Env, Kind};
use super::{progress, AgentProc, Plan};

/// Sleeping children; killed and reaped when dropped.
struct Sleepers(Vec<libc::pid_t>);

impl Sleepers {
    /// Forks `n` children that each connect a UDP socket to `port` once
    /// (one connect event per process, so the agent meets every one of
    /// them) and then sleep until killed.
    fn spawn(n: u64, port: u16) -> Result<Sleepers> {
        let mut s = Sleepers(Vec::with_capacity(n as usize));
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        for _ in 0..n {
            // SAFETY: the child only makes async-signal-safe syscalls
            // (socket, connect, close, pause) and never returns.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("fork after {} sleeping processes", s.0.len()));
            }
            if pid == 0 {
                unsafe {
                    // Never outlive the benchmark, even if it is killed.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    libc::connect(
                        fd,
                        &addr as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                    libc::close(fd);
                    loop {
                        libc::pause();
                    }
                }
            }
            s.0.push(pid);
        }
        Ok(s)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// `bench scaling`.
pub fn run(plan: &Plan, env: &Env) -> Result<String> {
    let counts: &[u64] = if plan.quick {
        &[100, 500]
    } else {
        &[1_000, 5_000, 20_000]
    };
    let execs = plan.size(1_000, 100);
    let mut s = String::new();
    let _ = writeln!(s, "### 4. Scaling with live processes\n");
    let _ = writeln!(
        s,
        "For each count: a fresh agent, then that many processes forked, each making one UDP \
         connect (so the agent enriches every one of them) and then sleeping; then a fixed load \
         of {execs} execs of /bin/true. RSS after start, after the processes, and peak; CPU spent \
         on the processes' events and on the exec load. The process cache holds 16384 entries by \
         default: memory must level off past it.\n"
    );
    let _ = writeln!(
        s,
        "| sleeping processes | RSS at start MiB | RSS with processes MiB | agent CPU ms for their events | agent CPU ms for {execs} execs | peak RSS MiB | records received | kernel lost |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in counts {
        progress(format!("scaling: {n} sleeping processes"));
        let agent = AgentProc::start(&plan.dir, "scaling", &[])?;
        let (rss0, _) = agent.rss_kib();
        let c0 = agent.cpu_ns();
        let sleepers = Sleepers::spawn(n, env.tcp.port())?;
        // Wait until the agent has caught up with the connects (its CPU
        // stops growing), at most 60 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = agent.cpu_ns();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = agent.cpu_ns();
            if now - last < 5_000_000 || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        let c1 = agent.cpu_ns();
        let (rss1, _) = agent.rss_kib();
        env.run(Kind::Exec, execs, None)?;
        std::thread::sleep(Duration::from_millis(300));
        let c2 = agent.cpu_ns();
        let (_, hwm) = agent.rss_kib();
        let c = agent.stop()?;
        drop(sleepers);
        let _ = writeln!(
            s,
            "| {n} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {} | {} |",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            (c1 - c0) as f64 / 1e6,
            (c2 - c1) as f64 / 1e6,
            hwm as f64 / 1024.0,
            c.get("received").copied().unwrap_or(0),
            c.get("kernel_lost").copied().unwrap_or(0),
        );
    }
    s.push('\n');
    Ok(s)
}
