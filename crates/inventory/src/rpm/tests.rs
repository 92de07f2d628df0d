//! Robustness tests: damaged copies of the real fixtures must produce
//! warnings or errors, never a panic or a hang.

use std::path::{Path, PathBuf};

use super::{bdb, detect, ndb, read_db, Format};

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/rpmdb")
}

fn load(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Deterministic pseudo-random positions (xorshift), so failures reproduce.
fn positions(len: usize, n: usize, mut seed: u64) -> Vec<usize> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % len as u64) as usize
        })
        .collect()
}

type Outcome = Result<(Vec<crate::Package>, Vec<crate::Warning>), crate::InventoryError>;

/// Runs `read` on truncated and bit-flipped copies of `data`. Every byte
/// of the first `dense` bytes is flipped (headers and slot tables are
/// where lengths live), plus `sparse` random positions elsewhere.
///
/// Beyond not panicking or hanging, damage must never lose packages
/// silently: fewer packages than the intact file requires a warning or an
/// error.
fn torture(data: &[u8], dense: usize, sparse: usize, read: impl Fn(&[u8]) -> Outcome) {
    let full = match read(data) {
        Ok((p, w)) if w.is_empty() && !p.is_empty() => p.len(),
        other => panic!("intact fixture must read cleanly: {other:?}"),
    };
    // An error is an acceptable answer to damage; only successful reads
    // are held to the package count.
    let check = |what: &str, outcome: Outcome| {
        if let Ok((p, w)) = outcome {
            assert!(p.len() <= full, "{what} invented packages");
            assert!(
                p.len() == full || !w.is_empty(),
                "{what} lost packages silently"
            );
        }
    };
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend(positions(data.len(), 24, 0x9e37_79b9_7f4a_7c15));
    for cut in cuts {
        let cut = cut.min(data.len() - 1);
        check(&format!("truncation to {cut}"), read(&data[..cut]));
    }
    let mut copy = data.to_vec();
    let mut flip = |at: usize, bit: u8| {
        copy[at] ^= 1 << bit;
        check(&format!("flip of bit {bit} at {at}"), read(&copy));
        copy[at] ^= 1 << bit;
    };
    for at in 0..dense.min(data.len()) {
        flip(at, (at % 8) as u8);
    }
    for (i, at) in positions(data.len(), sparse, 0x2545_f491_4f6c_dd1d)
        .into_iter()
        .enumerate()
    {
        flip(at, (i % 8) as u8);
    }
}

#[test]
fn detects_formats_by_content() {
    assert_eq!(
        detect(&load("sqlite-cbl-mariner-2.0/rpmdb.sqlite")[..16]),
        Some(Format::Sqlite)
    );
    assert_eq!(
        detect(&load("bdb-libuuid/Packages")[..16]),
        Some(Format::BerkeleyHash)
    );
    assert_eq!(
        detect(&load("ndb-sle15-bci/Packages.db")[..16]),
        Some(Format::Ndb)
    );
    assert_eq!(detect(b"hello"), None);
}

#[test]
fn damaged_berkeley_db_never_panics() {
    let data = load("bdb-libuuid/Packages");
    let path = Path::new("Packages");
    torture(&data, 4096 * 3, 400, |d| bdb::read(d, path));
}

/// A small but real ndb image: the fixture's header and slot page with
/// only the three smallest packages, their blocks moved next to the slots
/// (blocks are position independent: the checksum covers only the block).
/// Torturing it thousands of times stays fast in an unoptimised build.
fn mini_ndb(full: &[u8]) -> Vec<u8> {
    let le = |at: usize| u32::from_le_bytes([full[at], full[at + 1], full[at + 2], full[at + 3]]);
    let mut slots: Vec<(u32, u32, u32)> = (2..256)
        .map(|i| (le(i * 16 + 4), le(i * 16 + 8), le(i * 16 + 12)))
        .filter(|&(idx, _, _)| idx != 0)
        .collect();
    slots.sort_by_key(|&(_, _, cnt)| cnt);
    let mut image = full[..4096].to_vec();
    for slot in image[32..].chunks_exact_mut(16) {
        slot[4..].fill(0);
    }
    for (n, &(idx, off, cnt)) in slots.iter().take(3).enumerate() {
        let new_off = (image.len() / 16) as u32;
        let at = 32 + n * 16;
        image[at + 4..at + 8].copy_from_slice(&idx.to_le_bytes());
        image[at + 8..at + 12].copy_from_slice(&new_off.to_le_bytes());
        image[at + 12..at + 16].copy_from_slice(&cnt.to_le_bytes());
        image.extend_from_slice(&full[off as usize * 16..(off + cnt) as usize * 16]);
    }
    image
}

