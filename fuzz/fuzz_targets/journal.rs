//! `journalctl -o json` lines: the fields of a journal entry are what any
//! local process sent to journald.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = kestrel_logins::parse_journal_json(&line);
});
