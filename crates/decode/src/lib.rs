//! Decodes the records Kestrel's BPF programs put in the ring buffer into
//! owned Rust values. The layouts come from `kestrel-abi`, generated from
//! the same header the BPF side is compiled with; this crate only checks
//! lengths and splits the packed string area.
//!
//! Decoding never trusts the record: every length is checked against the
//! bytes actually received, and a bad record is an error, not a panic.

mod common;
pub mod raw;

use kestrel_abi as abi;

pub use common::{ExeId, PathArg, PathPair, Removal, SockAddrs, Task};
pub use connect::{Connect, ConnectVia};
pub use cred::Cred;
pub use dns::Dns;
pub use exec::{Ancestor, Exec, FdInfo, WATCHED_ENV};
pub use file::FileCreate;
/// The table of kinds, for the crates after this one: those with a module
/// per kind too, and renderers that take their `data_type` from it.
pub use kestrel_abi::{for_each_kind, kinds::Kind};
pub use module::Module;
pub use privesc::{Creds, Privesc};
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
    /// A field holds a value this build does not know.
    #[error("record of kind {kind}: {field} = {value} is not a known value")]
    BadField {
        /// Record kind.
        kind: u16,
        /// The field.
        field: &'static str,
        /// What it held.
        value: u64,
    },
}

/// One module per kind of the table, `<name>.rs`: its `decode`, and
/// `Decoded`, what its `Record` variant holds (made `From` what `decode`
/// returns). A kind without its module does not build.
macro_rules! records {
    ($($kind:ident $name:ident),*) => {
        $(pub mod $name;)*

        /// Any decoded record: one variant per kind of the table.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Record {
            $(
                #[doc = concat!("A `", stringify!($name), "` record.")]
                $kind($name::Decoded),
            )*
        }

        impl Record {
            /// Capture time, ns since boot.
            pub fn ktime_ns(&self) -> u64 {
                match self {
                    $(Record::$kind(r) => r.ktime_ns,)*
                }
            }
        }

        fn decode_kind(
            kind: Kind,
            buf: &[u8],
            hdr: abi::kestrel_header,
        ) -> Result<Record, DecodeError> {
            match kind {
                $(Kind::$kind => $name::decode(buf, hdr).map(|r| Record::$kind(r.into())),)*
            }
        }
    };
}
kestrel_abi::for_each_kind!(records);

/// Decodes one ring buffer record: the one place that dispatches on the
/// record kind.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let hdr: abi::kestrel_header = common::read_pod(buf, 0, 0)?;
    // Only the bytes the kernel says belong to the record.
    let buf = &buf[..(hdr.size as usize).min(buf.len())];
    let Some(kind) = Kind::from_raw(hdr.kind) else {
        return Err(DecodeError::UnknownKind(hdr.kind));
    };
    decode_kind(kind, buf, hdr)
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
