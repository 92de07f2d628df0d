//! rpm's `Packages` file: a Berkeley DB hash database, decoded by hand.
//!
//! Layout (Berkeley DB 4.x–5.x, `db_page.h`): page 0 is the hash metadata
//! page; every other page starts with a 26-byte header
//! `{lsn[8], pgno, prev_pgno, next_pgno, entries:u16, hf_offset:u16,
//! level:u8, type:u8}`. Hash pages hold an array of `entries` u16 offsets
//! right after the header, alternating key and data items; items are packed
//! from the end of the page downwards, so an item ends where the previous
//! one starts. A data item is either inline (`H_KEYDATA`: a type byte then
//! the bytes) or, for anything large such as an rpm header, an `H_OFFPAGE`
//! reference to a chain of overflow pages, each carrying `hf_offset` bytes.
//!
//! Instead of walking buckets, every page is visited once and hash pages
//! are decoded where they lie: this needs no bucket arithmetic and bounds
//! the work by the file size. Integers are in the byte order of the host
//! that wrote the file, which the metadata magic reveals.
//!
//! Not handled: encrypted or checksummed databases, duplicate-key items (`H_DUPLICATE`,
//! `H_OFFDUP`; rpm never stores duplicates) and external blob files
//! (`H_BLOB`, Berkeley DB 6).

use std::path::Path;

use super::header::{parse_header, MAX_BLOB};
use super::source::ReadAt;
use crate::{InventoryError, Package, Warning};

/// Hash database magic number (`DB_HASHMAGIC`).
const HASH_MAGIC: u32 = 0x0006_1561;
const PAGE_HEADER: usize = 26;
const META_SIZE: usize = 512;
/// Metadata flag: pages carry checksums.
const DBMETA_CHKSUM: u8 = 0x01;

const P_INVALID: u8 = 0;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;

const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
/// Size of an `H_OFFPAGE` item: type, 3 unused bytes, pgno, total length.
const HOFFPAGE_SIZE: usize = 12;

/// True if `bytes` (offset 12 of the file) is the hash magic in either
/// byte order.
pub(crate) fn is_hash_magic(bytes: &[u8]) -> bool {
    bytes == HASH_MAGIC.to_le_bytes() || bytes == HASH_MAGIC.to_be_bytes()
}

/// Integer decoding in the database's byte order.
#[derive(Clone, Copy)]
struct Order {
    big_endian: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let bytes: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }
}

struct Db<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    path: &'a Path,
    order: Order,
    page_size: usize,
    /// Pages actually present: the lesser of the metadata and the file.
    pages: u32,
    /// Overflow page reads left. In a sound database each overflow page
    /// belongs to exactly one item, so more reads than pages means items
    /// share or loop through chains; the budget keeps total work linear
    /// in the file size whatever the damage.
    overflow_budget: u64,
}

