//! uid → user name from /etc/passwd, re-read when the file changes.
//!
//! Only the local file is read: NSS lookups (LDAP, SSSD) can block for
//! seconds, and the event pipeline must not.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const RECHECK: Duration = Duration::from_secs(2);

/// Cached user names.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    names: HashMap<u32, Arc<str>>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
    /// The name of a uid without one, allocated once.
    none: Arc<str>,
}

impl Users {
    /// Names from `path` (normally /etc/passwd).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Users {
            path: path.into(),
            names: HashMap::new(),
            mtime: None,
            checked: None,
            none: Arc::from(""),
        }
    }

    /// The name of `uid`, or "" when it has none.
    pub fn name(&mut self, uid: u32) -> Arc<str> {
        if self.checked.is_none_or(|t| t.elapsed() >= RECHECK) {
            self.reload_if_changed();
        }
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| self.none.clone())
    }

    fn reload_if_changed(&mut self) {
        self.checked = Some(Instant::now());
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.mtime {
            return;
        }
        self.mtime = mtime;
        match std::fs::read(&self.path) {
            Ok(data) => {
                self.names = parse_passwd(&data)
                    .into_iter()
                    .map(|(uid, name)| (uid, Arc::from(name)))
                    .collect()
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the user list; user names will be empty");
                self.names.clear();
            }
        }
    }
}

/// Parses passwd lines `name:x:uid:...`; malformed lines are skipped. The
/// first entry for a uid wins, as with getpwuid.
pub fn parse_passwd(data: &[u8]) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in data.split(|&b| b == b'\n') {
        let mut it = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(uid)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Some(uid) = std::str::from_utf8(uid)
            .ok()
            .and_then(|u| u.parse::<u32>().ok())
        else {
            continue;
        };
        if name.is_empty() || name.starts_with(b"#") {
            continue;
        }
        names
            .entry(uid)
            .or_insert_with(|| String::from_utf8_lossy(name).into_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_garbage() {
        let m = parse_passwd(b"root:x:0:0:root:/root:/bin/bash\nbroken\nbob:x:1000:1000::/home/bob:/bin/sh\ntoor:x:0:0::/:/bin/sh\nx:x:notanumber:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1000).map(String::as_str), Some("bob"));
        assert_eq!(m.len(), 2);
    }
}
