//! rpm databases (Berkeley DB hash, ndb) and header blobs, decoded by
//! hand: package metadata comes from package authors, and the files may be
//! damaged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_inventory::fuzzing::rpm(data);
});
