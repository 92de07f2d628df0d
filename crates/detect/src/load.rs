//! Loading rule files: parse each (errors name file, line and column),
//! share lists and macros across files, compile every rule, append the
//! exceptions operators add from their own files, and report each rule's
//! status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use kestrel_event::Event;

use crate::cond::{Cond, Names};
use crate::model::{CondSpec, ExceptionSpec, Item, RuleFile, RuleSpec, Severity, StepSpec};

/// Where a rule came from; the alert's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Builtin,
    Custom,
    Sigma,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Builtin => "builtin",
            Origin::Custom => "custom",
            Origin::Sigma => "sigma",
        }
    }
}

/// One rule file's text.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub origin: Origin,
    /// Its path, or `builtin:NAME` for an embedded one.
    pub name: String,
    pub text: String,
}

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The built-in rule files, embedded at build time from rules/builtin/.
pub fn builtin_sources() -> Vec<RuleSource> {
    crate::BUILTIN
        .iter()
        .map(|(name, text)| RuleSource {
            origin: Origin::Builtin,
            name: format!("builtin:{name}"),
            text: (*text).to_string(),
        })
        .collect()
}

/// The `*.yaml` and `*.yml` files of `dir`, by name; for Sigma, of its
/// subdirectories too (Sigma's own tree keeps a directory per category).
pub fn read_dir(dir: &Path, origin: Origin) -> Result<Vec<RuleSource>, LoadError> {
    let mut paths = Vec::new();
    collect(dir, origin == Origin::Sigma, 0, &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|source| LoadError::Io {
                path: p.clone(),
                source,
            })?;
            Ok(RuleSource {
                origin,
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

fn collect(
    dir: &Path,
    recurse: bool,
    depth: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        // Symbolic links to directories are not followed: no loops.
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if is_dir {
            if recurse && depth < 16 {
                collect(&p, recurse, depth + 1, out)?;
            }
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// What `rules check` prints about one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStatus {
    pub rule_id: String,
    pub title: String,
    pub source: Origin,
    /// `loaded`, `unsupported`, or `disabled`.
    pub status: &'static str,
    pub reason: String,
    pub file: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub tags: Vec<String>,
    pub source: Origin,
    pub kind: Kind,
    /// The suppression key's fields, read from the last trigger event.
    pub key: Vec<String>,
    pub exceptions: Vec<Exception>,
    /// Same definition, same fingerprint: a reload keeps its state.
    pub fingerprint: u64,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Single(Cond),
    Sequence(Sequence),
    Threshold {
        cond: Cond,
        group_by: Vec<String>,
        within: u64,
        count: u32,
        distinct: Option<String>,
    },
    FirstSeen {
        cond: Cond,
        group_by: Vec<String>,
        field: String,
        learn: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub within: u64,
    pub steps: Vec<Step>,
    pub unless: Option<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub cond: Cond,
    /// Key alternatives: the event joins the sequence under each.
    pub keys: Vec<Vec<String>>,
    pub count: u32,
    pub within: u64,
}

/// Events a rule ignores: every field of one tuple compares true.
#[derive(Debug, Clone)]
pub struct Exception {
    pub name: String,
    pub fields: Vec<String>,
    pub comps: Vec<Comp>,
    pub values: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    Equals,
    Prefix,
    Suffix,
    Contains,
    Glob,
}

impl Exception {
    pub fn matches(&self, ev: &Event) -> bool {
        self.values.iter().any(|tuple| {
            tuple.iter().enumerate().all(|(i, want)| {
                let Some(v) = ev.get(&self.fields[i]) else {
                    return false;
                };
                match self.comps[i] {
                    Comp::Equals => v == want,
                    Comp::Prefix => v.starts_with(want.as_str()),
                    Comp::Suffix => v.ends_with(want.as_str()),
                    Comp::Contains => v.contains(want.as_str()),
                    Comp::Glob => glob::Pattern::new(want).is_ok_and(|p| p.matches(v)),
                }
            })
        })
    }
}

/// Limits on what one rule may ask for, so that state stays bounded
/// (docs/detections.md).
pub const MAX_COUNT: u32 = 256;
pub const MAX_STEPS: usize = 8;
pub const MAX_WINDOW_MS: u64 = 24 * 3_600_000;

/// Every rule loaded, with the status of each.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub report: Vec<RuleStatus>,
}

/// One file parsed.
struct Parsed<'a> {
    src: &'a RuleSource,
    file: RuleFile,
    /// Sigma documents not served or raising no alert of their own:
    /// (id, title, status, reason).
    notes: Vec<(String, String, &'static str, String)>,
}

impl Parsed<'_> {
    /// The line where rule `id` is defined (1 when not found).
    fn line_of(&self, needle: &str) -> usize {
        self.src
            .text
            .lines()
            .position(|l| {
                let l = l.trim_start().trim_start_matches("- ");
                l.strip_prefix("id:")
                    .or_else(|| l.strip_prefix("rule:"))
                    .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == needle)
            })
            .map_or(1, |n| n + 1)
    }
    fn line_of_key(&self, key: &str) -> usize {
        self.src
            .text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
                    || l.trim_matches(['"', '\'']).starts_with(&format!("{key}:"))
            })
            .map_or(1, |n| n + 1)
    }
    fn invalid(&self, line: usize, message: String) -> LoadError {
        LoadError::Invalid {
            file: self.src.name.clone(),
            line,
            message,
        }
    }
}

