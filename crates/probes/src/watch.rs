//! Watched paths (data_types 608, 609, 90, 92): the patterns, checked and
//! compiled into the kernel's `watch_sets` map (see bpf/lib/watch.h).
//!
//! A pattern is an absolute path whose components are names, `*` (any one
//! component), or a name prefix ending in `*` (`cron*`). A path is watched
//! when its first components match a pattern's, so `/etc/cron*` covers
//! `/etc/crontab` and everything under `/etc/cron.d/`, and `/home/*/.ssh/`
//! every user's `.ssh` directory, whenever it was made. A trailing `/` is
//! allowed and changes nothing.

use std::fmt;

use kestrel_abi as abi;
use libbpf_rs::{MapCore, MapFlags};

use crate::Probes;

/// Patterns the kernel holds, at most.
pub const WATCH_MAX: usize = abi::KESTREL_WATCH_MAX as usize;
/// Components of a pattern, at most.
pub const WATCH_DEPTH: usize = abi::KESTREL_WATCH_DEPTH as usize;
/// Distinct exact first components, at most.
pub const WATCH_TOPS: usize = abi::KESTREL_WATCH_TOPS as usize;
/// Bytes of a component the kernel compares; a prefix (`name*`) may not be
/// longer.
pub const WATCH_NAME_BYTES: usize = 16;

/// One component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

/// A watched-path pattern, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchPattern {
    text: String,
    parts: Vec<Part>,
}

/// Why a pattern was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("watched path {pattern:?}: {why}")]
pub struct WatchPatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::str::FromStr for WatchPattern {
    type Err = WatchPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| WatchPatternError {
            pattern: s.to_string(),
            why,
        };
        if !s.starts_with('/') {
            return Err(bad("use an absolute path".into()));
        }
        let body = s.strip_suffix('/').unwrap_or(s);
        let mut parts = Vec::new();
        for c in body.split('/').skip(1) {
            match c {
                "" => return Err(bad("an empty component (`//`, or `/` alone)".into())),
                "." | ".." => return Err(bad(format!("a `{c}` component"))),
                _ => {}
            }
            let star = c.find('*');
            let part = match star {
                None => Part::Exact(c.as_bytes().to_vec()),
                Some(i) if i == c.len() - 1 => {
                    let p = &c.as_bytes()[..i];
                    if p.len() > WATCH_NAME_BYTES {
                        return Err(bad(format!(
                            "the prefix {:?} is longer than {WATCH_NAME_BYTES} bytes",
                            &c[..i]
                        )));
                    }
                    Part::Prefix(p.to_vec())
                }
                Some(_) => {
                    return Err(bad(
                        "`*` may only end a component (`*`, `cron*`), not start or split one"
                            .into(),
                    ))
                }
            };
            if c.len() > 255 {
                return Err(bad("a component longer than 255 bytes".into()));
            }
            parts.push(part);
        }
        if parts.is_empty() {
            return Err(bad("`/` alone would watch every file".into()));
        }
        if parts.len() > WATCH_DEPTH {
            return Err(bad(format!("more than {WATCH_DEPTH} components")));
        }
        Ok(WatchPattern {
            text: s.to_string(),
            parts,
        })
    }
}

impl fmt::Display for WatchPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for WatchPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn name(part: &Part) -> abi::kestrel_watch_name {
    let (bytes, kind) = match part {
        Part::Exact(b) => (b, abi::KESTREL_WATCH_EXACT),
        Part::Prefix(b) => (b, abi::KESTREL_WATCH_PREFIX),
    };
    let mut w = [0u8; 16];
    let mut m = [0u8; 16];
    let n = bytes.len().min(16);
    w[..n].copy_from_slice(&bytes[..n]);
    m[..n].fill(0xff);
    // An exact name longer than 16 bytes is compared by its length and
    // first 16 bytes; the kernel masks a path's name to its own length.
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap());
    abi::kestrel_watch_name {
        len: bytes.len() as u32,
        kind,
        w: [word(&w[..8]), word(&w[8..])],
        m: [word(&m[..8]), word(&m[8..])],
    }
}

