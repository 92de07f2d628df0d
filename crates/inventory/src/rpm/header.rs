//! Decoding of rpm header blobs, as stored in every rpmdb backend.
//!
//! A stored header is the on-disk rpm header without its 8-byte magic:
//! big-endian `il` (index entry count) and `dl` (data length), then `il`
//! 16-byte entries `{tag, type, offset, count}`, then `dl` bytes of data
//! that the entries point into. Only the handful of tags needed for an
//! inventory are decoded; everything else is ignored.

use crate::{Package, PackageSource};

/// Largest header blob accepted. Real headers are well under 1 MiB (even
/// kernel packages with tens of thousands of files); the cap keeps a
/// corrupt length field from driving a huge allocation.
pub(crate) const MAX_BLOB: usize = 64 * 1024 * 1024;

/// rpm's own limit on index entries (HEADER_TAGS_MAX).
const MAX_ENTRIES: usize = 0xffff;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_INSTALLTIME: u32 = 1008;
const TAG_SIZE: u32 = 1009;
const TAG_VENDOR: u32 = 1011;
const TAG_ARCH: u32 = 1022;
const TAG_LONGSIZE: u32 = 5009;
const WANTED: [u32; 9] = [
    TAG_NAME,
    TAG_VERSION,
    TAG_RELEASE,
    TAG_EPOCH,
    TAG_INSTALLTIME,
    TAG_SIZE,
    TAG_VENDOR,
    TAG_ARCH,
    TAG_LONGSIZE,
];

const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

#[derive(Clone, Copy)]
struct Entry {
    kind: u32,
    offset: usize,
    count: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Decodes one header blob into a [`Package`].
///
/// Returns a description of the damage when the blob is inconsistent or
/// lacks a name; callers turn it into a warning and move on.
pub(crate) fn parse_header(blob: &[u8]) -> Result<Package, String> {
    if blob.len() > MAX_BLOB {
        return Err(format!(
            "header of {} bytes exceeds the {MAX_BLOB} byte limit",
            blob.len()
        ));
    }
    let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
        return Err(format!("header too short ({} bytes)", blob.len()));
    };
    let (il, dl) = (il as usize, dl as usize);
    if il == 0 || il > MAX_ENTRIES {
        return Err(format!("implausible index entry count {il}"));
    }
    // Both factors are bounded above, so this cannot overflow a usize.
    let data_start = 8 + il * 16;
    let needed = data_start.saturating_add(dl);
    if needed > blob.len() {
        return Err(format!(
            "header truncated: needs {needed} bytes, has {}",
            blob.len()
        ));
    }
    let data = &blob[data_start..needed];

    let mut found: [Option<Entry>; WANTED.len()] = [None; WANTED.len()];
    for i in 0..il {
        let at = 8 + i * 16;
        let (Some(tag), Some(kind), Some(offset), Some(count)) = (
            be32(blob, at),
            be32(blob, at + 4),
            be32(blob, at + 8),
            be32(blob, at + 12),
        ) else {
            return Err(format!("index entry {i} out of bounds"));
        };
        if let Some(slot) = WANTED.iter().position(|&t| t == tag) {
            // Installed headers append "dribble" entries after the
            // immutable region (e.g. INSTALLTIME); a later entry for the
            // same tag supersedes the earlier one, as in rpm.
            found[slot] = Some(Entry {
                kind,
                offset: offset as usize,
                count,
            });
        }
    }
    let get = |tag: u32| WANTED.iter().position(|&t| t == tag).and_then(|i| found[i]);

    let string = |tag: u32| -> Result<Option<String>, String> {
        let Some(e) = get(tag) else { return Ok(None) };
        if !matches!(e.kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || e.count == 0 {
            return Err(format!(
                "tag {tag}: type {} count {} is not a string",
                e.kind, e.count
            ));
        }
        // For arrays and translated strings the first element is the
        // untranslated value, which is what `rpm -q` prints.
        let tail = data
            .get(e.offset..)
            .ok_or_else(|| format!("tag {tag}: offset {} beyond data ({dl} bytes)", e.offset))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("tag {tag}: unterminated string"))?;
        Ok(Some(String::from_utf8_lossy(&tail[..end]).into_owned()))
    };
    let int32 = |tag: u32| -> Result<Option<u32>, String> {
        let Some(e) = get(tag) else { return Ok(None) };
        if e.kind != TYPE_INT32 || e.count == 0 {
            return Err(format!(
                "tag {tag}: type {} count {} is not an int32",
                e.kind, e.count
            ));
        }
        be32(data, e.offset)
            .map(Some)
            .ok_or_else(|| format!("tag {tag}: offset {} beyond data ({dl} bytes)", e.offset))
    };
    let int64 = |tag: u32| -> Result<Option<u64>, String> {
        let Some(e) = get(tag) else { return Ok(None) };
        if e.kind != TYPE_INT64 || e.count == 0 {
            return Err(format!(
                "tag {tag}: type {} count {} is not an int64",
                e.kind, e.count
            ));
        }
        be64(data, e.offset)
            .map(Some)
            .ok_or_else(|| format!("tag {tag}: offset {} beyond data ({dl} bytes)", e.offset))
    };

