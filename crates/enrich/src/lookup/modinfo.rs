//! A kernel module file's own name.

use std::path::Path;

use kestrel_event::lossless_string;

/// The module's name from its `.modinfo` strings ("name=foo"), read from
/// the first 64 MiB of an uncompressed .ko; `None` otherwise.
pub(crate) fn module_name(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 << 20)
        .read_to_end(&mut data)
        .ok()?;
    let at = data.windows(6).position(|w| w == b"\0name=")? + 6;
    let end = data[at..].iter().position(|&b| b == 0)?;
    Some(lossless_string(&data[at..at + end]))
}
