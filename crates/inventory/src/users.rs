//! Local user accounts, from the files under `ROOT/etc`.
//!
//! Read, all relative to a root directory so that a mounted image or a test
//! tree can be inspected:
//!
//! * `etc/passwd`: the accounts (name, uid, gid, gecos, home, shell).
//! * `etc/group`: the primary group's name and supplementary memberships.
//! * `etc/shadow`: only *classified* into a [`PasswordState`], plus the
//!   ageing fields. The hash itself is never copied anywhere: not into
//!   [`User`], not into a [`Warning`] (warnings never quote lines of these
//!   files at all).
//! * `etc/sudoers` and what it includes: who is granted sudo rules.
//! * `var/log/lastlog`: the last login time, when the file exists.
//!
//! NSS is not used (LDAP, SSSD and systemd-homed users are not seen), and
//! `etc/gshadow` is not read.
//!
//! # Sudoers subset
//!
//! The parser understands comments, backslash line continuations,
//! `#include`/`@include` and `#includedir`/`@includedir` (relative paths are
//! resolved against the including file's directory, as sudo 1.9 does; the
//! directory's files are read in name order, skipping names containing `.`
//! or ending in `~`, as sudo does; nesting is limited to
//! [`MAX_INCLUDE_DEPTH`]), `User_Alias` definitions (expanded recursively),
//! and user specifications whose user list holds names, `#uid`, `%group`,
//! `%#gid` or aliases. `Defaults` lines and the other alias kinds are
//! ignored. Negations (`!name`) are ignored rather than subtracted, and any
//! user specification counts, whatever the commands or `Runas` it grants
//! (a rule granting only `/bin/true` still marks the user `sudo`). Netgroups
//! (`+group`) and non-Unix groups (`%:group`) are ignored. When the main
//! file includes nothing (or is missing), `etc/sudoers.d` is still read,
//! since a file dropped there is worth reporting even if sudo ignores it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::Warning;

/// Files larger than this are not read (a real passwd file is a few KiB).
const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// How deep `#include`/`#includedir` may nest (the top file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// How many sudoers files are read at most, whatever the nesting.
const MAX_SUDOERS_FILES: usize = 1024;

/// Size of `struct lastlog` on Linux (`int32 ll_time; char ll_line[32];
/// char ll_host[256];`).
const LASTLOG_RECORD: u64 = 4 + 32 + 256;

/// One account from `/etc/passwd`, with what the other files say about it.
///
/// Deliberately holds nothing from the password field but its
/// classification, so printing it (`{:?}`) cannot leak a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The GECOS (comment) field, as written.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell (may be empty, meaning `/bin/sh`).
    pub shell: String,
    /// Group names: the primary group first (its number if `/etc/group` has
    /// no such gid), then supplementary groups in `/etc/group` order.
    pub groups: Vec<String>,
    /// What the password field holds.
    pub password: PasswordState,
    /// The account or its password is expired on "today" (see
    /// [`collect_at`]): the shadow expire date has passed, the password is
    /// older than its maximum age, or the last-change date is 0 (the user
    /// must change it at next login).
    pub password_expired: bool,
    /// The user may use sudo: named in a sudoers user specification
    /// (directly, by `#uid`, via a `User_Alias`, or through a `%group` /
    /// `%#gid` they belong to), or a member of group `sudo` or `wheel`.
    pub sudo: bool,
    /// shadow's "date of last password change", in days since 1970-01-01;
    /// `None` when empty or there is no shadow entry.
    pub last_change_days: Option<u64>,
    /// Last login in Unix seconds, from `var/log/lastlog`; `None` when the
    /// user never logged in or the file is missing.
    pub last_login: Option<i64>,
}

/// Classification of an account's password field (shadow's, or passwd's
/// when it does not defer to shadow with `x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordState {
    /// A password hash is set: the account can log in with a password.
    Set,
    /// The field is empty: login without a password (on most PAM set-ups).
    Empty,
    /// Starts with `!` (locked by `passwd -l`/`usermod -L`, or `!!`/`!*`).
    Locked,
    /// `*` (or another value starting with `*`): no password login.
    NoLogin,
    /// passwd says `x` but shadow has no entry for the user (or no shadow
    /// file exists).
    Missing,
    /// Anything else, or the shadow file could not be read.
    Unknown,
}

/// Reads the accounts under `root` (usually `/`), with "today" taken from
/// the system clock.
pub fn collect(root: &Path) -> (Vec<User>, Vec<Warning>) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    collect_at(root, today)
}

