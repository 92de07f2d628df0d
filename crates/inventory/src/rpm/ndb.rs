//! rpm's `Packages.db`: the "ndb" format (rpm's `lib/backend/ndb/rpmpkg.c`),
//! used by SUSE since SLE 15 SP3, decoded by hand.
//!
//! Layout, all integers little-endian:
//! * A 32-byte file header `{"RpmP", version = 0, generation, slot_npages,
//!   next_pkgidx, ...}` occupying the first two 16-byte slots of the slot
//!   area.
//! * `slot_npages` 4 KiB pages of 16-byte slots `{"Slot", pkgidx, blkoff,
//!   blkcnt}`; `pkgidx == 0` marks a free slot.
//! * Blocks addressed in 16-byte units: a block starts with a blob header
//!   `{"BlbS", pkgidx, generation, bloblen}`, then the rpm header blob,
//!   padding, and ends with a 12-byte tail `{adler32, bloblen, "BlbE"}`.
//!   The Adler-32 covers everything in the block before the tail.
//!
//! The checksum is verified, so damaged blobs are reported rather than
//! decoded into garbage. Not handled: other format versions (none exist).

use std::collections::HashSet;
use std::path::Path;

use super::header::{parse_header, MAX_BLOB};
use super::source::ReadAt;
use crate::{InventoryError, Package, Warning};

pub(crate) const MAGIC: &[u8; 4] = b"RpmP";
const SLOT_MAGIC: &[u8; 4] = b"Slot";
const BLOB_MAGIC: &[u8; 4] = b"BlbS";
const TAIL_MAGIC: &[u8; 4] = b"BlbE";
const PAGE_SIZE: usize = 4096;
const SLOT_SIZE: usize = 16;
const BLOCK_SIZE: u64 = 16;
const BLOB_HEAD: usize = 16;
const BLOB_TAIL: usize = 12;
/// 2048 slot pages is over half a million packages; a larger count is
/// corruption, and the cap bounds the slot table we buffer (8 MiB).
const MAX_SLOT_PAGES: u32 = 2048;

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Reads all rpm headers from an ndb `Packages.db` file.
pub(crate) fn read<R: ReadAt + ?Sized>(
    src: &R,
    path: &Path,
) -> Result<(Vec<Package>, Vec<Warning>), InventoryError> {
    let mut head = [0u8; 32];
    src.read_exact_at(&mut head, 0)
        .map_err(|_| InventoryError::corrupt(path, "ndb header truncated"))?;
    if &head[0..4] != MAGIC {
        return Err(InventoryError::UnknownFormat {
            path: path.to_path_buf(),
        });
    }
    let version = le32(&head, 4);
    if version != 0 {
        return Err(InventoryError::corrupt(
            path,
            format!("unsupported ndb version {version}"),
        ));
    }
    let slot_pages = le32(&head, 12);
    if slot_pages == 0 || slot_pages > MAX_SLOT_PAGES {
        return Err(InventoryError::corrupt(
            path,
            format!("implausible slot page count {slot_pages}"),
        ));
    }
    let slot_area = slot_pages as usize * PAGE_SIZE;
    let mut slots = vec![0u8; slot_area];
    src.read_exact_at(&mut slots, 0)
        .map_err(|_| InventoryError::corrupt(path, "ndb slot pages truncated"))?;

    let mut packages = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    // Counted rather than reported one by one: a garbage slot area would
    // otherwise produce hundreds of thousands of identical warnings.
    let mut bad_slots = 0usize;
    // The first two slots are the file header.
    for slot in slots.chunks_exact(SLOT_SIZE).skip(2) {
        if &slot[0..4] != SLOT_MAGIC {
            bad_slots += 1;
            continue;
        }
        let pkgidx = le32(slot, 4);
        if pkgidx == 0 {
            // rpm zeroes the whole slot when freeing it; a leftover block
            // reference means the package index itself was damaged.
            if le32(slot, 8) != 0 || le32(slot, 12) != 0 {
                warnings.push(Warning::new(
                    path,
                    None,
                    "free slot still references a block",
                ));
            }
            continue;
        }
        let at = Some(u64::from(pkgidx));
        if !seen.insert(pkgidx) {
            warnings.push(Warning::new(
                path,
                at,
                "package index listed in two slots; second ignored",
            ));
            continue;
        }
        let result = read_block(src, slot_area as u64, pkgidx, le32(slot, 8), le32(slot, 12))
            .and_then(|blob| parse_header(&blob));
        match result {
            Ok(package) => packages.push(package),
            Err(msg) => warnings.push(Warning::new(path, at, msg)),
        }
    }
    if bad_slots > 0 {
        warnings.push(Warning::new(
            path,
            None,
            format!("{bad_slots} slots with bad magic skipped"),
        ));
    }
    Ok((packages, warnings))
}

/// Reads and validates one block, returning the header blob inside it.
fn read_block<R: ReadAt + ?Sized>(
    src: &R,
    slot_area: u64,
    pkgidx: u32,
    blkoff: u32,
    blkcnt: u32,
) -> Result<Vec<u8>, String> {
    let start = u64::from(blkoff) * BLOCK_SIZE;
    let len = u64::from(blkcnt) * BLOCK_SIZE;
    if start < slot_area {
        return Err(format!("block offset {blkoff} lies inside the slot pages"));
    }
    if len < (BLOB_HEAD + BLOB_TAIL) as u64
        || len > (MAX_BLOB + BLOB_HEAD + BLOB_TAIL) as u64 + BLOCK_SIZE
    {
        return Err(format!("implausible block count {blkcnt}"));
    }
    if start + len > src.size() {
        return Err(format!(
            "block {blkoff}+{blkcnt} runs past the end of the file"
        ));
    }
    // Bounded by the MAX_BLOB check above.
    let mut block = vec![0u8; len as usize];
    src.read_exact_at(&mut block, start)
        .map_err(|e| format!("reading block {blkoff}: {e}"))?;
    if &block[0..4] != BLOB_MAGIC {
        return Err("blob header has bad magic".to_string());
    }
    if le32(&block, 4) != pkgidx {
        return Err(format!("blob belongs to package index {}", le32(&block, 4)));
    }
    let blob_len = le32(&block, 12) as usize;
    let tail = block.len() - BLOB_TAIL;
    if blob_len > tail - BLOB_HEAD {
        return Err(format!("blob length {blob_len} exceeds its block"));
    }
    if &block[tail + 8..] != TAIL_MAGIC || le32(&block, tail + 4) as usize != blob_len {
        return Err("blob tail is damaged".to_string());
    }
    if adler32(&block[..tail]) != le32(&block, tail) {
        return Err("blob checksum mismatch".to_string());
    }
    block.truncate(BLOB_HEAD + blob_len);
    block.drain(..BLOB_HEAD);
    Ok(block)
}

/// Adler-32 (RFC 1950), the checksum ndb stores in each blob tail.
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // 5552 is the longest run for which the sums cannot overflow a u32
    // before reduction (zlib's NMAX).
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::adler32;

    #[test]
    fn adler32_matches_rfc1950_examples() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let long = vec![0xffu8; 100_000];
        // Reference value computed with Python's zlib.adler32.
        assert_eq!(adler32(&long), 0x149a_302c);
    }
}
