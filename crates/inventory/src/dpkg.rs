//! Installed Debian packages, from dpkg's status database.
//!
//! `/var/lib/dpkg/status` is a sequence of deb822 stanzas separated by blank
//! lines. Each stanza holds `Field: value` lines; a line starting with a
//! space or tab continues the previous field. dpkg keeps stanzas for removed
//! packages whose configuration files remain, so only stanzas whose
//! `Status` is `install ok installed` are reported.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{InventoryError, Package, PackageSource, Warning};

/// The status file of a large desktop is a few MiB; refuse anything far
/// larger rather than buffering an arbitrary file in memory.
const MAX_STATUS_SIZE: u64 = 256 * 1024 * 1024;

/// Real stanzas have a few dozen fields. Beyond this many the stanza is
/// garbage, and ignoring the excess keeps the per-field duplicate check
/// from turning quadratic on a huge blank-line-free file.
const MAX_FIELDS: usize = 256;

/// `Status` is "WANT FLAG STATE": a package is on the disk when its state
/// is "installed" and nothing is wrong with it. Held packages ("hold ok
/// installed") count: pinned old versions are exactly what an inventory
/// must show.
fn is_installed(status: &str) -> bool {
    let mut f = status.split_whitespace();
    matches!(
        (f.next(), f.next(), f.next(), f.next()),
        (
            Some("install" | "hold"),
            Some("ok"),
            Some("installed"),
            None
        )
    )
}

/// Reads a dpkg status file (normally `/var/lib/dpkg/status`).
///
/// Install times are taken from the modification time of
/// `info/NAME.list` (or `info/NAME:ARCH.list`) next to the status file,
/// which dpkg rewrites when it unpacks the package; they are `None` when
/// that file is missing.
///
/// Errors only when the file cannot be read or is unreasonably large;
/// malformed content yields [`Warning`]s naming this file and the line.
pub fn read_status(path: &Path) -> Result<(Vec<Package>, Vec<Warning>), InventoryError> {
    let file = File::open(path).map_err(|e| InventoryError::io(path, e))?;
    let mut text = Vec::new();
    file.take(MAX_STATUS_SIZE + 1)
        .read_to_end(&mut text)
        .map_err(|e| InventoryError::io(path, e))?;
    if text.len() as u64 > MAX_STATUS_SIZE {
        return Err(InventoryError::corrupt(
            path,
            format!("larger than {MAX_STATUS_SIZE} bytes"),
        ));
    }
    let (mut packages, warnings) = parse(&text, path);
    if let Some(info_dir) = path.parent().map(|dir| dir.join("info")) {
        for package in &mut packages {
            package.install_time = list_mtime(&info_dir, package);
        }
    }
    Ok((packages, warnings))
}

/// Parses the contents of a dpkg status file.
///
/// Never fails: stanzas that cannot be understood are skipped with a
/// [`Warning`] whose `file` is empty (there is no path) and whose
/// `line_or_record` is the 1-based line number. `install_time` is always
/// `None` because it is not recorded in the status file itself.
pub fn parse_status(text: &[u8]) -> (Vec<Package>, Vec<Warning>) {
    parse(text, Path::new(""))
}

/// Modification time of the package's file list, as Unix seconds.
fn list_mtime(info_dir: &Path, package: &Package) -> Option<u64> {
    // Multi-Arch: same packages name their files NAME:ARCH.list, the others
    // NAME.list; which one applies is not in our Package, so try both.
    let candidates = [
        format!("{}:{}.list", package.name, package.arch),
        format!("{}.list", package.name),
    ];
    candidates.iter().find_map(|name| {
        let modified = std::fs::metadata(info_dir.join(name))
            .and_then(|m| m.modified())
            .ok()?;
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    })
}

/// A stanza being accumulated: fields in order, with the line each started on.
#[derive(Default)]
struct Stanza {
    first_line: u64,
    fields: Vec<(String, String, u64)>,
    /// MAX_FIELDS was reached and reported.
    overfull: bool,
}

