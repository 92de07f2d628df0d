//! What Kestrel's BPF programs and user space agree on.
//!
//! The record layouts and limits are generated at build time from
//! `include/kestrel_abi.h`, the header the BPF side includes: nothing of
//! them is written by hand here, so to change a record, change the header.
//!
//! The table of record kinds ([`Kind`], [`kinds`]) is generated from the
//! same header, from its `KESTREL_KINDS` rows (each kind's name,
//! `data_type` and programs), which also make `enum kestrel_kind`.

mod generated {
    #![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/abi.rs"));
}

pub use generated::*;

pub mod kinds;

pub use kinds::{Alternative, Backend, Kind, KindSpec, Program, Requirement};

/// Directory holding `kestrel_abi.h`, for build scripts that compile C
/// against it.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
