//! What Kestrel's BPF programs and user space agree on.
//!
//! The record layouts and limits are generated at build time from
//! `include/kestrel_abi.h`, the header the BPF side includes: nothing of
//! them is written by hand here, so to change a record, change the header.
//!
//! The table of record kinds ([`Kind`], [`kinds`]) is written by hand
//! beside them: it says what the header cannot (each kind's name,
//! `data_type` and programs) and is checked against the header's
//! `enum kestrel_kind` when it compiles.

mod generated {
    #![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/abi.rs"));
}

pub use generated::*;

pub mod kinds;

pub use kinds::{Kind, KindSpec, Program, Requirement};

/// Directory holding `kestrel_abi.h`, for build scripts that compile C
/// against it.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