/// Parses one file alone (what `rules check` reports first). A Sigma
/// file is parsed and translated.
pub fn parse(src: &RuleSource) -> Result<RuleFile, LoadError> {
    if src.text.trim().is_empty() {
        return Ok(RuleFile::default());
    }
    if src.origin == Origin::Sigma {
        return crate::sigma::translate(src).map(|t| t.file);
    }
    serde_yaml_ng::from_str::<RuleFile>(&src.text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        LoadError::Parse {
            file: src.name.clone(),
            line,
            column,
            message: e.to_string(),
        }
    })
}

/// Loads `sources` together: lists and macros are shared, rule ids are
/// unique, exceptions and `disable` may name a rule of any file.
pub fn compile(sources: &[RuleSource]) -> Result<RuleSet, LoadError> {
    let mut parsed = Vec::new();
    for src in sources {
        if src.origin == Origin::Sigma {
            let t = crate::sigma::translate(src)?;
            let mut notes = Vec::new();
            for (id, title, why) in t.unsupported {
                notes.push((id, title, "unsupported", why));
            }
            for (id, title, why) in t.silent {
                notes.push((id, title, "loaded", why));
            }
            parsed.push(Parsed {
                src,
                file: t.file,
                notes,
            });
            continue;
        }
        parsed.push(Parsed {
            src,
            file: parse(src)?,
            notes: Vec::new(),
        });
    }
    let mut lists: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    let mut macros: BTreeMap<String, CondSpec> = BTreeMap::new();
    let mut list_from: HashMap<String, String> = HashMap::new();
    for p in &parsed {
        for (name, items) in &p.file.lists {
            if let Some(other) = list_from.insert(format!("l:{name}"), p.src.name.clone()) {
                return Err(p.invalid(
                    p.line_of_key(name),
                    format!("list {name:?} is defined twice (also in {other})"),
                ));
            }
            lists.insert(name.clone(), items.clone());
        }
        for (name, spec) in &p.file.macros {
            if let Some(other) = list_from.insert(format!("m:{name}"), p.src.name.clone()) {
                return Err(p.invalid(
                    p.line_of_key(name),
                    format!("macro {name:?} is defined twice (also in {other})"),
                ));
            }
            macros.insert(name.clone(), spec.clone());
        }
    }
    let names = Names {
        lists: &lists,
        macros: &macros,
    };
    // Rules first, then what other files say about them.
    let mut specs: Vec<(usize, RuleSpec)> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut set = RuleSet::default();
    for (fi, p) in parsed.iter().enumerate() {
        for (id, title, status, reason) in &p.notes {
            set.report.push(RuleStatus {
                rule_id: id.clone(),
                title: title.clone(),
                source: p.src.origin,
                status,
                reason: reason.clone(),
                file: p.src.name.clone(),
            });
        }
        for r in &p.file.rules {
            if p.src.origin == Origin::Sigma {
                // A Sigma id seen before (a rule copied into two files)
                // is reported and skipped: Sigma trees are not ours.
                if let Some(&prev) = ids.get(&r.id) {
                    set.report.push(RuleStatus {
                        rule_id: r.id.clone(),
                        title: r.name.clone(),
                        source: Origin::Sigma,
                        status: "unsupported",
                        reason: format!(
                            "id also used in {}: skipped",
                            parsed[specs[prev].0].src.name
                        ),
                        file: p.src.name.clone(),
                    });
                    continue;
                }
            }
            if let Some(prev) = ids.insert(r.id.clone(), specs.len()) {
                let other = &parsed[specs[prev].0].src.name;
                return Err(p.invalid(
                    p.line_of(&r.id),
                    format!("rule id {:?} is defined twice (also in {other})", r.id),
                ));
            }
            specs.push((fi, r.clone()));
        }
    }
    let mut disabled: HashMap<String, String> = HashMap::new();
    for p in &parsed {
        for e in &p.file.exceptions {
            let Some(id) = &e.rule else {
                return Err(p.invalid(
                    p.line_of_key("exceptions"),
                    format!("exception {:?} names no `rule`", e.name),
                ));
            };
            let Some(&i) = ids.get(id) else {
                return Err(p.invalid(
                    p.line_of(id),
                    format!(
                        "exception {:?} is for rule {id:?}, which no file defines",
                        e.name
                    ),
                ));
            };
            specs[i].1.exceptions.push(e.clone());
        }
        for id in &p.file.disable {
            if !ids.contains_key(id) {
                return Err(p.invalid(
                    p.line_of_key("disable"),
                    format!("disable: no file defines rule {id:?}"),
                ));
            }
            disabled.insert(id.clone(), p.src.name.clone());
        }
    }
    for (fi, spec) in specs {
        let p = &parsed[fi];
        let status = |status, reason: String| RuleStatus {
            rule_id: spec.id.clone(),
            title: spec.name.clone(),
            source: p.src.origin,
            status,
            reason,
            file: p.src.name.clone(),
        };
        let rule = match compile_rule(&names, &spec, p.src.origin) {
            Ok(r) => r,
            // What a translated Sigma rule asks beyond the engine's
            // bounds (a count over MAX_COUNT, a window over a day) is not
            // served; the operator's own rules must be fixed.
            Err(m) if p.src.origin == Origin::Sigma => {
                set.report.push(status("unsupported", m));
                continue;
            }
            Err(m) => {
                return Err(p.invalid(p.line_of(&spec.id), format!("rule {:?}: {m}", spec.id)))
            }
        };
        if let Some(by) = disabled.get(&spec.id) {
            set.report
                .push(status("disabled", format!("disabled by {by}")));
        } else if !spec.enabled {
            set.report.push(status("disabled", "enabled: false".into()));
        } else {
            set.report.push(status("loaded", String::new()));
            set.rules.push(rule);
        }
    }
    Ok(set)
}

