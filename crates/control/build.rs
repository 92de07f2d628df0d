fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kestrel_control.proto");
    tonic_prost_build::configure().compile_protos(&["proto/kestrel_control.proto"], &["proto"])?;
    Ok(())
}
