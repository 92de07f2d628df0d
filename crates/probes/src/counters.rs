//! What the kernel counts: records submitted and lost, per kind; and each
//! program's run statistics.

use std::fmt;
use std::ops::Index;
use std::os::fd::{AsFd, AsRawFd};

use kestrel_abi::{self as abi, Kind};
use libbpf_rs::skel::Skel;
use libbpf_rs::{MapCore, MapFlags};

use crate::{ProbeError, ProbeState, Probes};

/// Counters kept in the kernel, summed over CPUs, for one record kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounters {
    /// Records written to the ring buffer.
    pub submitted: u64,
    /// Records lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Records abandoned for another reason.
    pub errors: u64,
}

impl KindCounters {
    /// Records lost, whatever the reason.
    pub fn lost(&self) -> u64 {
        self.ringbuf_full + self.errors
    }
}

/// The kernel's counters for every record kind, indexed by [`Kind`].
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounters([KindCounters; Kind::ALL.len()]);

impl KernelCounters {
    /// Each kind's counters, in the table's order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, KindCounters)> {
        Kind::ALL.into_iter().zip(self.0)
    }

    /// All records written to the ring buffer, whatever the kind.
    pub fn submitted(&self) -> u64 {
        self.0.iter().map(|k| k.submitted).sum()
    }

    /// All records lost in the kernel, whatever the kind.
    pub fn lost(&self) -> u64 {
        self.0.iter().map(KindCounters::lost).sum()
    }
}

impl Index<Kind> for KernelCounters {
    type Output = KindCounters;

    fn index(&self, kind: Kind) -> &KindCounters {
        &self.0[kind.index()]
    }
}

impl fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, c)| (k.name(), c)))
            .finish()
    }
}

/// Run statistics of one BPF program (with `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone)]
pub struct ProgramStats {
    /// Program name.
    pub name: String,
    /// Where it is attached.
    pub target: &'static str,
    /// Times it ran.
    pub run_cnt: u64,
    /// Total time spent in it.
    pub run_time_ns: u64,
}

impl Probes {
    /// Reads the kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let mut all = KernelCounters::default();
        for kind in Kind::ALL {
            let mut v = [0u64; abi::KESTREL_CTR_MAX as usize];
            for (ctr, slot) in v.iter_mut().enumerate() {
                let key = kind as u32 * abi::KESTREL_CTR_MAX + ctr as u32;
                let per_cpu = self
                    .skel
                    .maps
                    .counters
                    .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                    .map_err(|source| ProbeError::Libbpf {
                        what: "reading the kernel counters failed",
                        source,
                        log: String::new(),
                    })?
                    .unwrap_or_default();
                *slot = per_cpu
                    .iter()
                    .filter_map(|b| b.get(..8))
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
                    .sum();
            }
            all.0[kind.index()] = KindCounters {
                submitted: v[abi::KESTREL_CTR_SUBMITTED as usize],
                ringbuf_full: v[abi::KESTREL_CTR_RINGBUF_FULL as usize],
                errors: v[abi::KESTREL_CTR_ERROR as usize],
            };
        }
        Ok(all)
    }

    /// Run count and time of each program, as kept by the kernel when
    /// `kernel.bpf_stats_enabled` is 1 (zero otherwise).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let obj = self.skel.object();
        self.report
            .iter()
            .filter(|r| r.state == ProbeState::Attached)
            .filter_map(|r| {
                let prog = obj.progs().find(|p| p.name() == r.program)?;
                let mut info = libbpf_sys::bpf_prog_info::default();
                let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
                // SAFETY: info is a valid bpf_prog_info of `len` bytes.
                let rc = unsafe {
                    libbpf_sys::bpf_obj_get_info_by_fd(
                        prog.as_fd().as_raw_fd(),
                        (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
                        &mut len,
                    )
                };
                (rc == 0).then(|| ProgramStats {
                    name: r.program.to_string(),
                    target: r.target,
                    run_cnt: info.run_cnt,
                    run_time_ns: info.run_time_ns,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind counts in the totals: file records were once left out of
    /// `lost()`.
    #[test]
    fn totals_cover_every_kind() {
        let mut c = KernelCounters::default();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let n = 1u64 << i;
            c.0[kind.index()] = KindCounters {
                submitted: n,
                ringbuf_full: 2 * n,
                errors: 4 * n,
            };
        }
        let each = (0..Kind::ALL.len()).map(|i| 1u64 << i);
        assert_eq!(c.submitted(), each.clone().sum::<u64>());
        assert_eq!(c.lost(), each.map(|n| 6 * n).sum::<u64>());
        assert_eq!(c[Kind::File].lost(), 6 << Kind::File.index());
        assert_eq!(c.iter().count(), Kind::ALL.len());
    }
}