fn window(what: &str, d: &crate::model::DurSpec) -> Result<u64, String> {
    let ms = d.millis().map_err(|e| format!("{what}: {e}"))?;
    if ms == 0 || ms > MAX_WINDOW_MS {
        return Err(format!("{what}: must be over 0 and at most 24h"));
    }
    Ok(ms)
}

fn count(c: u32) -> Result<u32, String> {
    if c == 0 || c > MAX_COUNT {
        return Err(format!("count {c}: must be 1..={MAX_COUNT}"));
    }
    Ok(c)
}

fn compile_rule(names: &Names, spec: &RuleSpec, origin: Origin) -> Result<Rule, String> {
    if spec.id.is_empty() || spec.id.len() > 128 {
        return Err("id must be 1 to 128 characters".into());
    }
    let kinds = [
        spec.sequence.is_some(),
        spec.threshold.is_some(),
        spec.first_seen.is_some(),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    if kinds > 1 {
        return Err("a rule is one of sequence, threshold, first_seen".into());
    }
    let kind = if let Some(seq) = &spec.sequence {
        if spec.condition.is_some() {
            return Err("a sequence has its conditions in its steps, not in `condition`".into());
        }
        if seq.steps.is_empty() || seq.steps.len() > MAX_STEPS {
            return Err(format!("a sequence has 1..={MAX_STEPS} steps"));
        }
        let within = window("sequence.within", &seq.within)?;
        let step = |s: &StepSpec, what: String| -> Result<Step, String> {
            let keys = match (&s.by, &s.by_any) {
                (Some(_), Some(_)) => return Err(format!("{what}: by or by_any, not both")),
                (Some(b), None) => vec![b.clone()],
                (None, Some(alts)) if !alts.is_empty() => alts.clone(),
                (None, Some(_)) => return Err(format!("{what}: by_any is empty")),
                (None, None) => vec![seq.by.clone()],
            };
            if let Some(k) = keys.iter().find(|k| k.len() != seq.by.len()) {
                return Err(format!(
                    "{what}: key {k:?} has {} fields where the sequence's `by` has {}",
                    k.len(),
                    seq.by.len()
                ));
            }
            Ok(Step {
                cond: names
                    .compile(&s.condition)
                    .map_err(|e| format!("{what}: {e}"))?,
                keys,
                count: count(s.count.unwrap_or(1))?,
                within: match &s.within {
                    Some(w) => window(&format!("{what}.within"), w)?,
                    None => within,
                },
            })
        };
        Kind::Sequence(Sequence {
            within,
            steps: seq
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| step(s, format!("step {}", i + 1)))
                .collect::<Result<_, _>>()?,
            unless: seq
                .unless
                .as_ref()
                .map(|u| step(u, "unless".into()))
                .transpose()?,
        })
    } else {
        let cond = names.compile(
            spec.condition
                .as_ref()
                .ok_or("a rule needs a `condition` (or a `sequence`)")?,
        )?;
        if let Some(t) = &spec.threshold {
            Kind::Threshold {
                cond,
                group_by: t.group_by.clone(),
                within: window("threshold.within", &t.within)?,
                count: count(t.count)?,
                distinct: t.distinct.clone(),
            }
        } else if let Some(f) = &spec.first_seen {
            Kind::FirstSeen {
                cond,
                group_by: f.group_by.clone(),
                field: f.field.clone(),
                learn: match &f.learn {
                    Some(d) => d.millis()?,
                    None => 0,
                },
            }
        } else {
            Kind::Single(cond)
        }
    };
    let key = match (&spec.key, &kind) {
        (Some(k), _) => k.clone(),
        (None, Kind::Single(_)) => vec!["tgid".into(), "exe".into()],
        (None, Kind::Sequence(s)) => s.steps.last().expect("steps").keys[0].clone(),
        (None, Kind::Threshold { group_by, .. }) => group_by.clone(),
        (
            None,
            Kind::FirstSeen {
                group_by, field, ..
            },
        ) => {
            let mut k = group_by.clone();
            k.push(field.clone());
            k
        }
    };
    let exceptions = spec
        .exceptions
        .iter()
        .map(exception)
        .collect::<Result<Vec<_>, _>>()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}",
        kind, key, exceptions, spec.severity, spec.name, spec.description, spec.mitre, spec.tags
    )
    .hash(&mut h);
    Ok(Rule {
        id: spec.id.clone(),
        name: spec.name.clone(),
        description: spec.description.trim().to_string(),
        severity: spec.severity,
        mitre: spec.mitre.clone(),
        tags: spec.tags.clone(),
        source: origin,
        kind,
        key,
        exceptions,
        fingerprint: h.finish(),
    })
}

