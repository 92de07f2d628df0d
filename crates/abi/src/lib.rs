//! The layouts of the records Kestrel's BPF programs send to user space.
//!
//! Generated at build time from `include/kestrel_abi.h`, the header the BPF
//! side includes. Nothing here is written by hand: to change a record,
//! change the header.

#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/abi.rs"));

/// Directory holding `kestrel_abi.h`, for build scripts that compile C
/// against it.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