impl Stanza {
    fn get(&self, name: &str) -> Option<(&str, u64)> {
        self.fields
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v, line)| (v.as_str(), *line))
    }
}

fn parse(text: &[u8], file: &Path) -> (Vec<Package>, Vec<Warning>) {
    let mut packages = Vec::new();
    let mut warnings = Vec::new();
    let mut stanza = Stanza::default();
    let mut line_no: u64 = 0;

    for raw in text.split(|&b| b == b'\n') {
        line_no += 1;
        // dpkg writes UTF-8, but a damaged file must not stop the scan.
        let line = String::from_utf8_lossy(raw);
        let line = line.strip_suffix('\r').unwrap_or(&line);

        if line.trim().is_empty() {
            finish(&mut stanza, file, &mut packages, &mut warnings);
            continue;
        }
        if stanza.fields.is_empty() && stanza.first_line == 0 {
            stanza.first_line = line_no;
        }
        if line.starts_with([' ', '\t']) {
            match stanza.fields.last_mut() {
                Some((_, value, _)) => {
                    value.push('\n');
                    value.push_str(line.trim());
                }
                None => warnings.push(Warning::new(
                    file,
                    Some(line_no),
                    "continuation line outside of any field",
                )),
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                if stanza.fields.len() >= MAX_FIELDS {
                    if !stanza.overfull {
                        stanza.overfull = true;
                        warnings.push(Warning::new(
                            file,
                            Some(line_no),
                            format!("more than {MAX_FIELDS} fields in one stanza; rest ignored"),
                        ));
                    }
                    continue;
                }
                if stanza.get(name).is_some() {
                    warnings.push(Warning::new(
                        file,
                        Some(line_no),
                        format!("duplicate field {name:?}; keeping the first"),
                    ));
                    // Still record it so continuation lines attach to it
                    // rather than to the previous, kept field.
                }
                stanza
                    .fields
                    .push((name.to_string(), value.trim().to_string(), line_no));
            }
            _ => warnings.push(Warning::new(
                file,
                Some(line_no),
                format!("not a field: {:?}", truncate(line, 80)),
            )),
        }
    }
    finish(&mut stanza, file, &mut packages, &mut warnings);
    (packages, warnings)
}

/// Turns a complete stanza into a package (if installed) and resets it.
fn finish(
    stanza: &mut Stanza,
    file: &Path,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<Warning>,
) {
    let stanza = std::mem::take(stanza);
    if stanza.fields.is_empty() {
        return;
    }
    let at = Some(stanza.first_line);
    let Some((name, _)) = stanza.get("Package").filter(|(n, _)| !n.is_empty()) else {
        warnings.push(Warning::new(file, at, "stanza without a Package field"));
        return;
    };
    let Some((status, _)) = stanza.get("Status") else {
        // dpkg always writes Status; its absence means a damaged or
        // truncated stanza, which deserves a mention even if skipped.
        warnings.push(Warning::new(
            file,
            at,
            format!("package {name:?} has no Status field"),
        ));
        return;
    };
    if !is_installed(status) {
        return;
    }
    let Some((full_version, version_line)) = stanza.get("Version").filter(|(v, _)| !v.is_empty())
    else {
        warnings.push(Warning::new(
            file,
            at,
            format!("installed package {name:?} has no Version"),
        ));
        return;
    };
    let (epoch, version, release) = match split_version(full_version) {
        Ok(parts) => parts,
        Err(msg) => {
            warnings.push(Warning::new(
                file,
                Some(version_line),
                format!("package {name:?}: {msg}"),
            ));
            return;
        }
    };
    let size = match stanza.get("Installed-Size") {
        None => 0,
        Some((kib, line)) => match kib.parse::<u64>() {
            Ok(kib) => kib.saturating_mul(1024),
            Err(_) => {
                warnings.push(Warning::new(
                    file,
                    Some(line),
                    format!(
                        "package {name:?}: bad Installed-Size {:?}",
                        truncate(kib, 40)
                    ),
                ));
                0
            }
        },
    };
    packages.push(Package {
        name: name.to_string(),
        version: version.to_string(),
        release: release.to_string(),
        epoch,
        arch: stanza
            .get("Architecture")
            .map(|(a, _)| a.to_string())
            .unwrap_or_default(),
        size,
        vendor: stanza
            .get("Maintainer")
            .map(|(m, _)| m.to_string())
            .unwrap_or_default(),
        install_time: None,
        source: PackageSource::Dpkg,
    });
}