    let name = string(TAG_NAME)?
        .filter(|n| !n.is_empty())
        .ok_or("header has no NAME")?;
    // LONGSIZE only exists when the size does not fit SIZE's 32 bits.
    let size = match int64(TAG_LONGSIZE)? {
        Some(size) => size,
        None => u64::from(int32(TAG_SIZE)?.unwrap_or(0)),
    };
    Ok(Package {
        name,
        version: string(TAG_VERSION)?.unwrap_or_default(),
        release: string(TAG_RELEASE)?.unwrap_or_default(),
        epoch: int32(TAG_EPOCH)?,
        arch: string(TAG_ARCH)?.unwrap_or_default(),
        size,
        vendor: string(TAG_VENDOR)?.unwrap_or_default(),
        install_time: int32(TAG_INSTALLTIME)?.map(u64::from),
        source: PackageSource::Rpm,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a header blob from `(tag, type, payload, count)` entries.
    pub(crate) fn build(entries: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for &(tag, kind, payload, count) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&count.to_be_bytes());
            data.extend_from_slice(payload);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&data);
        blob
    }

    pub(crate) fn sample() -> Vec<u8> {
        build(&[
            (TAG_NAME, TYPE_STRING, b"foo\0", 1),
            (TAG_VERSION, TYPE_STRING, b"1.2\0", 1),
            (TAG_RELEASE, TYPE_STRING, b"3.el9\0", 1),
            (TAG_EPOCH, TYPE_INT32, &7u32.to_be_bytes(), 1),
            (TAG_SIZE, TYPE_INT32, &1234u32.to_be_bytes(), 1),
            (TAG_VENDOR, TYPE_I18NSTRING, b"ACME\0", 1),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0", 1),
            (
                TAG_INSTALLTIME,
                TYPE_INT32,
                &1_700_000_000u32.to_be_bytes(),
                1,
            ),
        ])
    }

    #[test]
    fn decodes_wanted_tags() {
        let p = parse_header(&sample()).expect("valid header");
        assert_eq!(p.name, "foo");
        assert_eq!(
            (p.epoch, p.version.as_str(), p.release.as_str()),
            (Some(7), "1.2", "3.el9")
        );
        assert_eq!(
            (p.arch.as_str(), p.size, p.vendor.as_str()),
            ("x86_64", 1234, "ACME")
        );
        assert_eq!(p.install_time, Some(1_700_000_000));
    }

    #[test]
    fn longsize_wins_and_later_entries_override() {
        let blob = build(&[
            (TAG_NAME, TYPE_STRING, b"old\0", 1),
            (TAG_SIZE, TYPE_INT32, &1u32.to_be_bytes(), 1),
            (TAG_LONGSIZE, TYPE_INT64, &(5u64 << 32).to_be_bytes(), 1),
            (TAG_NAME, TYPE_STRING, b"new\0", 1),
        ]);
        let p = parse_header(&blob).expect("valid header");
        assert_eq!((p.name.as_str(), p.size, p.epoch), ("new", 5 << 32, None));
    }

    #[test]
    fn rejects_inconsistent_headers() {
        assert!(parse_header(&[]).is_err());
        assert!(parse_header(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut blob = sample();
        blob.truncate(blob.len() - 1);
        assert!(parse_header(&blob).is_err());
        let no_name = build(&[(TAG_VERSION, TYPE_STRING, b"1\0", 1)]);
        assert!(parse_header(&no_name).is_err());
        let unterminated = build(&[(TAG_NAME, TYPE_STRING, b"abc", 1)]);
        assert!(parse_header(&unterminated).is_err());
        let wrong_type = build(&[
            (TAG_NAME, TYPE_STRING, b"a\0", 1),
            (TAG_EPOCH, TYPE_STRING, b"1\0", 1),
        ]);
        assert!(parse_header(&wrong_type).is_err());
        let short_int = build(&[
            (TAG_NAME, TYPE_STRING, b"a\0", 1),
            (TAG_EPOCH, TYPE_INT32, b"\0\0", 1),
        ]);
        assert!(parse_header(&short_int).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_handled() {
        let blob = sample();
        for i in 0..blob.len() * 8 {
            let mut copy = blob.clone();
            copy[i / 8] ^= 1 << (i % 8);
            let _ = parse_header(&copy);
        }
        for len in 0..blob.len() {
            assert!(parse_header(&blob[..len]).is_err(), "truncated to {len}");
        }
    }
}
