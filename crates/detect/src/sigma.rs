//! Sigma rules, read by `rsigma-parser` and translated into Kestrel's own
//! rule model, so that they share matching (indexed by `data_type`),
//! state, exceptions, suppression and alerts with the YAML rules.
//!
//! Log sources served: `product: linux` with category `process_creation`
//! (59), `file_event` (602 creation, 608 write-open of a watched path, 82
//! rename's new name) and `network_connection` (42 connect, 43 accept),
//! with Sysmon for Linux's field names ([`CATEGORIES`]), and correlation
//! rules of type `event_count`, `value_count` and `temporal_ordered`.
//! Anything else (another log source, a field with no Kestrel
//! equivalent, a modifier with no meaning here, a regex the regex crate
//! cannot compile) makes the rule `unsupported`, with the reason, and it
//! is skipped: never a rule that silently cannot match. A document that
//! does not parse is an error naming the file and line.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use rsigma_parser::ast::{
    ConditionExpr, ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType,
    Detection, DetectionItem, Level, Modifier, Quantifier, SelectorPattern, SigmaRule,
};
use rsigma_parser::value::{SigmaString, SigmaValue, SpecialChar, StringPart};

use crate::load::{LoadError, RuleSource};
use crate::model::{
    CondSpec, DurSpec, Item, Items, RuleFile, RuleSpec, Scalar, SequenceSpec, Severity, StepSpec,
    ThresholdSpec,
};

/// How a Sigma field is read from one kind of event.
#[derive(Debug, Clone, Copy)]
enum Map {
    /// From this event field.
    Field(&'static str),
    /// The same value on every event of the kind (Sysmon's `Initiated`).
    Const(&'static str),
}

/// One event kind of a category: its data_type, the test every event of
/// the category must also pass (what Sysmon would have logged at all),
/// and its fields.
struct KindMap {
    data_type: &'static str,
    also: Option<(&'static str, &'static [&'static str])>,
    fields: &'static [(&'static str, Map)],
}

/// Fields every kernel event has, as Sysmon for Linux names them.
const COMMON: &[(&str, Map)] = &[
    ("Image", Map::Field("exe")),
    ("User", Map::Field("user")),
    ("ProcessId", Map::Field("tgid")),
];

/// Sigma categories and the Kestrel kinds that serve them.
const CATEGORIES: &[(&str, &[KindMap])] = &[
    (
        "process_creation",
        &[KindMap {
            data_type: "59",
            // Sysmon logs a process that started; a failed exec is not one.
            also: Some(("res", &["0"])),
            fields: &[
                ("CommandLine", Map::Field("argv")),
                ("ParentImage", Map::Field("parent_exe")),
                ("ParentCommandLine", Map::Field("ppid_argv")),
                ("CurrentDirectory", Map::Field("run_path")),
                ("ParentProcessId", Map::Field("ppid")),
                ("LogonId", Map::Field("sessionid")),
            ],
        }],
    ),
    (
        "file_event",
        &[
            KindMap {
                data_type: "602",
                also: None,
                fields: &[("TargetFilename", Map::Field("file_path"))],
            },
            KindMap {
                data_type: "608",
                also: None,
                fields: &[("TargetFilename", Map::Field("file"))],
            },
            KindMap {
                data_type: "82",
                also: Some(("res", &["0"])),
                fields: &[("TargetFilename", Map::Field("new_name"))],
            },
        ],
    ),
    (
        "network_connection",
        &[
            KindMap {
                data_type: "42",
                // Sysmon logs connections made: a non-blocking connect
                // (-115) is on its way, a refused one is not.
                also: Some(("res", &["0", "-115"])),
                fields: &[
                    ("DestinationIp", Map::Field("dip")),
                    ("DestinationPort", Map::Field("dport")),
                    ("DestinationHostname", Map::Field("dip_hostname")),
                    ("SourceIp", Map::Field("sip")),
                    ("SourcePort", Map::Field("sport")),
                    ("Initiated", Map::Const("true")),
                ],
            },
            KindMap {
                data_type: "43",
                also: None,
                // Elkeid's 43, like Sysmon's inbound event, names the
                // listener's end the destination.
                fields: &[
                    ("DestinationIp", Map::Field("dip")),
                    ("DestinationPort", Map::Field("dport")),
                    ("SourceIp", Map::Field("sip")),
                    ("SourcePort", Map::Field("sport")),
                    ("Initiated", Map::Const("false")),
                ],
            },
        ],
    ),
];

/// One kind being translated for: its fields, and the Sigma fields the
/// rule asked of it that it does not have.
struct Ctx<'a> {
    kind: &'a KindMap,
    missing: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
    /// The field's mapping; a miss is remembered (the test is false on
    /// this kind, as on a log that lacks the field).
    fn get(&self, field: &str) -> Option<Map> {
        let m = self.kind.get(field);
        if m.is_none() {
            self.missing.borrow_mut().push(field.to_string());
        }
        m
    }
}

impl KindMap {
    fn get(&self, field: &str) -> Option<Map> {
        self.fields
            .iter()
            .chain(COMMON)
            .find(|(n, _)| *n == field)
            .map(|(_, m)| *m)
    }
}

fn kinds_of(category: &str) -> Option<&'static [KindMap]> {
    CATEGORIES
        .iter()
        .find(|(c, _)| *c == category)
        .map(|(_, k)| *k)
}

