//! Compiled conditions: a tree of field tests, macros and lists already
//! expanded, every pattern parsed once at load.
//!
//! A test on a field the event lacks is false (so `not` of it is true),
//! except `exists: false`. Values are the event's strings as written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use kestrel_event::Event;

use crate::model::{CondSpec, Item, Items, Scalar};

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test(Test),
}

#[derive(Debug, Clone)]
pub struct Test {
    pub field: String,
    pub op: Op,
    pub nocase: bool,
}

#[derive(Clone)]
pub enum Op {
    Equals(StrSet),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    Contains(Vec<String>),
    Glob(Vec<glob::Pattern>),
    Regex(regex::Regex),
    Cidr(Vec<Cidr>),
    Num(Cmp, f64),
    Exists(bool),
    SameAs(String),
}

impl fmt::Debug for Op {
    // The fingerprint of a rule (reload keeps the state of unchanged
    // rules) is made from this: it must show every pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Equals(s) => write!(f, "equals{:?}", s.sorted()),
            Op::Prefix(v) => write!(f, "prefix{v:?}"),
            Op::Suffix(v) => write!(f, "suffix{v:?}"),
            Op::Contains(v) => write!(f, "contains{v:?}"),
            Op::Glob(v) => write!(
                f,
                "glob{:?}",
                v.iter().map(|p| p.as_str()).collect::<Vec<_>>()
            ),
            Op::Regex(r) => write!(f, "regex({})", r.as_str()),
            Op::Cidr(v) => write!(f, "cidr{v:?}"),
            Op::Num(c, n) => write!(f, "{c:?}{n}"),
            Op::Exists(b) => write!(f, "exists({b})"),
            Op::SameAs(o) => write!(f, "same_as({o})"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

/// A set of strings: a few are compared one by one, more are hashed.
#[derive(Debug, Clone)]
pub enum StrSet {
    Few(Vec<String>),
    Many(HashSet<String>),
}

impl StrSet {
    fn new(v: Vec<String>) -> Self {
        if v.len() <= 6 {
            StrSet::Few(v)
        } else {
            StrSet::Many(v.into_iter().collect())
        }
    }
    fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Few(v) => v.iter().any(|x| x == s),
            StrSet::Many(h) => h.contains(s),
        }
    }
    pub fn values(&self) -> Vec<&str> {
        match self {
            StrSet::Few(v) => v.iter().map(String::as_str).collect(),
            StrSet::Many(h) => h.iter().map(String::as_str).collect(),
        }
    }
    fn sorted(&self) -> BTreeSet<&str> {
        self.values().into_iter().collect()
    }
}

/// An address block.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, b) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address block (a.b.c.d/n, x::y/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is that IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        (a >> shift) == (b >> shift)
    }
}

/// Named lists and macros, for compiling.
pub struct Names<'a> {
    pub lists: &'a BTreeMap<String, Vec<Item>>,
    pub macros: &'a BTreeMap<String, CondSpec>,
}

const MAX_DEPTH: usize = 32;

