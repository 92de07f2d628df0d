//! Scheduled jobs: cron tables, anacron and systemd timers.
//!
//! Read, all relative to a root directory:
//!
//! * `etc/crontab` and every regular file in `etc/cron.d` (system format:
//!   five time fields or an `@keyword`, then a user, then the command);
//! * user crontabs, `var/spool/cron/crontabs/USER` (Debian) and
//!   `var/spool/cron/USER` (RHEL; regular files only), with the user taken
//!   from the file name;
//! * `etc/anacrontab` (`PERIOD DELAY JOB-ID COMMAND`, run as root);
//! * systemd timers: `*.timer` units in `etc/systemd/system`,
//!   `lib/systemd/system` and `usr/lib/systemd/system` (a name found in an
//!   earlier directory hides later ones, as systemd does). The schedule is
//!   the `On*=` settings of `[Timer]` joined by `"; "`, the command the
//!   `ExecStart=` lines of the `Unit=` service (default: the same-named
//!   `.service`), the user its `User=` (default `root`).
//!
//! Blank lines, comments and environment assignments (`NAME=value`) are
//! skipped; lines that are none of these and not a valid job become
//! [`Warning`]s naming the file and line, and the rest of the file is still
//! read. Time fields are checked: numbers in range, `*`, ranges, lists,
//! steps, and month/day names where cron accepts them.
//!
//! Not handled: scripts in `etc/cron.{hourly,daily,weekly,monthly}` are not
//! listed one by one (they appear as the `run-parts` job that runs them);
//! timer drop-ins (`NAME.timer.d/*.conf`), `/run` and `/usr/local` unit
//! directories, template timers (`name@.timer`) and whether a timer is
//! enabled are not considered (installed timers are reported, masked ones,
//! symlinks to `/dev/null`, are skipped); `at` jobs are not read.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Warning;

/// Files larger than this are not read.
const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// One scheduled command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJob {
    /// The five time fields joined by single spaces, an `@keyword`, the
    /// anacron `PERIOD DELAY JOB-ID`, or the timer's `On*=` settings.
    pub schedule: String,
    /// The user the command runs as.
    pub user: String,
    /// The command line, as written.
    pub command: String,
    /// The file the job was read from (the `.timer` unit for timers).
    pub source: PathBuf,
    /// 1-based line in `source`; `None` for timers.
    pub line: Option<u64>,
    /// `"crontab"`, `"anacron"` or `"systemd-timer"`.
    pub kind: &'static str,
}

/// Lists the jobs under `root` (usually `/`). See the module documentation.
pub fn collect(root: &Path) -> (Vec<CronJob>, Vec<Warning>) {
    let mut jobs = Vec::new();
    let mut w = Vec::new();

    let crontab = root.join("etc/crontab");
    if let Some(text) = read_text(&crontab, &mut w) {
        parse_crontab(&text, &crontab, None, &mut jobs, &mut w);
    }
    for f in files_in(&root.join("etc/cron.d"), &mut w) {
        if let Some(text) = read_text(&f, &mut w) {
            parse_crontab(&text, &f, None, &mut jobs, &mut w);
        }
    }
    for dir in ["var/spool/cron/crontabs", "var/spool/cron"] {
        for f in files_in(&root.join(dir), &mut w) {
            let user = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(text) = read_text(&f, &mut w) {
                parse_crontab(&text, &f, Some(&user), &mut jobs, &mut w);
            }
        }
    }
    let anacrontab = root.join("etc/anacrontab");
    if let Some(text) = read_text(&anacrontab, &mut w) {
        parse_anacrontab(&text, &anacrontab, &mut jobs, &mut w);
    }
    collect_timers(root, &mut jobs, &mut w);
    (jobs, w)
}

/// Every parser of this module on one text (for the fuzz targets): the
/// number of jobs and warnings found.
pub(crate) fn parse_all_formats(text: &str, path: &Path) -> usize {
    let (mut jobs, mut w) = (Vec::new(), Vec::new());
    parse_crontab(text, path, None, &mut jobs, &mut w);
    parse_crontab(text, path, Some("user"), &mut jobs, &mut w);
    parse_anacrontab(text, path, &mut jobs, &mut w);
    jobs.len() + w.len() + unit_entries(text).len()
}

