//! `rpmdb.sqlite` (rpm ≥ 4.16): table `Packages(hnum INTEGER PRIMARY KEY,
//! blob BLOB)`, one rpm header blob per row, `hnum` being the header
//! instance number.
//!
//! The database is opened read-only and, normally, as `immutable`: SQLite
//! then takes no locks and creates no `-shm`/`-wal` files, so reading works
//! on read-only mounts and never interferes with a running rpm. The cost is
//! that a write-ahead log would be ignored, so when a non-empty `-wal` file
//! exists a normal read-only open is tried first and `immutable` is only
//! the fallback (with a warning), e.g. when the directory is read-only.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::header::{parse_header, MAX_BLOB};
use crate::{InventoryError, Package, Warning};

type Collected = (Vec<Package>, Vec<Warning>);

/// Reads all packages from an rpm SQLite database file.
pub(crate) fn read(path: &Path) -> Result<Collected, InventoryError> {
    let sqlite_err = |source| InventoryError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_has_data = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);

    let mut fallback_warning = None;
    if wal_has_data {
        match open(path, false).and_then(|conn| collect(&conn, path)) {
            Ok(result) => return Ok(result),
            Err(e) => {
                let msg =
                    format!("write-ahead log unreadable ({e}); recent changes may be missing");
                fallback_warning = Some(Warning::new(path, None, msg));
            }
        }
    }
    let conn = open(path, true).map_err(sqlite_err)?;
    let (packages, mut warnings) = collect(&conn, path).map_err(sqlite_err)?;
    warnings.splice(0..0, fallback_warning);
    Ok((packages, warnings))
}

fn open(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    let mut uri = String::from("file:");
    // A URI needs '%', '?' and '#' escaped; escaping every byte outside a
    // safe set also copes with non-UTF-8 paths.
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    if immutable {
        uri.push_str("&immutable=1");
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(uri, flags)
}

/// Runs the package query. Errors before the first row (missing table,
/// unreadable file) are returned; damage met later ends the scan with a
/// warning so that the packages already read are kept.
fn collect(conn: &Connection, path: &Path) -> rusqlite::Result<Collected> {
    // Oversized blobs are not even loaded: SQLite answers length() from the
    // record header, and the CASE yields NULL instead of the blob.
    let mut stmt = conn.prepare(
        "SELECT hnum, length(blob), CASE WHEN length(blob) <= ?1 THEN blob END \
         FROM Packages ORDER BY hnum",
    )?;
    let limit = i64::try_from(MAX_BLOB).unwrap_or(i64::MAX);
    let mut rows = stmt.query([limit])?;
    let mut packages = Vec::new();
    let mut warnings = Vec::new();
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) if packages.is_empty() && warnings.is_empty() => return Err(e),
            Err(e) => {
                warnings.push(Warning::new(path, None, format!("scan aborted: {e}")));
                break;
            }
        };
        let hnum = match row.get_ref(0) {
            Ok(ValueRef::Integer(n)) => u64::try_from(n).ok(),
            _ => None,
        };
        let result = match (row.get_ref(1), row.get_ref(2)) {
            (_, Ok(ValueRef::Blob(blob))) => parse_header(blob),
            (Ok(ValueRef::Integer(len)), Ok(ValueRef::Null)) if len > limit => Err(format!(
                "header of {len} bytes exceeds the {MAX_BLOB} byte limit"
            )),
            _ => Err("blob column is not a blob".to_string()),
        };
        match result {
            Ok(package) => packages.push(package),
            Err(msg) => warnings.push(Warning::new(path, hnum, msg)),
        }
    }
    Ok((packages, warnings))
}
