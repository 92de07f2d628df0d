//! dpkg's status file: package metadata comes from package authors, and
//! the file may be damaged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel_inventory::dpkg::parse_status(data);
});
