//! Reads kernel memory on demand through the scan's BPF program, run with
//! BPF_PROG_TEST_RUN in the scanner's own task context.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};

use crate::check::{KprobeRec, ModAreas, ModLayout};
use crate::Error;

mod skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/scan.skel.rs"));
}
use skel::{ScanSkel, ScanSkelBuilder};

/// Bytes one program run copies (CHUNK in scan.bpf.c).
const CHUNK: usize = 4096;
const OP_READ: u64 = 1;
const OP_FILE: u64 = 2;
const OP_KPROBE: u64 = 3;
const OP_MODLAYOUT: u64 = 4;
/// Layout of `struct out` in scan.bpf.c: eighteen u64 words, then the data.
const HEADER: usize = 18 * 8;

/// The kernel's operation pointers of one open file of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOps {
    /// `file->f_op`.
    pub f_op: u64,
    /// `file->f_op->iterate_shared`.
    pub iterate_shared: u64,
    /// `file->f_inode->i_op->lookup`.
    pub lookup: u64,
    /// `((struct seq_file *)file->private_data)->op->show`; meaningful only
    /// for seq_files.
    pub seq_show: u64,
}

/// A loaded reader; drop it to unload the program.
pub struct Reader<'obj> {
    skel: ScanSkel<'obj>,
    /// Program runs so far (for the summary and the tests of bounds).
    pub runs: u64,
}

impl<'obj> Reader<'obj> {
    /// Loads the BPF program (needs CAP_BPF + CAP_PERFMON, i.e. root).
    /// The skeleton lives in `storage`, which the caller keeps for as long
    /// as the reader (one scan).
    pub fn load(storage: &'obj mut MaybeUninit<OpenObject>) -> Result<Self, Error> {
        let open = ScanSkelBuilder::default()
            .open(storage)
            .map_err(|e| Error::Bpf(format!("opening the scan's BPF object: {e}")))?;
        let skel = open
            .load()
            .map_err(|e| Error::Bpf(format!("loading the scan's BPF program: {e}")))?;
        Ok(Reader { skel, runs: 0 })
    }

    fn run(&mut self, op: u64, a1: u64, a2: u64) -> Result<Vec<u8>, Error> {
        let mut ctx = [0u8; 24];
        ctx[0..8].copy_from_slice(&op.to_ne_bytes());
        ctx[8..16].copy_from_slice(&a1.to_ne_bytes());
        ctx[16..24].copy_from_slice(&a2.to_ne_bytes());
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            ..Default::default()
        };
        self.runs += 1;
        self.skel
            .progs
            .kestrel_scan_read
            .test_run(input)
            .map_err(|e| Error::Bpf(format!("running the scan's BPF program: {e}")))?;
        let out = self
            .skel
            .maps
            .out
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::Bpf(format!("reading the scan's output map: {e}")))?
            .ok_or_else(|| Error::Bpf("the scan's output map has no entry".into()))?;
        if out.len() < HEADER + CHUNK {
            return Err(Error::Bpf(format!(
                "output map value of {} bytes",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Copies `len` bytes of kernel memory at `addr`.
    pub fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = addr + buf.len() as u64;
            let n = (len - buf.len()).min(CHUNK);
            let out = self.run(OP_READ, at, n as u64)?;
            let err = word(&out, 0) as i64;
            if err != 0 {
                return Err(Error::Read {
                    addr: at,
                    len: n,
                    errno: -err,
                });
            }
            buf.extend_from_slice(&out[HEADER..HEADER + n]);
        }
        Ok(buf)
    }

    /// Reads `n` little-endian 64-bit words at `addr`.
    pub fn read_words(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, Error> {
        let bytes = self.read(addr, n * 8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// The operation pointers of `file`, opened by this process.
    pub fn file_ops(&mut self, file: &impl AsRawFd) -> Result<FileOps, Error> {
        let fd = file.as_raw_fd();
        let out = self.run(OP_FILE, fd as u64, 0)?;
        let err = word(&out, 0) as i64;
        if err != 0 {
            return Err(Error::Bpf(format!(
                "reading the operations of fd {fd} failed (errno {})",
                -err
            )));
        }
        Ok(FileOps {
            f_op: word(&out, 3),
            iterate_shared: word(&out, 4),
            lookup: word(&out, 6),
            seq_show: word(&out, 9),
        })
    }
}

impl Reader<'_> {
    /// The kprobe whose hlist node (or, with `list`, list node) is at
    /// `node`. None when the kernel has no struct kprobe.
    pub fn kprobe(&mut self, node: u64, list: bool) -> Result<Option<KprobeRec>, Error> {
        let out = self.run(OP_KPROBE, node, u64::from(list))?;
        if word(&out, 0) as i64 != 0 {
            return Ok(None);
        }
        Ok(Some(KprobeRec {
            kp: word(&out, 10),
            addr: word(&out, 11),
            pre: word(&out, 12),
            post: word(&out, 13),
            ret_handler: word(&out, 14),
            hnext: word(&out, 15),
            list: word(&out, 16),
            lnext: word(&out, 17),
        }))
    }
}

impl Reader<'_> {
    /// Where the module address tree and struct module's fields are in
    /// the running kernel; None when it has no such tree (no modules, or
    /// built without CONFIG_MODULES_TREE_LOOKUP).
    pub fn module_layout(&mut self) -> Result<Option<ModLayout>, Error> {
        let out = self.run(OP_MODLAYOUT, 0, 0)?;
        let w = |i: usize| word(&out, HEADER / 8 + i);
        const TREE: u64 = 1;
        const MEM: u64 = 2;
        const LAYOUT: u64 = 4;
        let flags = w(0);
        if flags & TREE == 0 || flags & (MEM | LAYOUT) == 0 {
            return Ok(None);
        }
        let areas = if flags & MEM != 0 {
            ModAreas::Mem {
                off: w(6),
                stride: w(7),
                count: if w(7) == 0 { 0 } else { w(8) / w(7) },
            }
        } else {
            ModAreas::Layouts {
                core: w(6),
                init: w(7),
            }
        };
        Ok(Some(ModLayout {
            root_tree: w(1),
            mtn_node: w(2),
            mtn_mod: w(3),
            name: w(4),
            name_len: w(5),
            areas,
            area_base: w(9),
            area_size: w(10),
            area_mtn: w(11),
        }))
    }
}

fn word(out: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(out[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}
