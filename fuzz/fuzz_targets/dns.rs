//! DNS payloads come from any process on the host: the parser must stay
//! bounded on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel_decode::dns::parse(data);
});
