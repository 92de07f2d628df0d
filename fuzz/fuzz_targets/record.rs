//! Ring buffer records are trusted less than they could be: a record that
//! does not decode must be an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel_decode::decode(data);
});
