//! The rule files as written: what serde reads from YAML, before any name
//! is resolved. `deny_unknown_fields` everywhere, so a misspelt key is an
//! error with its line instead of a rule that silently never matches.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One rule file. Every section is optional; lists and macros are shared
/// by all files loaded together, exceptions and `disable` may name rules
/// of other files (an operator's file amending the shipped set).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<Item>>,
    #[serde(default)]
    pub macros: BTreeMap<String, CondSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Exceptions appended to rules of any file, by rule id.
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
    /// Rule ids turned off.
    #[serde(default)]
    pub disable: Vec<String>,
}

/// A YAML scalar, kept as the string events carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A value in an operator's list: a literal, or `{list: NAME}` for every
/// item of a named list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Item {
    Lit(Scalar),
    List { list: String },
}

/// One value or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Items {
    One(Item),
    Many(Vec<Item>),
}

impl Items {
    pub fn items(&self) -> Vec<&Item> {
        match self {
            Items::One(i) => vec![i],
            Items::Many(v) => v.iter().collect(),
        }
    }
}

/// A condition: exactly one of `all`, `any`, `not`, `macro`, or a `field`
/// with one operator (checked when compiled).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondSpec {
    pub all: Option<Vec<CondSpec>>,
    pub any: Option<Vec<CondSpec>>,
    pub not: Option<Box<CondSpec>>,
    #[serde(rename = "macro")]
    pub macro_name: Option<String>,
    pub field: Option<String>,
    pub equals: Option<Items>,
    #[serde(rename = "in")]
    pub in_list: Option<Items>,
    pub prefix: Option<Items>,
    pub suffix: Option<Items>,
    pub contains: Option<Items>,
    pub glob: Option<Items>,
    pub regex: Option<Items>,
    pub cidr: Option<Items>,
    pub gt: Option<Scalar>,
    pub ge: Option<Scalar>,
    pub lt: Option<Scalar>,
    pub le: Option<Scalar>,
    pub exists: Option<bool>,
    /// The value equals another field's value of the same event.
    pub same_as: Option<String>,
    /// Case-insensitive comparison (equals, in, prefix, suffix, contains,
    /// glob; regex takes `(?i)`).
    pub nocase: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A duration: `500ms`, `5s`, `10m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurSpec {
    Secs(u64),
    Text(String),
}

impl DurSpec {
    /// In milliseconds, or why not.
    pub fn millis(&self) -> Result<u64, String> {
        match self {
            DurSpec::Secs(s) => Ok(s.saturating_mul(1000)),
            DurSpec::Text(t) => {
                let t = t.trim();
                let split = t
                    .find(|c: char| !c.is_ascii_digit())
                    .ok_or_else(|| format!("duration {t:?} has no unit (ms, s, m, h)"))?;
                let (n, unit) = t.split_at(split);
                let n: u64 = n
                    .parse()
                    .map_err(|_| format!("duration {t:?} does not start with a number"))?;
                let mul = match unit {
                    "ms" => 1,
                    "s" => 1000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    "d" => 86_400_000,
                    _ => return Err(format!("duration {t:?}: unknown unit {unit:?}")),
                };
                Ok(n.saturating_mul(mul))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub mitre: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The event condition of a single-event, threshold or first-seen rule.
    pub condition: Option<CondSpec>,
    pub sequence: Option<SequenceSpec>,
    pub threshold: Option<ThresholdSpec>,
    pub first_seen: Option<FirstSeenSpec>,
    /// Fields of the last trigger event that make the suppression key.
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Key fields shared by the steps that do not give their own.
    #[serde(default)]
    pub by: Vec<String>,
    /// From the event that completes the first step to the last one.
    pub within: DurSpec,
    pub steps: Vec<StepSpec>,
    /// An event that, between the first step and the last, cancels the
    /// sequence for its key.
    pub unless: Option<StepSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub condition: CondSpec,
    /// Key fields of this step (same number as the sequence's).
    pub by: Option<Vec<String>>,
    /// Alternative keys: the step's event is joined under each.
    pub by_any: Option<Vec<Vec<String>>>,
    /// The step is done once this many matching events arrived within
    /// `within` (default 1).
    pub count: Option<u32>,
    pub within: Option<DurSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    #[serde(default)]
    pub group_by: Vec<String>,
    pub within: DurSpec,
    pub count: u32,
    /// Count distinct values of this field instead of events.
    pub distinct: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstSeenSpec {
    #[serde(default)]
    pub group_by: Vec<String>,
    pub field: String,
    /// Values seen during this time after the rule's first event are
    /// learnt without an alert.
    pub learn: Option<DurSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    /// The rule amended (top-level `exceptions:` only).
    pub rule: Option<String>,
    pub name: String,
    pub fields: Vec<String>,
    /// Per field: equals (default), prefix, suffix, contains, glob.
    pub comps: Option<Vec<String>>,
    pub values: Vec<Vec<Scalar>>,
}
