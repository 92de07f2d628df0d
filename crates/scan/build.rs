//! Compiles the scan's BPF reader with clang (CO-RE, against the probes
//! crate's vmlinux.h) and generates its libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/scan.bpf.c";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("scan.skel.rs");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // One vmlinux.h for the workspace: the probes crate keeps it.
    let vmlinux_dir = manifest.join("../probes/bpf");
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers");
    if let Err(e) = SkeletonBuilder::new()
        .source(manifest.join(SRC))
        .clang(&clang)
        .clang_args([
            format!("-I{}", vmlinux_dir.display()),
            format!("-I{libbpf_include}"),
            "-Wall".to_string(),
        ])
        .build_and_generate(&out)
    {
        eprintln!("error: building the scan's BPF program failed (is clang installed? scripts/install-deps): {e:#}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=../probes/bpf/vmlinux.h");
    println!("cargo:rerun-if-env-changed=CLANG");
}
