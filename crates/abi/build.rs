//! Generates the Rust view of `include/kestrel_abi.h`, the header the BPF
//! programs are compiled against, so the two sides cannot drift apart.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("include")
        .join("kestrel_abi.h");
    println!("cargo:rerun-if-changed={}", header.display());
    // Lets the probes crate find the header through DEP_KESTREL_ABI_INCLUDE.
    println!(
        "cargo:include={}",
        header.parent().unwrap().to_str().unwrap()
    );

    let bindings = match bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_type("kestrel_.*")
        .allowlist_var("KESTREL_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: bindgen could not read {}: {e}\n\
                 Kestrel needs clang's libclang and the kernel's uapi headers: \
                 apt-get install clang libclang-dev linux-libc-dev",
                header.display()
            );
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("abi.rs");
    bindings.write_to_file(out).expect("write abi.rs");
}