/// Reads a file as text; `None` (silently) when it does not exist.
fn read_text(path: &Path, w: &mut Vec<Warning>) -> Option<String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            w.push(Warning::new(path, None, format!("cannot open: {e}")));
            return None;
        }
    };
    let mut buf = Vec::new();
    if let Err(e) = file.take(MAX_FILE_SIZE + 1).read_to_end(&mut buf) {
        w.push(Warning::new(path, None, format!("cannot read: {e}")));
        return None;
    }
    if buf.len() as u64 > MAX_FILE_SIZE {
        w.push(Warning::new(path, None, "file too large, not read"));
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Regular files (following symlinks) directly in `dir`, sorted by name;
/// nothing if the directory does not exist.
fn files_in(dir: &Path, w: &mut Vec<Warning>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            w.push(Warning::new(dir, None, format!("cannot list: {e}")));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// `NAME=value` (optionally blanks around `=`, optionally quoted name).
fn is_env_assignment(line: &str) -> bool {
    let Some((name, _)) = line.split_once('=') else {
        return false;
    };
    let name = name.trim().trim_matches(|c| c == '"' || c == '\'');
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks one time field: a comma list of `*`, `N` or `N-M`, each with an
/// optional `/STEP`.
fn valid_field(field: &str, min: u32, max: u32, names: &[&str]) -> bool {
    let value = |s: &str| -> Option<u32> {
        if let Ok(n) = s.parse::<u32>() {
            return (min..=max).contains(&n).then_some(n);
        }
        let lower = s.to_ascii_lowercase();
        names
            .iter()
            .position(|n| *n == lower)
            .map(|i| i as u32 + min)
    };
    field.split(',').all(|item| {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            if !s.parse::<u32>().is_ok_and(|s| s > 0) {
                return false;
            }
        }
        if range == "*" {
            return true;
        }
        match range.split_once('-') {
            Some((a, b)) => matches!((value(a), value(b)), (Some(_), Some(_))),
            None => value(range).is_some(),
        }
    })
}

const KEYWORDS: [&str; 8] = [
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Splits off the first `n` blank-separated words and returns them with the
/// remainder (trimmed).
fn split_words(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut words = Vec::with_capacity(n);
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((words, rest.trim_end()))
}

/// Parses a crontab: system format when `user` is `None` (a user field
/// follows the schedule), user format otherwise.
fn parse_crontab(
    text: &str,
    path: &Path,
    user: Option<&str>,
    jobs: &mut Vec<CronJob>,
    w: &mut Vec<Warning>,
) {
    let user_fields = usize::from(user.is_none());
    for (i, raw) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || is_env_assignment(line) {
            continue;
        }
        let warn = |msg: &str| Warning::new(path, Some(lineno), msg.to_string());
        let sched_fields = if line.starts_with('@') { 1 } else { 5 };
        let Some((words, command)) = split_words(line, sched_fields + user_fields) else {
            w.push(warn("too few fields for a cron job"));
            continue;
        };
        if sched_fields == 1 {
            if !KEYWORDS.contains(&words[0].to_ascii_lowercase().as_str()) {
                w.push(warn(&format!("unknown schedule keyword {:?}", words[0])));
                continue;
            }
        } else {
            let ok = valid_field(words[0], 0, 59, &[])
                && valid_field(words[1], 0, 23, &[])
                && valid_field(words[2], 1, 31, &[])
                && valid_field(words[3], 1, 12, &MONTHS)
                && valid_field(words[4], 0, 7, &DAYS);
            if !ok {
                w.push(warn("invalid time fields"));
                continue;
            }
        }
        if command.is_empty() {
            w.push(warn("no command"));
            continue;
        }
        let job_user = match user {
            Some(u) => u.to_string(),
            None => words[sched_fields].to_string(),
        };
        jobs.push(CronJob {
            schedule: words[..sched_fields].join(" "),
            user: job_user,
            command: command.to_string(),
            source: path.to_path_buf(),
            line: Some(lineno),
            kind: "crontab",
        });
    }
}

fn parse_anacrontab(text: &str, path: &Path, jobs: &mut Vec<CronJob>, w: &mut Vec<Warning>) {
    for (i, raw) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || is_env_assignment(line) {
            continue;
        }
        let parsed = split_words(line, 3).filter(|(f, cmd)| {
            let period_ok = f[0].parse::<u32>().is_ok()
                || ["@daily", "@weekly", "@monthly", "@yearly", "@annually"]
                    .contains(&f[0].to_ascii_lowercase().as_str());
            period_ok && f[1].parse::<u32>().is_ok() && !cmd.is_empty()
        });
        let Some((f, command)) = parsed else {
            w.push(Warning::new(
                path,
                Some(lineno),
                "expected PERIOD DELAY JOB-ID COMMAND",
            ));
            continue;
        };
        jobs.push(CronJob {
            schedule: f.join(" "),
            user: "root".to_string(),
            command: command.to_string(),
            source: path.to_path_buf(),
            line: Some(lineno),
            kind: "anacron",
        });
    }
}

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// `(section, key, value)` of a unit file, with backslash continuations
/// joined and comments dropped.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(l) = line.strip_suffix('\\') {
            pending.push_str(l.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if full.starts_with('[') && full.ends_with(']') {
            section = full[1..full.len() - 1].to_string();
        } else if let Some((k, v)) = full.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Finds a unit by name, first directory first; skips masked units.
fn find_unit(root: &Path, name: &str) -> Option<PathBuf> {
    UNIT_DIRS
        .iter()
        .map(|d| root.join(d).join(name))
        .find(|p| p.symlink_metadata().is_ok())
}

fn is_masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

fn collect_timers(root: &Path, jobs: &mut Vec<CronJob>, w: &mut Vec<Warning>) {
    let mut seen = std::collections::HashSet::new();
    for dir in UNIT_DIRS {
        let dir = root.join(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".timer"))
            .collect();
        names.sort();
        for name in names {
            if !seen.insert(name.clone()) || name.ends_with("@.timer") {
                continue;
            }
            let path = dir.join(&name);
            if is_masked(&path) || !path.is_file() {
                continue;
            }
            if let Some(job) = read_timer(root, &path, &name, w) {
                jobs.push(job);
            }
        }
    }
}

fn read_timer(root: &Path, path: &Path, name: &str, w: &mut Vec<Warning>) -> Option<CronJob> {
    let text = read_text(path, w)?;
    let mut triggers: Vec<String> = Vec::new();
    let mut unit = None;
    for (section, k, v) in unit_entries(&text) {
        if section != "Timer" {
            continue;
        }
        if k == "Unit" {
            unit = Some(v);
        } else if k.starts_with("On") && k != "OnClockChange" && k != "OnTimezoneChange" {
            if v.is_empty() {
                // An empty assignment resets the list.
                triggers.retain(|t| !t.starts_with(&format!("{k}=")));
            } else {
                triggers.push(format!("{k}={v}"));
            }
        }
    }
    if triggers.is_empty() {
        w.push(Warning::new(path, None, "timer has no On*= trigger"));
        return None;
    }
    let service = unit.unwrap_or_else(|| format!("{}.service", name.trim_end_matches(".timer")));
    let mut command = Vec::new();
    let mut user = "root".to_string();
    match find_unit(root, &service) {
        Some(sp) if !is_masked(&sp) => {
            if let Some(stext) = read_text(&sp, w) {
                for (section, k, v) in unit_entries(&stext) {
                    if section != "Service" {
                        continue;
                    }
                    match k.as_str() {
                        "ExecStart" if v.is_empty() => command.clear(),
                        "ExecStart" => command.push(v),
                        "User" if !v.is_empty() => user = v,
                        _ => {}
                    }
                }
            }
        }
        _ => w.push(Warning::new(
            path,
            None,
            format!("triggered unit {service} not found"),
        )),
    }
    Some(CronJob {
        schedule: triggers.join("; "),
        user,
        command: command.join("; "),
        source: path.to_path_buf(),
        line: None,
        kind: "systemd-timer",
    })
}
