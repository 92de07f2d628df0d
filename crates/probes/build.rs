//! Compiles the BPF programs with clang (CO-RE, against the vmlinux.h kept in
//! bpf/) and generates their libbpf-rs skeleton. bpf/kestrel.bpf.c includes
//! one source per event family, which include the helpers of bpf/lib/: one
//! translation unit, one object.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/kestrel.bpf.c";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("kestrel.skel.rs");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    preflight(&clang);

    let bpf_dir = manifest.join("bpf");
    // libbpf-sys ships libbpf's own bpf_helpers.h & co. next to its build.
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers");
    if let Err(e) = SkeletonBuilder::new()
        .source(manifest.join(SRC))
        .clang(&clang)
        .clang_args([
            format!("-I{}", bpf_dir.display()),
            format!("-I{}", kestrel_abi::INCLUDE_DIR),
            format!("-I{libbpf_include}"),
            "-Wall".to_string(),
            "-Wno-unused-function".to_string(),
        ])
        .build_and_generate(&out)
    {
        eprintln!("error: building the BPF programs failed: {e:#}");
        std::process::exit(1);
    }
    // A directory: cargo watches everything below it, bpf/lib/ included.
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed={}", kestrel_abi::INCLUDE_DIR);
    println!("cargo:rerun-if-env-changed=CLANG");
}

/// Stops early with the packages to install instead of a wall of compiler
/// or linker errors.
fn preflight(clang: &str) {
    let mut missing = Vec::new();
    if Command::new(clang).arg("--version").output().is_err() {
        missing.push("clang");
    }
    let libelf = Command::new("pkg-config")
        .args(["--exists", "libelf"])
        .status();
    match libelf {
        Ok(s) if s.success() => {}
        Ok(_) => missing.push("libelf-dev"),
        Err(_) => missing.extend(["pkg-config", "libelf-dev"]),
    }
    let zlib = Command::new("pkg-config")
        .args(["--exists", "zlib"])
        .status();
    if !matches!(zlib, Ok(s) if s.success()) {
        missing.push("zlib1g-dev");
    }
    if !missing.is_empty() {
        missing.dedup();
        eprintln!(
            "error: Kestrel's BPF build needs packages that are not installed.\n\
             Install them with:  apt-get install {}",
            missing.join(" ")
        );
        std::process::exit(1);
    }
}