/// Like [`collect`], with "today" given in days since 1970-01-01 (for
/// reproducible expiry checks).
pub fn collect_at(root: &Path, today_days: u64) -> (Vec<User>, Vec<Warning>) {
    let mut warnings = Vec::new();

    let passwd_path = root.join("etc/passwd");
    let passwd = match read_text(&passwd_path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            warnings.push(Warning::new(&passwd_path, None, "file does not exist"));
            return (Vec::new(), warnings);
        }
        Err(w) => {
            warnings.push(w);
            return (Vec::new(), warnings);
        }
    };

    let groups = read_groups(&root.join("etc/group"), &mut warnings);
    let shadow = read_shadow(&root.join("etc/shadow"), &mut warnings);
    let sudoers = read_sudoers(root, &mut warnings);
    let lastlog_path = root.join("var/log/lastlog");
    let mut lastlog = File::open(&lastlog_path).ok();

    let mut users = Vec::new();
    for (i, line) in passwd.lines().enumerate() {
        let lineno = i as u64 + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('+') || line.starts_with('-') {
            // NIS compat entries ("+", "+user", "-@netgroup"): not local users.
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 {
            warnings.push(Warning::new(
                &passwd_path,
                Some(lineno),
                format!("expected 7 colon-separated fields, found {}", f.len()),
            ));
            continue;
        }
        if f[0].is_empty() {
            warnings.push(Warning::new(&passwd_path, Some(lineno), "empty user name"));
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            warnings.push(Warning::new(
                &passwd_path,
                Some(lineno),
                "uid or gid is not a number",
            ));
            continue;
        };
        let name = f[0].to_string();

        let (password, expired, last_change_days) = if f[1] == "x" {
            match &shadow {
                ShadowFile::Read(map) => match map.get(&name) {
                    Some(s) => (s.state, s.expired(today_days), s.last_change),
                    None => (PasswordState::Missing, false, None),
                },
                ShadowFile::Absent => (PasswordState::Missing, false, None),
                ShadowFile::Unreadable => (PasswordState::Unknown, false, None),
            }
        } else {
            (classify(f[1]), false, None)
        };

        let mut group_names = vec![groups
            .names
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())];
        if let Some(extra) = groups.members.get(&name) {
            for g in extra {
                if !group_names.contains(g) {
                    group_names.push(g.clone());
                }
            }
        }

        let sudo = group_names.iter().any(|g| g == "sudo" || g == "wheel")
            || sudoers.grants(&name, uid, &group_names, gid, &groups);

        let last_login = lastlog.as_mut().and_then(|f| read_lastlog(f, uid));

        users.push(User {
            name,
            uid,
            gid,
            gecos: f[4].to_string(),
            home: f[5].to_string(),
            shell: f[6].to_string(),
            groups: group_names,
            password,
            password_expired: expired,
            sudo,
            last_change_days,
            last_login,
        });
    }
    (users, warnings)
}