/// KESTREL_WATCH_BIT of the header: the bit of `top_bits` for a name.
fn watch_bit(n: &abi::kestrel_watch_name) -> u64 {
    ((n.w[0] ^ ((n.len as u64) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 58
}

/// The kernel's form of a list of patterns: the patterns with an exact
/// first component grouped by it, then the others.
pub fn compile(patterns: &[WatchPattern]) -> Result<Box<abi::kestrel_watch_set>, String> {
    let mut list: Vec<&WatchPattern> = Vec::new();
    for p in patterns {
        if !list.contains(&p) {
            list.push(p);
        }
    }
    if list.len() > WATCH_MAX {
        return Err(format!("{} watched paths; at most {WATCH_MAX}", list.len()));
    }
    // SAFETY: a plain C struct of integers; all zeroes is its empty value.
    let mut set: Box<abi::kestrel_watch_set> = Box::new(unsafe { std::mem::zeroed() });
    let mut tops: Vec<Vec<u8>> = Vec::new();
    for p in &list {
        if let Part::Exact(t) = &p.parts[0] {
            if !tops.contains(t) {
                tops.push(t.clone());
            }
        }
    }
    if tops.len() > WATCH_TOPS {
        return Err(format!(
            "the watched paths start with {} different names; at most {WATCH_TOPS}",
            tops.len()
        ));
    }
    let mut k = 0usize;
    let put = |p: &WatchPattern, set: &mut abi::kestrel_watch_set, k: &mut usize| {
        let pat = &mut set.pat[*k];
        pat.n = p.parts.len() as u32;
        for (j, part) in p.parts.iter().enumerate() {
            pat.c[j] = name(part);
        }
        *k += 1;
    };
    for (t, top) in tops.iter().enumerate() {
        let start = k;
        for p in list
            .iter()
            .filter(|p| p.parts[0] == Part::Exact(top.clone()))
        {
            put(p, &mut set, &mut k);
        }
        set.top[t].name = name(&Part::Exact(top.clone()));
        set.top_bits |= 1 << watch_bit(&set.top[t].name);
        set.top[t].start = start as u32;
        set.top[t].end = k as u32;
    }
    set.tops = tops.len() as u32;
    set.any_start = k as u32;
    for p in list
        .iter()
        .filter(|p| !matches!(p.parts[0], Part::Exact(_)))
    {
        put(p, &mut set, &mut k);
    }
    set.any_end = k as u32;
    Ok(set)
}

impl Probes {
    /// Makes `patterns` the watched set (all of it: an empty list watches
    /// nothing). The kernel switches to the new set at once, and never
    /// sees half of it: the slot not in use is written, then made current.
    pub fn set_watched(&self, patterns: &[WatchPattern]) -> Result<(), String> {
        let set = compile(patterns)?;
        let maps = &self.skel.maps;
        let current = maps
            .watch_current
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| format!("reading the watched paths' slot: {e}"))?
            .and_then(|v| {
                v.get(..4)
                    .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
            })
            .unwrap_or(0);
        // A count, not just the slot: the kernel's verdicts remembered per
        // directory hold for one count, so that a set written into a slot
        // used before does not meet verdicts made under the old one there.
        let next = current.wrapping_add(1);
        let slot = next & 1;
        // SAFETY: the set is a plain C struct; its bytes are its value.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&*set as *const abi::kestrel_watch_set).cast::<u8>(),
                std::mem::size_of::<abi::kestrel_watch_set>(),
            )
        };
        maps.watch_sets
            .update(&slot.to_ne_bytes(), bytes, MapFlags::ANY)
            .map_err(|e| format!("writing the watched paths: {e}"))?;
        maps.watch_current
            .update(&0u32.to_ne_bytes(), &next.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| format!("switching to the new watched paths: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<WatchPattern, String> {
        s.parse::<WatchPattern>().map_err(|e| e.to_string())
    }

    #[test]
    fn patterns_are_checked() {
        for good in ["/etc/shadow", "/etc/cron*", "/home/*/.ssh/", "/var/log/"] {
            p(good).unwrap();
        }
        for (bad, why) in [
            ("etc/shadow", "absolute"),
            ("/", "every file"),
            ("/etc//x", "empty"),
            ("/etc/../x", "`..`"),
            ("/etc/*cron", "only end"),
            ("/etc/a*b", "only end"),
            ("/a/b/c/d/e/f/g/h/i", "more than 8"),
            ("/etc/averyveryverylongprefix*", "longer than 16"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn patterns_are_grouped_by_their_first_name() {
        let pats: Vec<WatchPattern> = ["/etc/shadow", "/*/x", "/var/log/", "/etc/cron*"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let set = compile(&pats).unwrap();
        assert_eq!(set.tops, 2);
        assert_eq!((set.top[0].start, set.top[0].end), (0, 2));
        assert_eq!((set.top[1].start, set.top[1].end), (2, 3));
        assert_eq!((set.any_start, set.any_end), (3, 4));
        let cron = &set.pat[1].c[1];
        assert_eq!(cron.len, 4);
        assert_eq!(cron.kind, abi::KESTREL_WATCH_PREFIX);
        assert_eq!(cron.w[0], u64::from_ne_bytes(*b"cron\0\0\0\0"));
        assert_eq!(cron.m[0], 0xffff_ffff);
        let any = &set.pat[3].c[0];
        assert_eq!((any.len, any.m[0]), (0, 0));
        let etc = name(&Part::Exact(b"etc".to_vec()));
        assert_ne!(set.top_bits & (1 << watch_bit(&etc)), 0);
        assert_eq!(set.top_bits.count_ones(), 2);
    }
}