#[test]
fn damaged_ndb_never_panics() {
    let data = load("ndb-sle15-bci/Packages.db");
    let path = Path::new("Packages.db");
    let read = |d: &[u8]| ndb::read(d, path);
    let mini = mini_ndb(&data);
    assert_eq!(read(&mini).map(|(p, _)| p.len()).ok(), Some(3));
    torture(&mini, 4096 + 64, 600, read);
    // A lighter pass over the full file, for damage far into it.
    torture(&data, 0, 24, read);
}

#[test]
fn damaged_ndb_blobs_are_reported() {
    let mut data = load("ndb-sle15-bci/Packages.db");
    let (intact, _) = ndb::read(data.as_slice(), Path::new("x")).expect("fixture reads");
    // Slot 2 (first package) points at block 256; damage a byte well
    // inside that blob: the checksum must catch it.
    data[256 * 16 + 100] ^= 0x40;
    let (pkgs, warns) = ndb::read(data.as_slice(), Path::new("x")).expect("still readable");
    assert_eq!(pkgs.len(), intact.len() - 1);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(
        warns[0].message.contains("checksum"),
        "{}",
        warns[0].message
    );
    assert_eq!(warns[0].line_or_record, Some(1));
}

#[test]
fn damaged_sqlite_never_panics() {
    let data = load("sqlite-cbl-mariner-2.0/rpmdb.sqlite");
    let dir = std::env::temp_dir().join(format!("kestrel-rpm-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("rpmdb.sqlite");
    let mut variants: Vec<Vec<u8>> = [0, 50, 100, 4096, 65536, data.len() / 2, data.len() - 1]
        .iter()
        .map(|&cut| data[..cut].to_vec())
        .collect();
    // Page 1 holds the schema, the rest is mostly package blobs.
    for (i, at) in [20usize, 28, 56, 100, 105, 4096 + 3, 8192 + 11]
        .into_iter()
        .chain(positions(data.len(), 8, 7))
        .enumerate()
    {
        let mut copy = data.clone();
        copy[at] ^= 1 << (i % 8);
        variants.push(copy);
    }
    for variant in &variants {
        std::fs::write(&file, variant).expect("write variant");
        let _ = read_db(&file);
        let _ = read_db(&dir);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_and_missing_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("kestrel-rpm-unknown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty_dir = read_db(&dir);
    std::fs::write(dir.join("Packages"), b"not a database").expect("write");
    let garbage = read_db(&dir);
    std::fs::write(dir.join("Packages"), b"").expect("write");
    let empty = read_db(&dir.join("Packages"));
    std::fs::remove_dir_all(&dir).ok();
    assert!(matches!(
        empty_dir,
        Err(crate::InventoryError::UnknownFormat { .. })
    ));
    assert!(matches!(
        garbage,
        Err(crate::InventoryError::UnknownFormat { .. })
    ));
    assert!(matches!(
        empty,
        Err(crate::InventoryError::UnknownFormat { .. })
    ));
    assert!(matches!(
        read_db(Path::new("/nonexistent/rpm")),
        Err(crate::InventoryError::Io { .. })
    ));
}

#[test]
fn sqlite_write_ahead_log_is_honoured() {
    let dir = std::env::temp_dir().join(format!("kestrel-rpm-wal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("rpmdb.sqlite");
    std::fs::copy(
        fixtures().join("sqlite-cbl-mariner-2.0/rpmdb.sqlite"),
        &file,
    )
    .expect("copy");
    // A writer that stays open keeps its committed change in the -wal file
    // (closing the last connection would checkpoint it into the database),
    // like rpm in the middle of a transaction set.
    let writer = rusqlite::Connection::open(&file).expect("open writer");
    writer
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA foreign_keys=OFF;
             DELETE FROM Packages WHERE hnum = (SELECT min(hnum) FROM Packages);",
        )
        .expect("delete one package");
    let result = read_db(&dir);
    drop(writer);
    std::fs::remove_dir_all(&dir).ok();
    let (packages, warnings) = result.expect("readable");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        packages.len(),
        128,
        "the deletion in the WAL must be visible"
    );
}

/// Rewrites the little-endian fixture as a big-endian host would have
/// written it: every integer Berkeley DB itself stores is swapped, while
/// the rpm header blobs (always big-endian) stay as they are.
fn to_big_endian(le: &[u8]) -> Vec<u8> {
    fn swap(b: &mut [u8], at: usize, width: usize) {
        b[at..at + width].reverse();
    }
    let mut be = le.to_vec();
    for at in [8, 12, 16, 20, 28, 32] {
        swap(&mut be, at, 4);
    }
    for page in be.chunks_exact_mut(4096).skip(1) {
        let entries = usize::from(u16::from_le_bytes([page[20], page[21]]));
        let hash = page[25] == 13;
        for at in [8, 12, 16] {
            swap(page, at, 4);
        }
        swap(page, 20, 2);
        swap(page, 22, 2);
        if !hash {
            continue;
        }
        for i in 0..entries {
            let off = usize::from(u16::from_le_bytes([page[26 + 2 * i], page[27 + 2 * i]]));
            swap(page, 26 + 2 * i, 2);
            match page[off] {
                3 => {
                    swap(page, off + 4, 4);
                    swap(page, off + 8, 4);
                }
                // Keys, and rpm's counter record: 4-byte native integers.
                1 => swap(page, off + 1, 4),
                _ => {}
            }
        }
    }
    be
}

#[test]
fn big_endian_berkeley_db_reads_the_same() {
    let le = load("bdb-libuuid/Packages");
    let path = Path::new("Packages");
    let (expected, _) = bdb::read(le.as_slice(), path).expect("fixture reads");
    let (packages, warnings) = bdb::read(to_big_endian(&le).as_slice(), path).expect("readable");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(packages, expected);
}

#[test]
fn berkeley_db_inline_values_are_read() {
    // A hand-made two-page database: the fixture's metadata page, then one
    // hash page holding rpm's counter and a small header stored inline
    // (H_KEYDATA) rather than on overflow pages.
    let fixture = load("bdb-libuuid/Packages");
    let mut db = fixture[..4096].to_vec();
    db[32..36].copy_from_slice(&1u32.to_le_bytes());
    let mut page = vec![0u8; 4096];
    let header = super::header::tests::sample();
    let items: [Vec<u8>; 4] = [
        [&[1u8][..], &0u32.to_le_bytes()].concat(),
        [&[1u8][..], &2u32.to_le_bytes()].concat(),
        [&[1u8][..], &7u32.to_le_bytes()].concat(),
        [&[1u8][..], &header].concat(),
    ];
    let mut end = page.len();
    for (i, item) in items.iter().enumerate() {
        let start = end - item.len();
        page[start..end].copy_from_slice(item);
        page[26 + 2 * i..28 + 2 * i].copy_from_slice(&(start as u16).to_le_bytes());
        end = start;
    }
    page[8..12].copy_from_slice(&1u32.to_le_bytes());
    page[20..22].copy_from_slice(&(items.len() as u16).to_le_bytes());
    page[22..24].copy_from_slice(&(end as u16).to_le_bytes());
    page[25] = 13;
    db.extend_from_slice(&page);
    let (packages, warnings) = bdb::read(db.as_slice(), Path::new("x")).expect("readable");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(packages.len(), 1);
    assert_eq!(packages[0].name, "foo");
}