/// Splits `[epoch:]upstream[-revision]` as dpkg does: the epoch ends at the
/// first colon and the revision starts after the last hyphen.
fn split_version(full: &str) -> Result<(Option<u32>, &str, &str), String> {
    let (epoch, rest) = match full.split_once(':') {
        Some((epoch, rest)) => match epoch.parse::<u32>() {
            Ok(e) if epoch.bytes().all(|b| b.is_ascii_digit()) => (Some(e), rest),
            _ => return Err(format!("bad epoch in version {:?}", truncate(full, 80))),
        },
        None => (None, full),
    };
    let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
    if version.is_empty() {
        return Err(format!(
            "empty upstream version in {:?}",
            truncate(full, 80)
        ));
    }
    Ok((epoch, version, release))
}

/// Keeps warning messages short when a garbage line is huge.
fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
Package: bash
Essential: yes
Status: install ok installed
Priority: required
Installed-Size: 7164
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 5.2.15-2+b7
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 More text.

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0-1

Package: libc6
Status: install ok installed
Installed-Size: 10
Architecture: amd64
Version: 1:2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>

Package: native
Status: install ok installed
Architecture: all
Version: 2.0
";

    fn names(p: &[Package]) -> Vec<&str> {
        p.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn parses_installed_stanzas_only() {
        let (pkgs, warns) = parse_status(GOOD.as_bytes());
        assert!(warns.is_empty(), "{warns:?}");
        assert_eq!(names(&pkgs), ["bash", "libc6", "native"]);
        let bash = &pkgs[0];
        assert_eq!(
            (bash.epoch, bash.version.as_str(), bash.release.as_str()),
            (None, "5.2.15", "2+b7")
        );
        assert_eq!(bash.size, 7164 * 1024);
        assert_eq!(bash.arch, "amd64");
        assert_eq!(bash.vendor, "Matthias Klose <doko@debian.org>");
        assert_eq!(bash.source, PackageSource::Dpkg);
        let libc = &pkgs[1];
        assert_eq!(
            (libc.epoch, libc.version.as_str(), libc.release.as_str()),
            (Some(1), "2.36", "9+deb12u4")
        );
        let native = &pkgs[2];
        assert_eq!(
            (
                native.version.as_str(),
                native.release.as_str(),
                native.size
            ),
            ("2.0", "", 0)
        );
    }

    #[test]
    fn version_splitting_follows_dpkg() {
        assert_eq!(split_version("1.2-3-4"), Ok((None, "1.2-3", "4")));
        assert_eq!(split_version("2:1:2-3"), Ok((Some(2), "1:2", "3")));
        assert_eq!(split_version("0.9"), Ok((None, "0.9", "")));
        assert!(split_version("x:1.0").is_err());
        assert!(split_version("-1:1.0").is_err());
        assert!(split_version("99999999999:1.0").is_err());
        assert!(split_version("1:-3").is_err());
    }

    #[test]
    fn stanza_without_package_is_reported_and_skipped() {
        let text = "Status: install ok installed\nVersion: 1.0\n\nPackage: ok\nStatus: install ok installed\nVersion: 1\n";
        let (pkgs, warns) = parse_status(text.as_bytes());
        assert_eq!(names(&pkgs), ["ok"]);
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].line_or_record, Some(1));
        assert!(
            warns[0].message.contains("without a Package"),
            "{}",
            warns[0].message
        );
    }

    #[test]
    fn garbage_lines_are_reported_with_their_line() {
        let text = "Package: a\nthis is garbage\nStatus: install ok installed\n\u{1}\u{2}\nVersion: 1-1\n\n";
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"\xff\xfe junk\n");
        let (pkgs, warns) = parse_status(&bytes);
        assert_eq!(names(&pkgs), ["a"]);
        let lines: Vec<_> = warns.iter().map(|w| w.line_or_record).collect();
        assert_eq!(lines, [Some(2), Some(4), Some(7)], "{warns:?}");
    }

    #[test]
    fn continuation_before_any_field_is_reported() {
        let (pkgs, warns) = parse_status(
            b" orphan continuation\nPackage: a\nStatus: install ok installed\nVersion: 1\n",
        );
        assert_eq!(names(&pkgs), ["a"]);
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].line_or_record, Some(1));
    }

    #[test]
    fn truncated_file_keeps_earlier_packages() {
        for cut in 0..GOOD.len() {
            let (pkgs, _warns) = parse_status(&GOOD.as_bytes()[..cut]);
            assert!(pkgs.len() <= 3);
        }
        // Cut inside libc6's stanza, before its Version line.
        let cut = GOOD.find("Version: 1:2.36").expect("fixture has libc6");
        let (pkgs, warns) = parse_status(&GOOD.as_bytes()[..cut + 4]);
        assert_eq!(names(&pkgs), ["bash"]);
        // The truncated "Vers" line is not a field, and the stanza that
        // started on line 19 is left without a Version.
        let lines: Vec<_> = warns.iter().map(|w| w.line_or_record).collect();
        assert_eq!(lines, [Some(23), Some(19)], "{warns:?}");
    }

    #[test]
    fn bad_fields_are_reported() {
        let text = "Package: a\nStatus: install ok installed\nVersion: x:1\n\n\
                    Package: b\nStatus: install ok installed\nVersion: 1\nInstalled-Size: lots\n\n\
                    Package: c\nStatus: install ok installed\n\n\
                    Package: d\nVersion: 1\n\n\
                    Package: e\nPackage: e2\nStatus: install ok installed\nVersion: 1\n";
        let (pkgs, warns) = parse_status(text.as_bytes());
        assert_eq!(names(&pkgs), ["b", "e"]);
        assert_eq!(pkgs[0].size, 0);
        let lines: Vec<_> = warns.iter().map(|w| w.line_or_record).collect();
        assert_eq!(
            lines,
            [Some(3), Some(8), Some(10), Some(13), Some(17)],
            "{warns:?}"
        );
    }

    #[test]
    fn huge_stanza_is_capped() {
        let mut text = String::from("Package: big\nStatus: install ok installed\nVersion: 1\n");
        for i in 0..100_000 {
            text.push_str(&format!("X-Field-{i}: v\n"));
        }
        let (pkgs, warns) = parse_status(text.as_bytes());
        assert_eq!(names(&pkgs), ["big"]);
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert_eq!(warns[0].line_or_record, Some(3 + MAX_FIELDS as u64 - 2));
    }

    #[test]
    fn crlf_and_missing_trailing_newline() {
        let (pkgs, warns) = parse_status(b"Package: a\r\nStatus: install ok installed\r\nVersion: 1.0-2\r\n\r\nPackage: b\r\nStatus: install ok installed\r\nVersion: 3");
        assert!(warns.is_empty(), "{warns:?}");
        assert_eq!(names(&pkgs), ["a", "b"]);
        assert_eq!(pkgs[0].release, "2");
    }

    #[test]
    fn read_status_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kestrel-dpkg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("info")).expect("temp dir");
        let status = dir.join("status");
        std::fs::write(
            &status,
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\nbroken\n",
        )
        .expect("write status");
        std::fs::write(dir.join("info/a.list"), "/.\n").expect("write list");
        let result = read_status(&status);
        let missing = read_status(&dir.join("nope"));
        std::fs::remove_dir_all(&dir).ok();
        let (pkgs, warns) = result.expect("readable");
        assert_eq!(names(&pkgs), ["a"]);
        assert!(pkgs[0].install_time.is_some());
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].file, status);
        assert_eq!(warns[0].line_or_record, Some(6));
        assert!(matches!(missing, Err(InventoryError::Io { .. })));
    }
}