/// The Sigma field names served, by category (for docs and errors).
pub fn mapped_fields(category: &str) -> Vec<&'static str> {
    let mut out: Vec<&str> = kinds_of(category)
        .unwrap_or_default()
        .iter()
        .flat_map(|k| k.fields.iter().chain(COMMON).map(|(n, _)| *n))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// What one Sigma file gives: the rules it could translate (in Kestrel's
/// model), and the documents it could not serve, with the reason.
pub(crate) struct Translated {
    pub file: RuleFile,
    /// (rule id, title, reason): status `unsupported`.
    pub unsupported: Vec<(String, String, String)>,
    /// Rules that feed a correlation and raise no alert of their own
    /// (`generate: false`): (id, title, reason), status `loaded`.
    pub silent: Vec<(String, String, String)>,
}

fn parse_error(src: &RuleSource, line: usize, message: String) -> LoadError {
    LoadError::Parse {
        file: src.name.clone(),
        line,
        column: 1,
        message,
    }
}

/// Parses one Sigma file: a YAML error, or a document rsigma refuses
/// (no title, no detection, a condition that does not parse), is an
/// error naming the file and the line.
fn parse_collection(src: &RuleSource) -> Result<rsigma_parser::SigmaCollection, LoadError> {
    // YAML syntax first, for the line and column of the error.
    for doc in serde_yaml_ng::Deserializer::from_str(&src.text) {
        if let Err(e) = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc) {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            return Err(LoadError::Parse {
                file: src.name.clone(),
                line,
                column,
                message: e.to_string(),
            });
        }
    }
    let coll = rsigma_parser::parse_sigma_yaml(&src.text)
        .map_err(|e| parse_error(src, 1, format!("not a Sigma rule: {e}")))?;
    if let Some(first) = coll.errors.first() {
        // The errors do not say which document: the first one that fails
        // alone is named by the line it starts on.
        let line_of_bad = split_documents(&src.text)
            .into_iter()
            .find(|(_, chunk)| rsigma_parser::parse_sigma_yaml(chunk).is_ok_and(|c| c.has_errors()))
            .map_or(1, |(line, _)| line);
        return Err(parse_error(
            src,
            line_of_bad,
            format!("not a Sigma rule: {first}"),
        ));
    }
    Ok(coll)
}

/// The documents of a YAML stream, each with the line it starts on.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            if offset > start_byte {
                out.push((start_line, &text[start_byte..offset]));
            }
            start_byte = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    if start_byte < text.len() {
        out.push((start_line, &text[start_byte..]));
    }
    out
}

