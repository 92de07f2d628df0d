//! Writes the seed corpus of the `record` fuzz target: one record of each
//! kind as the kernel sends it, and DNS records carrying a query and an
//! answer. `cargo run -p kestrel-decode --example fuzz_seeds -- fuzz/corpus/record`

use kestrel_decode::dns::build;
use kestrel_decode::raw::{self, Creation};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("a directory"));
    std::fs::create_dir_all(&dir).unwrap();
    let t = || raw::task(4242, 1, 1000, b"bash");
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "exec",
            raw::exec(
                t(),
                b"/usr/bin/curl",
                &[b"home", b"user"],
                &[b"user.slice", b"session-1.scope"],
                &[b"curl", b"-s", b"http://example.com/"],
                &[b"PATH=/usr/bin", b"LANG=C.UTF-8"],
                &[(1, b"systemd"), (900, b"sshd")],
            ),
        ),
        ("connect", raw::connect(t(), 0, [93, 184, 216, 34], 443)),
        (
            "connect6",
            raw::connect6(
                t(),
                -115,
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                80,
            ),
        ),
        ("ptrace", raw::ptrace(t(), 16, 777, 0, 0, 0)),
        (
            "dns",
            raw::dns(t(), &build::message(7, 0x8180, "example.com", 1)),
        ),
        ("cred", raw::cred(t(), 1000, 1000, 0, b"/usr/bin/sudo")),
        (
            "module",
            raw::module(t(), 0, 3, 16384, 0, &[b"lib", b"modules", b"x.ko"]),
        ),
        (
            "file",
            raw::file(
                t(),
                Creation::Open,
                0o100644,
                &[b"tmp", b"dropper"],
                b"dropper",
            ),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
