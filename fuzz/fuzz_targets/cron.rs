//! Cron tables, anacrontab and systemd timer units: a user writes their
//! own crontab.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        kestrel_inventory::fuzzing::cron(text);
    }
});