/// Parses and translates one Sigma file.
pub(crate) fn translate(src: &RuleSource) -> Result<Translated, LoadError> {
    let coll = parse_collection(src)?;
    let mut out = Translated {
        file: RuleFile::default(),
        unsupported: Vec::new(),
        silent: Vec::new(),
    };
    let stem = src
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&src.name)
        .trim_end_matches(".yml")
        .trim_end_matches(".yaml")
        .to_string();
    // Each rule's per-kind conditions, by id and by name (correlations
    // refer to either).
    let mut base: Vec<(String, Translation)> = Vec::new();
    for (i, r) in coll.rules.iter().enumerate() {
        let id =
            r.id.clone()
                .unwrap_or_else(|| format!("sigma:{stem}:{}", i + 1));
        match translate_rule(r) {
            Ok(t) => base.push((id, t)),
            Err(reason) => out.unsupported.push((id, r.title.clone(), reason)),
        }
    }
    let mut fed: HashMap<String, String> = HashMap::new();
    for (i, c) in coll.correlations.iter().enumerate() {
        let id =
            c.id.clone()
                .unwrap_or_else(|| format!("sigma:{stem}:correlation:{}", i + 1));
        match translate_correlation(c, &base) {
            Ok(spec) => {
                if !c.generate {
                    for r in &c.rules {
                        fed.insert(r.clone(), id.clone());
                    }
                }
                out.file.rules.push(RuleSpec { id, ..spec });
            }
            Err(reason) => out.unsupported.push((id, c.title.clone(), reason)),
        }
    }
    for f in &coll.filters {
        out.unsupported.push((
            f.id.clone()
                .unwrap_or_else(|| format!("sigma:{stem}:filter")),
            f.title.clone(),
            "Sigma filter documents are not supported: append an `exceptions:` entry \
             for the rule in a --rules file instead"
                .into(),
        ));
    }
    for (id, t) in base {
        let by_ref = fed
            .get(&id)
            .or_else(|| t.name.as_ref().and_then(|n| fed.get(n)));
        if let Some(corr) = by_ref {
            out.silent.push((
                id,
                t.spec.name.clone(),
                format!("part of correlation {corr} (generate: false): raises no alert of its own"),
            ));
        } else {
            out.file.rules.push(RuleSpec { id, ..t.spec });
        }
    }
    Ok(out)
}

/// A detection rule translated: the rule, and what a correlation needs.
struct Translation {
    spec: RuleSpec,
    name: Option<String>,
    /// Its category's kinds that serve it.
    kinds: Vec<&'static KindMap>,
}