fn exception(e: &ExceptionSpec) -> Result<Exception, String> {
    if e.fields.is_empty() {
        return Err(format!("exception {:?} has no fields", e.name));
    }
    let comps = match &e.comps {
        None => vec![Comp::Equals; e.fields.len()],
        Some(c) if c.len() == e.fields.len() => c
            .iter()
            .map(|c| match c.as_str() {
                "equals" | "=" => Ok(Comp::Equals),
                "prefix" | "startswith" => Ok(Comp::Prefix),
                "suffix" | "endswith" => Ok(Comp::Suffix),
                "contains" => Ok(Comp::Contains),
                "glob" => Ok(Comp::Glob),
                other => Err(format!(
                    "exception {:?}: unknown comparison {other:?} (equals, prefix, suffix, contains, glob)",
                    e.name
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "exception {:?}: comps must have one entry per field",
                e.name
            ))
        }
    };
    let mut values = Vec::new();
    for t in &e.values {
        if t.len() != e.fields.len() {
            return Err(format!(
                "exception {:?}: value tuple {:?} has {} values for {} fields",
                e.name,
                t.iter().map(|s| s.text()).collect::<Vec<_>>(),
                t.len(),
                e.fields.len()
            ));
        }
        values.push(t.iter().map(|s| s.text()).collect());
    }
    Ok(Exception {
        name: e.name.clone(),
        fields: e.fields.clone(),
        comps,
        values,
    })
}

impl Rule {
    /// What the engine's field index finds this rule by on events of type
    /// `dt` (cond.rs). A sequence has no guard: its steps and their
    /// "unless" all move its state.
    pub fn guard_for(&self, dt: &str) -> crate::cond::Need {
        match &self.kind {
            Kind::Single(c) | Kind::Threshold { cond: c, .. } | Kind::FirstSeen { cond: c, .. } => {
                c.guard_for(dt)
            }
            Kind::Sequence(_) => crate::cond::Need::Nothing,
        }
    }
}

impl RuleSet {
    /// The data_types each rule is indexed under (`None`: every event).
    pub fn data_types(rule: &Rule) -> Option<BTreeSet<String>> {
        match &rule.kind {
            Kind::Single(c) | Kind::Threshold { cond: c, .. } | Kind::FirstSeen { cond: c, .. } => {
                c.data_types()
            }
            Kind::Sequence(s) => {
                let mut out = BTreeSet::new();
                for st in s.steps.iter().chain(s.unless.iter()) {
                    out.extend(st.cond.data_types()?);
                }
                Some(out)
            }
        }
    }
}
