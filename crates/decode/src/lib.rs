//! Decodes the records Kestrel's BPF programs put in the ring buffer into
//! owned Rust values. The layouts come from `kestrel-abi`, generated from
//! the same header the BPF side is compiled with; this crate only checks
//! lengths and splits the packed string area.
//!
//! Decoding never trusts the record: every length is checked against the
//! bytes actually received, and a bad record is an error, not a panic.

mod common;
mod connect;
mod cred;
pub mod dns;
mod exec;
mod file;
mod module;
mod ptrace;
pub mod raw;

use kestrel_abi as abi;
use kestrel_abi::kinds::Kind;

pub use common::{ExeId, SockAddrs, Task};
pub use connect::Connect;
pub use cred::Cred;
pub use dns::Dns;
pub use exec::{Ancestor, Exec, FdInfo, WATCHED_ENV};
pub use file::FileCreate;
pub use module::Module;
pub use ptrace::Ptrace;

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record's fixed part.
    #[error("record of kind {kind} is {got} bytes, shorter than its {need}-byte fixed part")]
    Short {
        /// Record kind.
        kind: u16,
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        got: usize,
    },
    /// A kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    /// The string lengths point past the end of the record.
    #[error("exec record's string lengths ({0} bytes) run past its end")]
    BadLengths(usize),
}

/// Any decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// data_type 59.
    Exec(Box<Exec>),
    /// data_type 42.
    Connect(Connect),
    /// data_type 101.
    Ptrace(Ptrace),
    /// data_type 601.
    Dns(Dns),
    /// data_type 604.
    Cred(Cred),
    /// data_type 603.
    Module(Module),
    /// data_type 602.
    File(FileCreate),
}

impl Record {
    /// Capture time, ns since boot.
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Record::Exec(e) => e.ktime_ns,
            Record::Connect(c) => c.ktime_ns,
            Record::Ptrace(p) => p.ktime_ns,
            Record::Dns(d) => d.ktime_ns,
            Record::Cred(c) => c.ktime_ns,
            Record::Module(m) => m.ktime_ns,
            Record::File(f) => f.ktime_ns,
        }
    }
}

/// Decodes one ring buffer record: the one place that dispatches on the
/// record kind.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let hdr: abi::kestrel_header = common::read_pod(buf, 0, 0)?;
    // Only the bytes the kernel says belong to the record.
    let buf = &buf[..(hdr.size as usize).min(buf.len())];
    // Exhaustive over the table of kinds: a kind added there without a
    // decoder does not build.
    let Some(kind) = Kind::from_raw(hdr.kind) else {
        return Err(DecodeError::UnknownKind(hdr.kind));
    };
    match kind {
        Kind::Exec => exec::decode(buf, hdr).map(|e| Record::Exec(Box::new(e))),
        Kind::Connect => connect::decode(buf, hdr).map(Record::Connect),
        Kind::Ptrace => ptrace::decode(buf, hdr).map(Record::Ptrace),
        Kind::Dns => dns::decode(buf, hdr).map(Record::Dns),
        Kind::Cred => cred::decode(buf, hdr).map(Record::Cred),
        Kind::Module => module::decode(buf, hdr).map(Record::Module),
        Kind::File => file::decode(buf, hdr).map(Record::File),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut rec = raw::exec(raw::task(1, 0, 0, b"x"), b"/x", &[], &[], &[b"x"], &[], &[]);
        // Claim a longer argument area than the record holds.
        let off = offset_of!(abi::kestrel_exec, argv_len);
        rec[off..off + 4].copy_from_slice(&60000u32.to_ne_bytes());
        assert!(matches!(decode(&rec), Err(DecodeError::BadLengths(_))));
        for cut in [10, 100, 400] {
            assert!(decode(&rec[..cut]).is_err());
        }
    }
}