/// Reads all rpm headers from a Berkeley DB hash `Packages` file.
pub(crate) fn read<R: ReadAt + ?Sized>(
    src: &R,
    path: &Path,
) -> Result<(Vec<Package>, Vec<Warning>), InventoryError> {
    let mut meta = [0u8; META_SIZE];
    src.read_exact_at(&mut meta, 0)
        .map_err(|_| InventoryError::corrupt(path, "Berkeley DB metadata page truncated"))?;
    let order = if meta[12..16] == HASH_MAGIC.to_le_bytes() {
        Order { big_endian: false }
    } else if meta[12..16] == HASH_MAGIC.to_be_bytes() {
        Order { big_endian: true }
    } else {
        return Err(InventoryError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    if meta[25] != P_HASHMETA {
        return Err(InventoryError::corrupt(
            path,
            format!("page 0 has type {}, not hash metadata", meta[25]),
        ));
    }
    if meta[24] != 0 {
        return Err(InventoryError::corrupt(
            path,
            "encrypted Berkeley DB is not supported",
        ));
    }
    // Checksummed pages carry extra bytes after the page header, moving
    // every item; rpm does not enable them, so refuse rather than guess.
    if meta[26] & DBMETA_CHKSUM != 0 {
        return Err(InventoryError::corrupt(
            path,
            "Berkeley DB page checksums are not supported",
        ));
    }
    let page_size = order.u32(&meta, 20).unwrap_or(0) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(InventoryError::corrupt(
            path,
            format!("invalid page size {page_size}"),
        ));
    }
    let last_pgno = order.u32(&meta, 32).unwrap_or(0);
    let on_disk = src.size() / page_size as u64;
    let mut warnings = Vec::new();
    if on_disk > u64::from(last_pgno) + 1 {
        warnings.push(Warning::new(
            path,
            None,
            format!(
                "metadata lists {} pages but the file holds {on_disk}; the rest is ignored",
                u64::from(last_pgno) + 1
            ),
        ));
    }
    let pages = if u64::from(last_pgno) + 1 > on_disk {
        warnings.push(Warning::new(
            path,
            None,
            format!(
                "file truncated: metadata lists {} pages, file holds {on_disk}",
                u64::from(last_pgno) + 1
            ),
        ));
        // on_disk < last_pgno + 1 <= 2^32, so this fits.
        u32::try_from(on_disk).unwrap_or(u32::MAX)
    } else {
        last_pgno.saturating_add(1)
    };

    let mut db = Db {
        src,
        path,
        order,
        page_size,
        pages,
        overflow_budget: u64::from(pages),
    };
    let mut packages = Vec::new();
    let mut page = vec![0u8; page_size];
    for pgno in 1..pages {
        if let Err(msg) = db.read_page(pgno, &mut page) {
            warnings.push(Warning::new(path, None, msg));
            continue;
        }
        match page[25] {
            P_HASH | P_HASH_UNSORTED => {}
            // Overflow pages are read through their chains; unused pages
            // (preallocated buckets, free list) are zeroed or P_INVALID.
            P_OVERFLOW | P_INVALID => continue,
            other => {
                warnings.push(Warning::new(
                    path,
                    None,
                    format!("page {pgno}: unexpected page type {other}"),
                ));
                continue;
            }
        }
        if db.order.u32(&page, 8) != Some(pgno) {
            warnings.push(Warning::new(
                path,
                None,
                format!("page {pgno}: header names another page; skipped"),
            ));
            continue;
        }
        db.scan_hash_page(pgno, &page, &mut packages, &mut warnings);
    }
    Ok((packages, warnings))
}

impl<R: ReadAt + ?Sized> Db<'_, R> {
    fn read_page(&self, pgno: u32, buf: &mut [u8]) -> Result<(), String> {
        let offset = u64::from(pgno) * self.page_size as u64;
        self.src
            .read_exact_at(buf, offset)
            .map_err(|e| format!("page {pgno}: read failed: {e}"))
    }

    fn scan_hash_page(
        &mut self,
        pgno: u32,
        page: &[u8],
        packages: &mut Vec<Package>,
        warnings: &mut Vec<Warning>,
    ) {
        let entries = usize::from(self.order.u16(page, 20).unwrap_or(0));
        let index_end = PAGE_HEADER + 2 * entries;
        if index_end > self.page_size {
            warnings.push(Warning::new(
                self.path,
                None,
                format!("page {pgno}: {entries} entries do not fit the page"),
            ));
            return;
        }
        if entries % 2 != 0 {
            warnings.push(Warning::new(
                self.path,
                None,
                format!("page {pgno}: odd entry count {entries}; last key ignored"),
            ));
        }
        let offsets: Vec<usize> = (0..entries)
            .map(|i| usize::from(self.order.u16(page, PAGE_HEADER + 2 * i).unwrap_or(0)))
            .collect();
        // hf_offset marks where the lowest item starts; a mismatch means
        // the entry count or an offset is damaged and items may be lost.
        let hf_offset = usize::from(self.order.u16(page, 22).unwrap_or(0));
        if hf_offset != offsets.last().copied().unwrap_or(self.page_size) {
            warnings.push(Warning::new(
                self.path,
                None,
                format!("page {pgno}: entry offsets disagree with the free-space offset"),
            ));
        }
        let page_size = self.page_size;
        // Item i occupies offsets[i] up to where item i-1 starts.
        let item = |i: usize| -> Option<&[u8]> {
            let end = if i == 0 { page_size } else { offsets[i - 1] };
            let start = offsets[i];
            (start >= index_end && start < end && end <= page_size).then(|| &page[start..end])
        };
        for pair in 0..entries / 2 {
            let (Some(key), Some(data)) = (item(2 * pair), item(2 * pair + 1)) else {
                warnings.push(Warning::new(
                    self.path,
                    None,
                    format!("page {pgno}: item pair {pair} lies outside the page"),
                ));
                continue;
            };
            // rpm's key is the header instance number, 4 bytes in the
            // database's byte order; instance 0 holds rpm's own 4-byte
            // counter. Both must match before skipping, so that a damaged
            // key cannot make a package silently disappear.
            let instance = match key {
                [H_KEYDATA, rest @ ..] if rest.len() == 4 => self.order.u32(rest, 0),
                _ => None,
            };
            if instance == Some(0) && data.len() == 5 && data[0] == H_KEYDATA {
                continue;
            }
            let at = instance.map(u64::from);
            let value = match data[0] {
                H_KEYDATA => Ok(data[1..].to_vec()),
                H_OFFPAGE => self.read_overflow(data),
                H_DUPLICATE | H_OFFDUP => Err("duplicate-key items are not supported".to_string()),
                other => Err(format!("unknown item type {other}")),
            };
            let parsed = value.and_then(|blob| parse_header(&blob));
            match parsed {
                Ok(package) => packages.push(package),
                Err(msg) => {
                    warnings.push(Warning::new(self.path, at, format!("page {pgno}: {msg}")))
                }
            }
            if self.overflow_budget == 0 {
                warnings.push(Warning::new(
                    self.path,
                    None,
                    "overflow pages referenced more than once; remaining items skipped",
                ));
                return;
            }
        }
    }

    /// Reassembles a value stored on a chain of overflow pages.
    fn read_overflow(&mut self, item: &[u8]) -> Result<Vec<u8>, String> {
        if item.len() < HOFFPAGE_SIZE {
            return Err("truncated off-page reference".to_string());
        }
        let mut pgno = self.order.u32(item, 4).unwrap_or(0);
        let total = self.order.u32(item, 8).unwrap_or(0) as usize;
        if total > MAX_BLOB {
            return Err(format!(
                "value of {total} bytes exceeds the {MAX_BLOB} byte limit"
            ));
        }
        let mut value = Vec::with_capacity(total);
        let mut page = vec![0u8; self.page_size];
        while value.len() < total {
            if pgno == 0 || pgno >= self.pages {
                return Err(format!("overflow chain points to missing page {pgno}"));
            }
            if self.overflow_budget == 0 {
                return Err("overflow chain revisits pages".to_string());
            }
            self.overflow_budget -= 1;
            self.read_page(pgno, &mut page)?;
            if page[25] != P_OVERFLOW {
                return Err(format!(
                    "page {pgno} in overflow chain has type {}",
                    page[25]
                ));
            }
            // On overflow pages hf_offset is the number of bytes stored.
            let len = usize::from(self.order.u16(&page, 22).unwrap_or(0));
            let chunk = page
                .get(PAGE_HEADER..PAGE_HEADER + len)
                .ok_or_else(|| format!("overflow page {pgno} claims {len} bytes"))?;
            if chunk.is_empty() || value.len() + chunk.len() > total {
                return Err(format!(
                    "overflow page {pgno} does not add up to {total} bytes"
                ));
            }
            value.extend_from_slice(chunk);
            pgno = self.order.u32(&page, 16).unwrap_or(0);
        }
        Ok(value)
    }
}