impl Names<'_> {
    /// The strings of `items`, lists expanded.
    pub fn expand(&self, items: &Items) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for i in items.items() {
            self.expand_item(i, &mut out, 0)?;
        }
        Ok(out)
    }

    fn expand_item(&self, item: &Item, out: &mut Vec<String>, depth: usize) -> Result<(), String> {
        match item {
            Item::Lit(s) => out.push(s.text()),
            Item::List { list } => {
                if depth > MAX_DEPTH {
                    return Err(format!("list {list:?} refers to itself"));
                }
                let items = self
                    .lists
                    .get(list)
                    .ok_or_else(|| format!("unknown list {list:?}"))?;
                for i in items {
                    self.expand_item(i, out, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    pub fn compile(&self, c: &CondSpec) -> Result<Cond, String> {
        self.compile_at(c, 0)
    }

    fn compile_at(&self, c: &CondSpec, depth: usize) -> Result<Cond, String> {
        if depth > MAX_DEPTH {
            return Err("conditions nested too deep (a macro that uses itself?)".into());
        }
        let mut forms = Vec::new();
        if c.all.is_some() {
            forms.push("all");
        }
        if c.any.is_some() {
            forms.push("any");
        }
        if c.not.is_some() {
            forms.push("not");
        }
        if c.macro_name.is_some() {
            forms.push("macro");
        }
        if c.field.is_some() {
            forms.push("field");
        }
        if forms.len() != 1 {
            return Err(format!(
                "a condition takes exactly one of all, any, not, macro, field; this one has {}",
                if forms.is_empty() {
                    "none".to_string()
                } else {
                    forms.join(", ")
                }
            ));
        }
        if c.field.is_none() && (c.nocase.is_some() || ops(c).next().is_some()) {
            return Err("an operator without `field`".into());
        }
        if let Some(v) = &c.all {
            return Ok(Cond::All(
                v.iter()
                    .map(|c| self.compile_at(c, depth + 1))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Some(v) = &c.any {
            return Ok(Cond::Any(
                v.iter()
                    .map(|c| self.compile_at(c, depth + 1))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Some(n) = &c.not {
            return Ok(Cond::Not(Box::new(self.compile_at(n, depth + 1)?)));
        }
        if let Some(m) = &c.macro_name {
            let spec = self
                .macros
                .get(m)
                .ok_or_else(|| format!("unknown macro {m:?}"))?;
            return self
                .compile_at(spec, depth + 1)
                .map_err(|e| format!("in macro {m:?}: {e}"));
        }
        let field = c.field.clone().expect("checked above");
        let given: Vec<&str> = ops(c).collect();
        if given.len() != 1 {
            return Err(format!(
                "field {field:?} needs exactly one operator (equals, in, prefix, suffix, contains, \
                 glob, regex, cidr, gt, ge, lt, le, exists, same_as); it has {}",
                if given.is_empty() {
                    "none".into()
                } else {
                    given.join(", ")
                }
            ));
        }
        let nocase = c.nocase.unwrap_or(false);
        let fold = |v: Vec<String>| -> Vec<String> {
            if nocase {
                v.into_iter().map(|s| s.to_lowercase()).collect()
            } else {
                v
            }
        };
        let num = |s: &Scalar| -> Result<f64, String> {
            s.text()
                .parse::<f64>()
                .map_err(|_| format!("field {field:?}: {:?} is not a number", s.text()))
        };
        let op = if let Some(v) = c.equals.as_ref().or(c.in_list.as_ref()) {
            Op::Equals(StrSet::new(fold(self.expand(v)?)))
        } else if let Some(v) = &c.prefix {
            Op::Prefix(fold(self.expand(v)?))
        } else if let Some(v) = &c.suffix {
            Op::Suffix(fold(self.expand(v)?))
        } else if let Some(v) = &c.contains {
            Op::Contains(fold(self.expand(v)?))
        } else if let Some(v) = &c.glob {
            Op::Glob(
                fold(self.expand(v)?)
                    .iter()
                    .map(|p| glob::Pattern::new(p).map_err(|e| format!("glob {p:?}: {e}")))
                    .collect::<Result<_, _>>()?,
            )
        } else if let Some(v) = &c.regex {
            // Several patterns are one alternation: one pass per value.
            let pats = self.expand(v)?;
            let joined = pats
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|");
            let joined = if nocase {
                format!("(?i){joined}")
            } else {
                joined
            };
            Op::Regex(
                regex::RegexBuilder::new(&joined)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("regex {pats:?}: {e}"))?,
            )
        } else if let Some(v) = &c.cidr {
            Op::Cidr(
                self.expand(v)?
                    .iter()
                    .map(|s| Cidr::parse(s))
                    .collect::<Result<_, _>>()?,
            )
        } else if let Some(n) = &c.gt {
            Op::Num(Cmp::Gt, num(n)?)
        } else if let Some(n) = &c.ge {
            Op::Num(Cmp::Ge, num(n)?)
        } else if let Some(n) = &c.lt {
            Op::Num(Cmp::Lt, num(n)?)
        } else if let Some(n) = &c.le {
            Op::Num(Cmp::Le, num(n)?)
        } else if let Some(b) = c.exists {
            Op::Exists(b)
        } else if let Some(o) = &c.same_as {
            Op::SameAs(o.clone())
        } else {
            unreachable!("one operator was counted")
        };
        Ok(Cond::Test(Test { field, op, nocase }))
    }
}

/// The names of the operators `c` gives.
fn ops(c: &CondSpec) -> impl Iterator<Item = &'static str> + '_ {
    [
        ("equals", c.equals.is_some()),
        ("in", c.in_list.is_some()),
        ("prefix", c.prefix.is_some()),
        ("suffix", c.suffix.is_some()),
        ("contains", c.contains.is_some()),
        ("glob", c.glob.is_some()),
        ("regex", c.regex.is_some()),
        ("cidr", c.cidr.is_some()),
        ("gt", c.gt.is_some()),
        ("ge", c.ge.is_some()),
        ("lt", c.lt.is_some()),
        ("le", c.le.is_some()),
        ("exists", c.exists.is_some()),
        ("same_as", c.same_as.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
}

/// Path globs: `*` stays within one directory, `**` crosses them.
const GLOB: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Cond {
    pub fn matches(&self, ev: &Event) -> bool {
        match self {
            Cond::All(v) => v.iter().all(|c| c.matches(ev)),
            Cond::Any(v) => v.iter().any(|c| c.matches(ev)),
            Cond::Not(c) => !c.matches(ev),
            Cond::Test(t) => t.matches(ev),
        }
    }

    /// The data_types this condition can match, `None` for any: what the
    /// engine indexes rules by.
    pub fn data_types(&self) -> Option<BTreeSet<String>> {
        match self {
            Cond::Test(Test {
                field,
                op: Op::Equals(set),
                nocase: false,
            }) if field == "data_type" => {
                Some(set.values().into_iter().map(String::from).collect())
            }
            Cond::Test(_) | Cond::Not(_) => None,
            // Any one constraint of a conjunction bounds it; the
            // narrowest is kept.
            Cond::All(v) => v
                .iter()
                .filter_map(Cond::data_types)
                .min_by_key(BTreeSet::len),
            Cond::Any(v) => {
                let mut out = BTreeSet::new();
                for c in v {
                    out.extend(c.data_types()?);
                }
                Some(out)
            }
        }
    }
}

/// A necessary condition of a rule that many rules' can be tested at
/// once: the rule cannot match unless one of `patterns` (regex syntax, with
/// the test's own flags) matches the event's `field`.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    pub field: String,
    pub patterns: Vec<String>,
    /// Some pattern is a case-insensitive test's, which states the test
    /// exactly only on an ASCII value: a value that is not ASCII passes
    /// the guard whatever the patterns say.
    pub folds: bool,
}

/// What a condition needs of an event of one data_type.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// It cannot match an event of that type.
    Never,
    /// Nothing the field index can use.
    Nothing,
    /// One of the guard's patterns must match.
    Guard(Guard),
}

impl Cond {
    /// The guard of this condition on events of type `dt`, if one can be
    /// read off: branches that test another data_type are left out, then
    /// a test of a conjunction (the one with the fewest patterns), or a
    /// disjunction whose every branch is guarded on one field. A Sigma
    /// file_event rule, one branch per kind with its own path field, has
    /// a guard on each kind's field so.
    pub fn guard_for(&self, dt: &str) -> Need {
        match self {
            Cond::Test(Test {
                field,
                op: Op::Equals(set),
                nocase: false,
            }) if field == "data_type" => {
                if set.contains(dt) {
                    Need::Nothing
                } else {
                    Need::Never
                }
            }
            Cond::Test(t) if t.field != "data_type" => match t.patterns() {
                Some(patterns) => Need::Guard(Guard {
                    field: t.field.clone(),
                    patterns,
                    // A regex test is its own pattern, folding included.
                    folds: t.nocase && !matches!(t.op, Op::Regex(_)),
                }),
                None => Need::Nothing,
            },
            Cond::Test(_) | Cond::Not(_) => Need::Nothing,
            Cond::All(v) => {
                // A result or a family passes nearly every event: a guard
                // on one runs the rule anyway. Sigma's categories add one
                // (`res` is 0) to every rule.
                let rank =
                    |g: &Guard| (COMMON_VALUED.contains(&g.field.as_str()), g.patterns.len());
                let mut best: Option<Guard> = None;
                for c in v {
                    match c.guard_for(dt) {
                        Need::Never => return Need::Never,
                        Need::Nothing => {}
                        Need::Guard(g) => {
                            if best.as_ref().is_none_or(|b| rank(&g) < rank(b)) {
                                best = Some(g);
                            }
                        }
                    }
                }
                best.map_or(Need::Nothing, Need::Guard)
            }
            Cond::Any(v) => {
                let mut out: Option<Guard> = None;
                for c in v {
                    match c.guard_for(dt) {
                        Need::Never => {}
                        Need::Nothing => return Need::Nothing,
                        Need::Guard(g) => match &mut out {
                            None => out = Some(g),
                            Some(o) if o.field == g.field => {
                                o.patterns.extend(g.patterns);
                                o.folds |= g.folds;
                            }
                            Some(_) => return Need::Nothing,
                        },
                    }
                }
                out.map_or(Need::Never, Need::Guard)
            }
        }
    }
}

/// IPv4 blocks as regexes a value must match to be in one: its leading
/// octets in decimal (leading zeros allowed, whether the parser takes them
/// or not), the partial octet as the alternation of its values; and any
/// value with a colon, since an IPv6 form may be an IPv4-mapped address
/// in the block. None for an IPv6 block or one shorter than /8 (nearly
/// every address).
fn cidr_patterns(c: &[Cidr]) -> Option<Vec<String>> {
    let mut out = vec![":".to_string()];
    for b in c {
        let IpAddr::V4(a) = b.addr else {
            return None;
        };
        if b.bits < 8 {
            return None;
        }
        let o = a.octets();
        let (full, rest) = (usize::from(b.bits / 8), b.bits % 8);
        let end = |i: usize| if i == 3 { r"\z" } else { r"\." };
        let mut p = String::from(r"\A");
        for (i, v) in o.iter().enumerate().take(full) {
            p.push_str(&format!("0*{v}{}", end(i)));
        }
        if rest > 0 {
            let low = o[full] & !(0xffu8 >> rest);
            let n = 1u16 << (8 - rest);
            let alts: Vec<String> = (0..n).map(|k| (u16::from(low) + k).to_string()).collect();
            p.push_str(&format!("0*(?:{}){}", alts.join("|"), end(full)));
        }
        out.push(p);
    }
    Some(out)
}

/// Fields whose few values are shared by most events of a type: the last
/// choice for a conjunction's guard.
const COMMON_VALUED: &[&str] = &[
    "res",
    "sa_family",
    "connect_type",
    "create_type",
    "protocol",
    "sock_type",
];

/// Values up to this long are folded on the stack.
const FOLD_INLINE: usize = 256;

/// `v.to_lowercase()`, without allocating for an ASCII value (nearly all
/// are), where it is the byte-wise ASCII lowercase: `v` itself when it has
/// no capital, else a copy in `small`. Case-insensitive tests are the
/// default of Sigma rules, run on most events.
fn lowercase<'a>(v: &'a str, small: &'a mut [u8; FOLD_INLINE], folded: &'a mut String) -> &'a str {
    if v.is_ascii() {
        if !v.bytes().any(|b| b.is_ascii_uppercase()) {
            return v;
        }
        if v.len() <= small.len() {
            let b = &mut small[..v.len()];
            b.copy_from_slice(v.as_bytes());
            b.make_ascii_lowercase();
            return std::str::from_utf8(b).expect("ASCII stays ASCII");
        }
    }
    *folded = v.to_lowercase();
    folded
}

impl Test {
    /// The test as regexes, when it is one that a regex states exactly.
    /// A case-folding test (Sigma's default) folds with `to_lowercase`,
    /// which a regex's `(?i)` equals on ASCII only: its patterns, ASCII
    /// ones only, are `(?i)` regexes exact on an ASCII value, and the
    /// guard lets every other value through ([`Guard::folds`]). Without
    /// this, such a rule ran on every event of its types.
    fn patterns(&self) -> Option<Vec<String>> {
        let flags = if self.nocase { "(?i)" } else { "" };
        let esc = |v: &[String], pre: &str, post: &str| {
            v.iter()
                .map(|p| format!("{flags}{pre}{}{post}", regex::escape(p)))
                .collect()
        };
        let ascii = |v: &[String]| v.iter().all(|p| p.is_ascii());
        match &self.op {
            Op::Regex(r) => Some(vec![r.as_str().to_string()]),
            Op::Equals(s) if self.nocase && !s.values().iter().all(|v| v.is_ascii()) => None,
            Op::Prefix(v) | Op::Suffix(v) | Op::Contains(v) if self.nocase && !ascii(v) => None,
            Op::Equals(s) => Some(
                s.values()
                    .into_iter()
                    .map(|v| format!(r"{flags}\A{}\z", regex::escape(v)))
                    .collect(),
            ),
            Op::Prefix(v) => Some(esc(v, r"\A", "")),
            Op::Suffix(v) => Some(esc(v, "", r"\z")),
            Op::Contains(v) => Some(esc(v, "", "")),
            Op::Cidr(c) => cidr_patterns(c),
            _ => None,
        }
    }

    fn matches(&self, ev: &Event) -> bool {
        let Some(v) = ev.get(&self.field) else {
            return matches!(self.op, Op::Exists(false));
        };
        let (mut small, mut folded) = ([0u8; FOLD_INLINE], String::new());
        let v = if self.nocase && !matches!(self.op, Op::Regex(_)) {
            lowercase(v, &mut small, &mut folded)
        } else {
            v
        };
        match &self.op {
            Op::Equals(s) => s.contains(v),
            Op::Prefix(p) => p.iter().any(|p| v.starts_with(p.as_str())),
            Op::Suffix(p) => p.iter().any(|p| v.ends_with(p.as_str())),
            Op::Contains(p) => p.iter().any(|p| v.contains(p.as_str())),
            Op::Glob(p) => p.iter().any(|p| p.matches_with(v, GLOB)),
            Op::Regex(r) => r.is_match(v),
            Op::Cidr(c) => v
                .parse::<IpAddr>()
                .is_ok_and(|ip| c.iter().any(|c| c.contains(ip))),
            Op::Num(cmp, n) => v.trim().parse::<f64>().is_ok_and(|x| match cmp {
                Cmp::Gt => x > *n,
                Cmp::Ge => x >= *n,
                Cmp::Lt => x < *n,
                Cmp::Le => x <= *n,
            }),
            // An empty field is one Kestrel could not fill: it does not
            // exist for a rule.
            Op::Exists(want) => v.is_empty() != *want,
            Op::SameAs(other) => ev.get(other).is_some_and(|o| o == v),
        }
    }
}