/// Reads a whole file as text (invalid UTF-8 replaced). `Ok(None)` when it
/// does not exist; a warning when it cannot be read or is too large.
fn read_text(path: &Path) -> Result<Option<String>, Warning> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Warning::new(path, None, format!("cannot open: {e}"))),
    };
    let mut buf = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Warning::new(path, None, format!("cannot read: {e}")))?;
    if buf.len() as u64 > MAX_FILE_SIZE {
        return Err(Warning::new(
            path,
            None,
            format!("larger than {MAX_FILE_SIZE} bytes, not read"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn classify(field: &str) -> PasswordState {
    if field.is_empty() {
        PasswordState::Empty
    } else if field.starts_with('!') {
        PasswordState::Locked
    } else if field.starts_with('*') {
        PasswordState::NoLogin
    } else if field.starts_with('$')
        || (field.len() == 13
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/'))
    {
        // Modular crypt ($id$...) or traditional DES (13 chars of [./0-9A-Za-z]).
        PasswordState::Set
    } else {
        PasswordState::Unknown
    }
}

#[derive(Default)]
struct Groups {
    /// gid → group name (first definition wins).
    names: HashMap<u32, String>,
    /// user name → supplementary group names, in file order.
    members: HashMap<String, Vec<String>>,
}

fn read_groups(path: &Path, warnings: &mut Vec<Warning>) -> Groups {
    let mut groups = Groups::default();
    let text = match read_text(path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            warnings.push(Warning::new(path, None, "file does not exist"));
            return groups;
        }
        Err(w) => {
            warnings.push(w);
            return groups;
        }
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty()
            || line.starts_with('#')
            || line.starts_with('+')
            || line.starts_with('-')
        {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let gid = if f.len() == 4 {
            f[2].parse::<u32>().ok()
        } else {
            None
        };
        let Some(gid) = gid.filter(|_| !f[0].is_empty()) else {
            warnings.push(Warning::new(
                path,
                Some(i as u64 + 1),
                "expected NAME:PASSWORD:GID:MEMBERS",
            ));
            continue;
        };
        groups.names.entry(gid).or_insert_with(|| f[0].to_string());
        for m in f[3].split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let list = groups.members.entry(m.to_string()).or_default();
            if !list.iter().any(|g| g == f[0]) {
                list.push(f[0].to_string());
            }
        }
    }
    groups
}

/// What is kept of one shadow entry: never the hash.
struct ShadowEntry {
    state: PasswordState,
    last_change: Option<u64>,
    max_days: Option<u64>,
    expire: Option<u64>,
}

impl ShadowEntry {
    fn expired(&self, today: u64) -> bool {
        if let Some(exp) = self.expire {
            if exp > 0 && today >= exp {
                return true;
            }
        }
        match self.last_change {
            Some(0) => true,
            Some(last) => match self.max_days {
                // 99999 and larger mean "never" in practice; the sum cannot
                // overflow for values parsed from a line.
                Some(max) => today >= last.saturating_add(max),
                None => false,
            },
            None => false,
        }
    }
}

enum ShadowFile {
    Read(HashMap<String, ShadowEntry>),
    Absent,
    Unreadable,
}

fn read_shadow(path: &Path, warnings: &mut Vec<Warning>) -> ShadowFile {
    let text = match read_text(path) {
        Ok(Some(t)) => t,
        Ok(None) => return ShadowFile::Absent,
        Err(w) => {
            warnings.push(w);
            return ShadowFile::Unreadable;
        }
    };
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        // NAME:PASSWORD:LASTCHG:MIN:MAX:WARN:INACTIVE:EXPIRE:RESERVED
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 2 || f[0].is_empty() {
            // Never quote the line: it may hold a hash.
            warnings.push(Warning::new(
                path,
                Some(i as u64 + 1),
                format!("malformed entry ({} fields)", f.len()),
            ));
            continue;
        }
        let num = |k: usize| f.get(k).and_then(|s| s.trim().parse::<u64>().ok());
        map.entry(f[0].to_string()).or_insert(ShadowEntry {
            state: classify(f[1]),
            last_change: num(2),
            max_days: num(4),
            expire: num(7),
        });
    }
    ShadowFile::Read(map)
}

fn read_lastlog(file: &mut File, uid: u32) -> Option<i64> {
    let mut buf = [0u8; 4];
    file.seek(SeekFrom::Start(u64::from(uid) * LASTLOG_RECORD))
        .ok()?;
    file.read_exact(&mut buf).ok()?;
    let t = i32::from_ne_bytes(buf);
    (t > 0).then_some(i64::from(t))
}

/// Who the sudoers files name in user specifications.
#[derive(Default, Debug)]
struct Sudoers {
    users: HashSet<String>,
    uids: HashSet<u32>,
    groups: HashSet<String>,
    gids: HashSet<u32>,
}

impl Sudoers {
    fn grants(&self, name: &str, uid: u32, groups: &[String], gid: u32, all: &Groups) -> bool {
        if self.users.contains(name) || self.users.contains("ALL") || self.uids.contains(&uid) {
            return true;
        }
        if groups.iter().any(|g| self.groups.contains(g)) {
            return true;
        }
        if self.gids.contains(&gid) {
            return true;
        }
        // %#gid naming a supplementary group.
        all.names
            .iter()
            .any(|(g, n)| self.gids.contains(g) && groups.contains(n))
    }
}

struct SudoersReader<'a> {
    root: &'a Path,
    files_read: usize,
    aliases: HashMap<String, Vec<String>>,
    /// Raw user-list items from every user specification, expanded at the end
    /// (an alias may be defined after its use in an included file).
    items: Vec<String>,
}

fn read_sudoers(root: &Path, warnings: &mut Vec<Warning>) -> Sudoers {
    let mut r = SudoersReader {
        root,
        files_read: 0,
        aliases: HashMap::new(),
        items: Vec::new(),
    };
    r.read_file(&root.join("etc/sudoers"), 0, warnings);
    // Debian's default sudoers includes it, but a host whose sudoers lacks
    // the directive still has the directory on disk; only read it here if
    // the main file did not.
    let dir = root.join("etc/sudoers.d");
    if r.files_read <= 1 && dir.is_dir() {
        r.read_dir(&dir, 1, warnings);
    }
    let mut out = Sudoers::default();
    let items = std::mem::take(&mut r.items);
    for item in &items {
        r.expand(item, 0, &mut out);
    }
    out
}

impl SudoersReader<'_> {
    /// Maps a path from a sudoers file onto the inspected root.
    fn host_path(&self, p: &str, including: &Path) -> PathBuf {
        match p.strip_prefix('/') {
            Some(rel) => self.root.join(rel),
            None => including.parent().unwrap_or(self.root).join(p),
        }
    }

    fn read_file(&mut self, path: &Path, depth: usize, warnings: &mut Vec<Warning>) {
        if self.files_read >= MAX_SUDOERS_FILES {
            warnings.push(Warning::new(path, None, "too many sudoers files, skipped"));
            return;
        }
        self.files_read += 1;
        let text = match read_text(path) {
            Ok(Some(t)) => t,
            Ok(None) => {
                if depth > 0 {
                    warnings.push(Warning::new(path, None, "included file does not exist"));
                }
                return;
            }
            Err(w) => {
                warnings.push(w);
                return;
            }
        };
        let mut logical = String::new();
        let mut start_line = 0u64;
        for (i, raw) in text.lines().enumerate() {
            if logical.is_empty() {
                start_line = i as u64 + 1;
            }
            if let Some(stripped) = raw.strip_suffix('\\') {
                logical.push_str(stripped);
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            self.line(path, start_line, &line, depth, warnings);
        }
        if !logical.is_empty() {
            let line = std::mem::take(&mut logical);
            self.line(path, start_line, &line, depth, warnings);
        }
    }

    fn read_dir(&mut self, dir: &Path, depth: usize, warnings: &mut Vec<Warning>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(Warning::new(dir, None, format!("cannot list: {e}")));
                return;
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains('.') && !n.ends_with('~'))
            .collect();
        names.sort();
        for n in names {
            self.read_file(&dir.join(n), depth, warnings);
        }
    }

    fn line(&mut self, path: &Path, lineno: u64, line: &str, depth: usize, w: &mut Vec<Warning>) {
        let t = line.trim();
        for (kw, is_dir) in [
            ("#includedir", true),
            ("@includedir", true),
            ("#include", false),
            ("@include", false),
        ] {
            if let Some(rest) = t.strip_prefix(kw) {
                if !rest.starts_with(char::is_whitespace) {
                    continue;
                }
                let arg = rest.trim().trim_matches('"');
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    w.push(Warning::new(
                        path,
                        Some(lineno),
                        format!("include nested deeper than {MAX_INCLUDE_DEPTH}, skipped"),
                    ));
                    return;
                }
                let target = self.host_path(arg, path);
                if is_dir {
                    self.read_dir(&target, depth + 1, w);
                } else {
                    self.read_file(&target, depth + 1, w);
                }
                return;
            }
        }
        let t = strip_comment(t).trim();
        if t.is_empty() || t.starts_with("Defaults") {
            return;
        }
        let first = t.split_whitespace().next().unwrap_or("");
        match first {
            "User_Alias" => {
                let rest = t["User_Alias".len()..].trim();
                // NAME = item, item : NAME2 = item
                for def in rest.split(':') {
                    let Some((name, list)) = def.split_once('=') else {
                        w.push(Warning::new(path, Some(lineno), "malformed User_Alias"));
                        continue;
                    };
                    let entry = self.aliases.entry(name.trim().to_string()).or_default();
                    entry.extend(
                        list.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty()),
                    );
                }
            }
            "Runas_Alias" | "Host_Alias" | "Cmnd_Alias" | "Cmd_Alias" => {}
            _ => {
                let Some((spec, _)) = t.split_once('=') else {
                    w.push(Warning::new(
                        path,
                        Some(lineno),
                        "not a user specification (no '=')",
                    ));
                    return;
                };
                // The user list is comma-separated, with optional blanks
                // around the commas; the host list follows after a blank.
                let mut list = String::new();
                let mut chars = spec.trim().chars().peekable();
                let mut after_comma = false;
                while let Some(c) = chars.next() {
                    if c.is_whitespace() {
                        // Blanks end the user list unless a comma is adjacent.
                        while chars.peek().is_some_and(|c| c.is_whitespace()) {
                            chars.next();
                        }
                        if after_comma || chars.peek() == Some(&',') {
                            continue;
                        }
                        break;
                    }
                    after_comma = c == ',';
                    list.push(c);
                }
                self.items.extend(
                    list.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
        }
    }

    fn expand(&self, item: &str, depth: usize, out: &mut Sudoers) {
        if depth > 16 || item.starts_with('!') || item.starts_with('+') {
            return;
        }
        if let Some(g) = item.strip_prefix('%') {
            if let Some(gid) = g.strip_prefix('#') {
                if let Ok(gid) = gid.parse() {
                    out.gids.insert(gid);
                }
            } else if !g.starts_with(':') {
                out.groups.insert(g.trim_matches('"').to_string());
            }
        } else if let Some(uid) = item.strip_prefix('#') {
            if let Ok(uid) = uid.parse() {
                out.uids.insert(uid);
            }
        } else if let Some(members) = self.aliases.get(item) {
            for m in members {
                self.expand(m, depth + 1, out);
            }
        } else {
            // "ALL" is kept as is: every user may run that rule.
            out.users.insert(item.trim_matches('"').to_string());
        }
    }
}

/// Removes a `#` comment, keeping `#123` uids (a `#` followed by a digit).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'#' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return &line[..i];
        }
    }
    line
}