fn severity(l: Option<Level>) -> Severity {
    match l {
        Some(Level::Informational) => Severity::Info,
        Some(Level::Low) => Severity::Low,
        // Sigma leaves the level optional; medium is its middle.
        None | Some(Level::Medium) => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

/// `attack.t1059.004` is technique T1059.004; other tags stay tags.
fn split_tags(tags: &[String]) -> (Vec<String>, Vec<String>) {
    let mut mitre = Vec::new();
    let mut rest = Vec::new();
    for t in tags {
        let tech = t.strip_prefix("attack.").filter(|s| {
            let mut c = s.chars();
            matches!(c.next(), Some('t' | 'T'))
                && c.next().is_some_and(|d| d.is_ascii_digit())
                && s[1..].chars().all(|c| c.is_ascii_digit() || c == '.')
        });
        match tech {
            Some(t) => mitre.push(t.to_uppercase()),
            None => rest.push(t.clone()),
        }
    }
    (mitre, rest)
}

fn description(d: Option<&str>, falsepositives: &[String]) -> String {
    let mut s = d.unwrap_or_default().trim().to_string();
    let fps: Vec<&str> = falsepositives
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("unknown"))
        .collect();
    if !fps.is_empty() {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str("Known false positives: ");
        s.push_str(&fps.join("; "));
        s.push('.');
    }
    s
}

fn translate_rule(r: &SigmaRule) -> Result<Translation, String> {
    let ls = &r.logsource;
    if ls.product.as_deref() != Some("linux") {
        return Err(format!(
            "log source product {:?}: only `linux` is served",
            ls.product.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(s) = &ls.service {
        return Err(format!(
            "log source service {s:?}: Kestrel serves categories, not services"
        ));
    }
    let category = ls
        .category
        .as_deref()
        .ok_or("log source has no category (process_creation, file_event, network_connection)")?;
    let kinds = kinds_of(category).ok_or_else(|| {
        format!(
            "log source category {category:?}: served are process_creation, file_event, \
             network_connection"
        )
    })?;
    if r.detection.timeframe.is_some() {
        return Err(
            "detection `timeframe` (Sigma's old aggregation): write a correlation rule".into(),
        );
    }
    let mut branches = Vec::new();
    let mut served = Vec::new();
    // Fields missing from every kind: the rule asks what Kestrel never has.
    let mut nowhere: Option<Vec<String>> = None;
    for k in kinds {
        let cx = Ctx {
            kind: k,
            missing: Default::default(),
        };
        let cond = detection_for(r, &cx).map_err(|w| w.0)?;
        let missing = cx.missing.into_inner();
        nowhere = Some(match nowhere {
            None => missing.clone(),
            Some(prev) => prev.into_iter().filter(|f| missing.contains(f)).collect(),
        });
        if missing.is_empty() || cond_can_match(&cond) {
            branches.push(branch(k, cond));
            served.push(k);
        }
    }
    if let Some(f) = nowhere.unwrap_or_default().first() {
        return Err(format!(
            "field {f:?} has no Kestrel equivalent in category {category} (mapped: {})",
            mapped_fields(category).join(", ")
        ));
    }
    if branches.is_empty() {
        return Err(format!(
            "no event kind of category {category} can match this rule"
        ));
    }
    let (mitre, tags) = split_tags(&r.tags);
    Ok(Translation {
        spec: RuleSpec {
            id: String::new(),
            name: r.title.clone(),
            description: description(r.description.as_deref(), &r.falsepositives),
            severity: severity(r.level),
            mitre,
            tags,
            enabled: true,
            condition: Some(any(branches)),
            sequence: None,
            threshold: None,
            first_seen: None,
            key: None,
            exceptions: Vec::new(),
        },
        name: r.name.clone(),
        kinds: served,
    })
}

/// The condition of one kind: its data_type, what the category implies,
/// then the rule's own.
fn branch(k: &KindMap, cond: CondSpec) -> CondSpec {
    let mut all = vec![field_test("data_type", |c| {
        c.equals = Some(strs([k.data_type]))
    })];
    if let Some((f, values)) = k.also {
        all.push(field_test(f, |c| {
            c.in_list = Some(strs(values.iter().copied()))
        }));
    }
    all.push(cond);
    CondSpec {
        all: Some(all),
        ..Default::default()
    }
}

/// Why a rule cannot be served (by any kind).
struct Why(String);

/// False only for the constant false (`any: []`), which a kind's missing
/// field leaves: that kind is not indexed for the rule.
fn cond_can_match(c: &CondSpec) -> bool {
    if let Some(v) = &c.any {
        return v.iter().any(cond_can_match);
    }
    if let Some(v) = &c.all {
        return v.iter().all(cond_can_match);
    }
    true
}

fn detection_for(r: &SigmaRule, k: &Ctx) -> Result<CondSpec, Why> {
    let d = &r.detection;
    let conds = d
        .conditions
        .iter()
        .map(|c| expr(c, &d.named, k))
        .collect::<Result<Vec<_>, _>>()?;
    // Several conditions: any of them (Sigma 1's list form).
    Ok(if conds.len() == 1 {
        conds.into_iter().next().expect("one")
    } else {
        any(conds)
    })
}

fn expr(e: &ConditionExpr, named: &HashMap<String, Detection>, k: &Ctx) -> Result<CondSpec, Why> {
    Ok(match e {
        ConditionExpr::And(v) => all(v
            .iter()
            .map(|e| expr(e, named, k))
            .collect::<Result<_, _>>()?),
        ConditionExpr::Or(v) => any(v
            .iter()
            .map(|e| expr(e, named, k))
            .collect::<Result<_, _>>()?),
        ConditionExpr::Not(e) => not(expr(e, named, k)?),
        ConditionExpr::Identifier(id) => {
            let d = named
                .get(id)
                .ok_or_else(|| Why(format!("condition names {id:?}, which the detection lacks")))?;
            detection(d, k)?
        }
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let mut names: Vec<&String> = named
                .keys()
                .filter(|n| match pattern {
                    SelectorPattern::Them => !n.starts_with('_'),
                    SelectorPattern::Pattern(p) => wildcard_match(p, n),
                })
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(Why(format!("condition `{e}` selects no detection")));
            }
            let parts = names
                .iter()
                .map(|n| detection(&named[*n], k))
                .collect::<Result<Vec<_>, _>>()?;
            match quantifier {
                Quantifier::Any | Quantifier::Count(1) => any(parts),
                Quantifier::All => all(parts),
                Quantifier::Count(n) => {
                    return Err(Why(format!(
                        "`{n} of ...` (more than one of a set) is not supported"
                    )))
                }
            }
        }
    })
}

/// Sigma's selector patterns: `*` only.
fn wildcard_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(at) = rest.find(p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    true
}

fn detection(d: &Detection, k: &Ctx) -> Result<CondSpec, Why> {
    Ok(match d {
        Detection::AllOf(items) => {
            all(items.iter().map(|i| item(i, k)).collect::<Result<_, _>>()?)
        }
        Detection::AnyOf(ds) => any(ds
            .iter()
            .map(|d| detection(d, k))
            .collect::<Result<_, _>>()?),
        Detection::And(ds) => all(ds
            .iter()
            .map(|d| detection(d, k))
            .collect::<Result<_, _>>()?),
        Detection::Keywords(_) => {
            return Err(Why(
                "keyword detections (values without a field) are not supported: name the field"
                    .into(),
            ))
        }
        Detection::ArrayMatch { .. } | Detection::Conditional { .. } => {
            return Err(Why(
                "array matching (`field[any]:`) is not supported: Kestrel's fields are strings"
                    .into(),
            ))
        }
    })
}

/// How a string value is compared.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Whole,
    Contains,
    Prefix,
    Suffix,
}

fn item(it: &DetectionItem, k: &Ctx) -> Result<CondSpec, Why> {
    let name = it.field.name.as_deref().ok_or_else(|| {
        Why("keyword detections (values without a field) are not supported".into())
    })?;
    let mods = &it.field.modifiers;
    let mut place = Place::Whole;
    let (mut cased, mut all_values, mut re, mut cidr, mut exists, mut fieldref) =
        (false, false, false, false, false, false);
    let (mut b64, mut b64off, mut neq) = (false, false, false);
    let mut num: Option<ConditionOperator> = None;
    let mut re_flags = String::new();
    for m in mods {
        match m {
            Modifier::Contains => place = Place::Contains,
            Modifier::StartsWith => place = Place::Prefix,
            Modifier::EndsWith => place = Place::Suffix,
            Modifier::All => all_values = true,
            Modifier::Cased => cased = true,
            Modifier::Re => re = true,
            Modifier::IgnoreCase => re_flags.push('i'),
            Modifier::Multiline => re_flags.push('m'),
            Modifier::DotAll => re_flags.push('s'),
            Modifier::Cidr => cidr = true,
            Modifier::Exists => exists = true,
            Modifier::FieldRef => fieldref = true,
            Modifier::Base64 => b64 = true,
            Modifier::Base64Offset => b64off = true,
            Modifier::Gt => num = Some(ConditionOperator::Gt),
            Modifier::Gte => num = Some(ConditionOperator::Gte),
            Modifier::Lt => num = Some(ConditionOperator::Lt),
            Modifier::Lte => num = Some(ConditionOperator::Lte),
            Modifier::Neq => neq = true,
            other => {
                return Err(Why(format!(
                    "modifier `{}` has no meaning for Linux events",
                    format!("{other:?}").to_lowercase()
                )))
            }
        }
    }
    let Some(map) = k.get(name) else {
        return Ok(any(vec![]));
    };
    let field = match map {
        Map::Field(f) => f,
        Map::Const(c) => {
            // Known for the whole kind: decided here.
            let hit = it.values.iter().any(|v| match v {
                SigmaValue::String(s) => string_regex(s, Place::Whole, cased)
                    .is_ok_and(|r| regex::Regex::new(&r).is_ok_and(|r| r.is_match(c))),
                SigmaValue::Bool(b) => b.to_string() == c,
                other => other.to_string() == c,
            });
            return Ok(if hit != neq { all(vec![]) } else { any(vec![]) });
        }
    };
    let values = &it.values;
    if exists {
        let want = matches!(values.first(), Some(SigmaValue::Bool(true)) | None);
        return Ok(field_test(field, |c| c.exists = Some(want)));
    }
    if fieldref {
        let tests = values
            .iter()
            .map(|v| {
                let other = v.to_string();
                Ok(match k.get(&other) {
                    Some(Map::Field(o)) => field_test(field, |c| c.same_as = Some(o.into())),
                    _ => any(vec![]),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(link(tests, all_values, neq));
    }
    if let Some(op) = num {
        let tests = values
            .iter()
            .map(|v| {
                let n = match v {
                    SigmaValue::Integer(i) => Scalar::Int(*i),
                    SigmaValue::Float(f) => Scalar::Float(*f),
                    other => return Err(Why(format!("field {name}: {other} is not a number"))),
                };
                Ok(field_test(field, |c| match op {
                    ConditionOperator::Gt => c.gt = Some(n),
                    ConditionOperator::Gte => c.ge = Some(n),
                    ConditionOperator::Lt => c.lt = Some(n),
                    _ => c.le = Some(n),
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(link(tests, all_values, neq));
    }
    if cidr {
        let blocks: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let tests = if all_values {
            blocks
                .into_iter()
                .map(|b| field_test(field, |c| c.cidr = Some(strs([b]))))
                .collect()
        } else {
            vec![field_test(field, |c| c.cidr = Some(strs(blocks)))]
        };
        return Ok(link(tests, all_values, neq));
    }
    // Strings, numbers, booleans, null: one test per value, or one
    // alternation for them all.
    let mut tests = Vec::new();
    let mut pats = Vec::new();
    for v in values {
        match v {
            SigmaValue::Null => tests.push(field_test(field, |c| c.exists = Some(false))),
            SigmaValue::String(s) if re => {
                let raw = s.original.clone();
                let p = if re_flags.is_empty() {
                    raw
                } else {
                    format!("(?{re_flags}){raw}")
                };
                check_regex(name, &p)?;
                pats.push(p);
            }
            SigmaValue::String(s) => {
                let encoded: Vec<SigmaString> = if b64 || b64off {
                    let plain = s
                        .as_plain()
                        .ok_or_else(|| Why(format!("field {name}: base64 of a wildcard value")))?;
                    if b64 {
                        vec![SigmaString::from_raw(
                            &base64::engine::general_purpose::STANDARD.encode(plain),
                        )]
                    } else {
                        base64_offsets(&plain)
                            .into_iter()
                            .map(|e| SigmaString::from_raw(&e))
                            .collect()
                    }
                } else {
                    vec![s.clone()]
                };
                // A base64 text is case-sensitive by nature.
                let cased = cased || b64 || b64off;
                let p = encoded
                    .iter()
                    .map(|s| string_regex(s, place, cased))
                    .collect::<Result<Vec<_>, _>>()?
                    .join("|");
                pats.push(if encoded.len() > 1 {
                    format!("(?:{p})")
                } else {
                    p
                });
            }
            other => {
                // Numbers and booleans: the event's text of them.
                let t = other.to_string();
                pats.push(format!("^{}$", regex::escape(&t)));
            }
        }
    }
    if !pats.is_empty() {
        if all_values {
            for p in pats {
                tests.push(field_test(field, |c| c.regex = Some(strs([p]))));
            }
        } else {
            tests.push(field_test(field, |c| c.regex = Some(strs(pats))));
        }
    }
    Ok(link(tests, all_values, neq))
}

/// The tests of one item: all of them (`|all`) or any; `|neq` negates.
fn link(tests: Vec<CondSpec>, all_values: bool, neq: bool) -> CondSpec {
    let c = if tests.len() == 1 {
        tests.into_iter().next().expect("one")
    } else if all_values {
        all(tests)
    } else {
        any(tests)
    };
    if neq {
        not(c)
    } else {
        c
    }
}

fn check_regex(field: &str, p: &str) -> Result<(), Why> {
    regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| {
            Why(format!(
                "field {field}: regex {p:?} does not compile here (no look-around or \
                 back-references): {e}"
            ))
        })
}

/// A Sigma string as a regex: plain parts escaped, `*` any run, `?` one
/// character, anchored as the modifier says; case-insensitive unless
/// `|cased` (Sigma's default).
fn string_regex(s: &SigmaString, place: Place, cased: bool) -> Result<String, Why> {
    let mut body = String::new();
    for p in &s.parts {
        match p {
            StringPart::Plain(t) => body.push_str(&regex::escape(t)),
            StringPart::Special(SpecialChar::WildcardMulti) => body.push_str(".*"),
            StringPart::Special(SpecialChar::WildcardSingle) => body.push('.'),
        }
    }
    let (head, tail) = match place {
        Place::Whole => ("^", "$"),
        Place::Prefix => ("^", ""),
        Place::Suffix => ("", "$"),
        Place::Contains => ("", ""),
    };
    let flags = if cased { "(?s)" } else { "(?is)" };
    Ok(format!("{flags}{head}(?:{body}){tail}"))
}

/// Sigma's `base64offset`: the three encodings of the text at each offset
/// in a base64 stream, cut to the characters that do not depend on what
/// surrounds it.
fn base64_offsets(plain: &str) -> Vec<String> {
    let b = plain.as_bytes();
    let e = base64::engine::general_purpose::STANDARD;
    let start = [0usize, 2, 3];
    let end_cut = [0usize, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(b);
            let enc = e.encode(&padded);
            let from = start[i].min(enc.len());
            let cut = end_cut[(b.len() + i) % 3];
            let to = enc.len().saturating_sub(cut).max(from);
            enc[from..to].to_string()
        })
        .collect()
}

fn translate_correlation(
    c: &CorrelationRule,
    base: &[(String, Translation)],
) -> Result<RuleSpec, String> {
    match c.correlation_type {
        CorrelationType::EventCount
        | CorrelationType::ValueCount
        | CorrelationType::TemporalOrdered => {}
        CorrelationType::Temporal => {
            return Err(
                "temporal (in any order) correlations are not supported: Kestrel's sequences \
                 are ordered; use temporal_ordered"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "correlation type {} is not supported (event_count, value_count, \
                 temporal_ordered are)",
                other.as_str()
            ))
        }
    }
    if !c.aliases.is_empty() {
        return Err("correlation field aliases are not supported".into());
    }
    if c.window != rsigma_parser::WindowMode::Sliding {
        return Err(format!(
            "correlation window {:?}: only the sliding window is supported",
            c.window.as_str()
        ));
    }
    let refs = c
        .rules
        .iter()
        .map(|r| {
            base.iter()
                .find(|(id, t)| id == r || t.name.as_deref() == Some(r.as_str()))
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    format!(
                        "correlation refers to rule {r:?}, which this file does not define \
                         (or which is unsupported)"
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if refs.is_empty() {
        return Err("correlation names no rules".into());
    }
    // Group fields, per referenced rule (the same Sigma field may be a
    // different event field per kind: then it cannot key the group).
    let group_of = |t: &Translation| -> Result<Vec<String>, String> {
        c.group_by
            .iter()
            .map(|g| {
                let mut fields = t.kinds.iter().map(|k| match k.get(g) {
                    Some(Map::Field(f)) => Ok(f),
                    _ => Err(format!("group-by field {g:?} has no Kestrel equivalent")),
                });
                let first = fields.next().expect("a served kind")?;
                for f in fields {
                    if f? != first {
                        return Err(format!(
                            "group-by field {g:?} is a different event field per kind"
                        ));
                    }
                }
                Ok(first.to_string())
            })
            .collect()
    };
    let within = DurSpec::Secs(c.timespan.seconds);
    let (mitre, tags) = split_tags(&c.tags);
    let mut spec = RuleSpec {
        id: String::new(),
        name: c.title.clone(),
        description: description(c.description.as_deref(), &c.falsepositives),
        severity: severity(c.level),
        mitre,
        tags,
        enabled: true,
        condition: None,
        sequence: None,
        threshold: None,
        first_seen: None,
        key: None,
        exceptions: Vec::new(),
    };
    let threshold_count = |preds: &[(ConditionOperator, u64)]| -> Result<u32, String> {
        match preds {
            [(ConditionOperator::Gte, n)] => Ok(*n),
            // `gt: 18446744073709551615` has no next count: too large,
            // like any count past u32 (not a wrap to 0).
            [(ConditionOperator::Gt, n)] => n
                .checked_add(1)
                .ok_or_else(|| format!("count {n} too large")),
            _ => Err(
                "correlation condition: only a lower bound (gte or gt) is supported: \
                 an alert is raised when the count reaches it"
                    .to_string(),
            ),
        }
        .and_then(|n| u32::try_from(n).map_err(|_| format!("count {n} too large")))
    };
    match c.correlation_type {
        CorrelationType::EventCount | CorrelationType::ValueCount => {
            let CorrelationCondition::Threshold {
                predicates, field, ..
            } = &c.condition
            else {
                return Err("event_count/value_count need a threshold condition".into());
            };
            let group = group_of(refs[0])?;
            for t in &refs[1..] {
                if group_of(t)? != group {
                    return Err("group-by fields differ between the rules counted".into());
                }
            }
            let distinct = if c.correlation_type == CorrelationType::ValueCount {
                let f = field
                    .as_ref()
                    .and_then(|f| f.first())
                    .ok_or("value_count needs `condition.field`")?;
                let mut mapped = refs[0].kinds.iter().map(|k| k.get(f));
                match mapped.next().flatten() {
                    Some(Map::Field(m))
                        if mapped.all(|x| matches!(x, Some(Map::Field(y)) if y == m)) =>
                    {
                        Some(m.to_string())
                    }
                    _ => {
                        return Err(format!(
                            "value_count field {f:?} has no single Kestrel equivalent"
                        ))
                    }
                }
            } else {
                None
            };
            spec.condition = Some(any(refs
                .iter()
                .map(|t| t.spec.condition.clone().expect("detection rules have one"))
                .collect()));
            spec.threshold = Some(ThresholdSpec {
                group_by: group,
                within,
                count: threshold_count(predicates)?,
                distinct,
            });
        }
        CorrelationType::TemporalOrdered => {
            if let CorrelationCondition::Threshold { predicates, .. } = &c.condition {
                let n = threshold_count(predicates)?;
                if n as usize != refs.len() {
                    return Err(format!(
                        "temporal_ordered with a count of {n} of {} rules: only all of them, \
                         in order, is supported",
                        refs.len()
                    ));
                }
            } else {
                return Err("temporal_ordered: only a count condition is supported".into());
            }
            let steps = refs
                .iter()
                .map(|t| {
                    Ok(StepSpec {
                        condition: t.spec.condition.clone().expect("detection rules have one"),
                        by: Some(group_of(t)?),
                        by_any: None,
                        count: None,
                        within: None,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            spec.sequence = Some(SequenceSpec {
                by: steps[0].by.clone().unwrap_or_default(),
                within,
                steps,
                unless: None,
            });
        }
        _ => unreachable!("checked above"),
    }
    Ok(spec)
}

fn strs<I, S>(v: I) -> Items
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Items::Many(
        v.into_iter()
            .map(|s| Item::Lit(Scalar::Str(s.into())))
            .collect(),
    )
}

fn field_test(field: &str, set: impl FnOnce(&mut CondSpec)) -> CondSpec {
    let mut c = CondSpec {
        field: Some(field.to_string()),
        ..Default::default()
    };
    set(&mut c);
    c
}

fn all(v: Vec<CondSpec>) -> CondSpec {
    CondSpec {
        all: Some(v),
        ..Default::default()
    }
}

fn any(v: Vec<CondSpec>) -> CondSpec {
    CondSpec {
        any: Some(v),
        ..Default::default()
    }
}

fn not(c: CondSpec) -> CondSpec {
    CondSpec {
        not: Some(Box::new(c)),
        ..Default::default()
    }
}

/// The Sigma field mapping as a Markdown table, for docs/detections.md.
pub fn mapping_table() -> String {
    let mut rows: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for (cat, kinds) in CATEGORIES {
        for k in *kinds {
            for (f, m) in k.fields.iter().chain(COMMON) {
                let v = match m {
                    Map::Field(e) => format!("{}: `{e}`", k.data_type),
                    Map::Const(c) => format!("{}: always `{c}`", k.data_type),
                };
                rows.entry((cat, f)).or_default().push(v);
            }
        }
    }
    let mut s =
        String::from("| category | Sigma field | Kestrel field, by data_type |\n|---|---|---|\n");
    for ((cat, f), v) in rows {
        s.push_str(&format!("| {cat} | {f} | {} |\n", v.join(", ")));
    }
    s
}
