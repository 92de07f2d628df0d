//! The auth log follower on a real file (in /dev/shm) written, truncated
//! and refilled at will, with restarts from the saved position: whatever
//! the bytes and the order, it returns only whole lines (no newline inside,
//! none longer than its cap) and never one twice.
#![no_main]

use std::io::Write;
use std::path::PathBuf;

use kestrel_logins::{FollowerOptions, LogFollower};

const MAX_LINE: usize = 64;

fn dir() -> PathBuf {
    let d = PathBuf::from(format!(
        "/dev/shm/kestrel-fuzz-follow-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let d = dir();
    let (log, state) = (d.join("auth.log"), d.join("state"));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&state);
    let opts = || FollowerOptions {
        state_path: Some(state.clone()),
        start_at_end: false,
        max_line: MAX_LINE,
        max_batch: 100,
    };
    let mut f = LogFollower::open(&log, opts()).unwrap();
    // Newlines written and lines returned since the last truncation.
    let mut newlines = 0usize;
    let mut returned = 0usize;
    // Operations separated by NUL: the first byte says which, the rest is
    // what to write.
    for op in data.split(|&b| b == 0).take(64) {
        let Some((&code, bytes)) = op.split_first() else {
            continue;
        };
        match code % 4 {
            0 | 1 => {}
            2 => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                newlines = 0;
                returned = 0;
            }
            _ => {
                drop(f);
                f = LogFollower::open(&log, opts()).unwrap();
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        file.write_all(bytes).unwrap();
        newlines += bytes.iter().filter(|&&b| b == b'\n').count();
        for line in f.poll().unwrap() {
            assert!(!line.contains('\n'), "{line:?}");
            // Invalid UTF-8 bytes come back as \xNN.
            assert!(line.len() <= 4 * MAX_LINE, "{} bytes", line.len());
            returned += 1;
        }
        // Nothing repeated: at most one line per newline written.
        assert!(
            returned <= newlines,
            "{returned} lines from {newlines} newlines"
        );
    }
});
