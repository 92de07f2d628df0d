//! The engine: rules indexed by data_type and then by field, the state of
//! stateful rules (bounded LRU maps), suppression, and the alert events.
//!
//! Within a data_type, a rule with a guard (a test it cannot match
//! without: `exe` ends with one of these, `argv` matches this regex) is
//! found through one regex set per field, which reads the event's value
//! once for all such rules; only the rules whose guard matched, and those
//! without a guard, are run.
//!
//! Time is the events' own `time` (epoch ms, set at capture), not the
//! clock when they reach the engine: events of one behaviour may arrive
//! out of order (a file creation waits up to a second for its hash while
//! the exec of that file goes straight on), and a replayed file must give
//! the alerts the live agent gave.

use std::cell::OnceCell;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kestrel_event::Event;
use lru::LruCache;

use crate::cond::Need;
use crate::load::{Kind, Rule, RuleSet, Sequence};

/// `data_type` of an alert.
pub const DATA_TYPE_ALERT: &str = "9000";

/// The last trigger event's fields an alert carries (process, user, host,
/// container), in this order, when the event has them.
pub const ALERT_CONTEXT_FIELDS: &[&str] = &[
    "pid",
    "ppid",
    "pgid",
    "tgid",
    "sid",
    "comm",
    "exe",
    "exe_md5",
    "argv",
    "pid_tree",
    "run_path",
    "tty_name",
    "sessionid",
    "uid",
    "euid",
    "user",
    "hostname",
    "nodename",
    "local_ip",
    "pid_ns",
    "mnt_ns",
    "net_ns",
    "ns_pid",
    "cgroup_id",
    "container_id",
    "container_runtime",
    "container_name",
    "image",
    "pod_uid",
    "pod_name",
    "pod_namespace",
];

/// How late an event of a later step may arrive before the event of the
/// first step and still make the sequence (file creations wait for their
/// hash: `file_md5_delay_ms`, 1 s by default).
pub const REORDER_MS: u64 = 5_000;
/// Trigger event ids an alert lists at most (the last ones).
pub const MAX_TRIGGER_IDS: usize = 16;
/// Entries of the map of out-of-order events, per sequence rule.
const EARLY_ENTRIES: usize = 1024;
/// 9999-12-31T23:59:59.999Z in ms. A replayed file's later times are taken
/// as this one, so that a time plus a window (24 h at most) cannot
/// overflow.
const LATEST_MS: u64 = 253_402_300_799_999;
/// Suppression entries per rule.
const SUPPRESS_ENTRIES: usize = 4096;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Repeated alerts of one rule and key within this are counted, not
    /// sent; the next one sent carries the count. 0 turns it off.
    pub suppress_ms: u64,
    /// Entries of state (sequence keys, threshold groups, first-seen
    /// values) for all rules together, shared out evenly.
    pub max_state_entries: usize,
    /// Alert ids are `PREFIX-alert-N`.
    pub alert_prefix: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            suppress_ms: 60_000,
            max_state_entries: 8192,
            alert_prefix: "local".into(),
        }
    }
}

/// What the engine counts (shared with the agent's counters).
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Events the engine looked at.
    pub events: AtomicU64,
    /// Rules run on them: what the data_type index leaves of
    /// rules × events.
    pub rule_evaluations: AtomicU64,
    /// Alerts raised and sent.
    pub alerts: AtomicU64,
    /// Alerts not sent because one for the same rule and key was sent
    /// within the suppression window.
    pub suppressed: AtomicU64,
    /// State entries dropped because a rule's map was full (the oldest
    /// used goes: a sequence in progress or a first-seen value forgotten).
    pub state_evictions: AtomicU64,
    /// Rules in force.
    pub rules: AtomicU64,
    /// Rules read but not in force because Kestrel cannot serve them
    /// (Sigma rules of another log source, an unmapped field...): each
    /// is logged with its reason at load.
    pub rules_unsupported: AtomicU64,
    /// Reloads done, and refused (the old rules stay).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// The event's id as the rules' state holds it, made when a rule first
/// needs it: most events match no rule, and one allocation per event was a
/// visible share of detection's cost. Always the same `Arc` for one event
/// (sequences tell events apart by pointer).
struct EventId<'a> {
    ev: &'a Event,
    arc: OnceCell<Arc<str>>,
}

impl EventId<'_> {
    fn get(&self) -> Arc<str> {
        self.arc
            .get_or_init(|| Arc::from(self.ev.get("event_id").unwrap_or("")))
            .clone()
    }
}

/// One step's matching events for a key: (time, event id), by time.
#[derive(Debug, Default)]
struct Hits(VecDeque<(u64, Arc<str>)>);

impl Hits {
    fn add(&mut self, t: u64, id: Arc<str>, cap: usize) {
        let pos = self
            .0
            .iter()
            .rposition(|(x, _)| *x <= t)
            .map_or(0, |p| p + 1);
        self.0.insert(pos, (t, id));
        while self.0.len() > cap {
            self.0.pop_front();
        }
    }
    fn expire(&mut self, before: u64) {
        while self.0.front().is_some_and(|(t, _)| *t < before) {
            self.0.pop_front();
        }
    }
}

/// A sequence in progress for one key.
#[derive(Debug, Default)]
struct SeqState {
    steps: Vec<Hits>,
    unless: Vec<u64>,
    /// The alert context of the newest event of the last step.
    last: Option<(u64, Box<Event>)>,
}

impl SeqState {
    fn new(n: usize) -> Self {
        SeqState {
            steps: (0..n).map(|_| Hits::default()).collect(),
            unless: Vec::new(),
            last: None,
        }
    }
    fn is_empty(&self) -> bool {
        self.steps.iter().all(|h| h.0.is_empty())
    }
    fn merge(&mut self, other: SeqState, seq: &Sequence) {
        for (i, h) in other.steps.into_iter().enumerate() {
            for (t, id) in h.0 {
                self.steps[i].add(t, id, cap(seq, i));
            }
        }
        self.unless.extend(other.unless);
        if let Some(l) = other.last {
            if self.last.as_ref().is_none_or(|m| m.0 <= l.0) {
                self.last = Some(l);
            }
        }
    }
}

fn cap(seq: &Sequence, i: usize) -> usize {
    seq.steps[i].count as usize + 3
}

enum State {
    None,
    Seq {
        main: LruCache<u64, SeqState>,
        early: LruCache<u64, SeqState>,
    },
    Count(LruCache<u64, VecDeque<(u64, Arc<str>, u64)>>),
    Seen {
        seen: LruCache<u64, ()>,
        started: Option<u64>,
    },
}

struct Supp {
    last: u64,
    suppressed: u64,
}

struct Slot {
    rule: Rule,
    state: State,
    suppress: LruCache<u64, Supp>,
}

/// The rules of one data_type.
#[derive(Default)]
struct Bucket {
    /// Run on every event of the type: no guard, or a guard that could
    /// not be compiled into a set.
    always: Vec<usize>,
    guarded: Vec<FieldSet>,
}

/// The guards on one field of the rules of one data_type.
struct FieldSet {
    field: String,
    set: regex::RegexSet,
    /// Pattern number → slot.
    rule_of: Vec<usize>,
    /// The slots whose guard has a case-insensitive pattern: run on a
    /// value that is not ASCII, where `(?i)` is not `to_lowercase`.
    folds: Vec<usize>,
}

/// Of one data_type: field → (slot, its guard's patterns, whether one of
/// them folds case).
type Guards = BTreeMap<String, Vec<(usize, Vec<String>, bool)>>;

/// Memory a field's regex set may take: past it its rules are run one by
/// one, as without the index.
const GUARD_SET_BYTES: usize = 16 << 20;

/// The rules in force and their state.
pub struct Engine {
    slots: Vec<Slot>,
    index: HashMap<String, Bucket>,
    any: Vec<usize>,
    /// The rules to run on the current event (kept to reuse its memory).
    run_list: Vec<usize>,
    hasher: RandomState,
    cfg: EngineConfig,
    counters: Arc<EngineCounters>,
    next_alert: u64,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("at least 1")
}

/// Puts `v` under `k`, dropping the least recently used entry when full
/// (counted).
fn put<V>(c: &mut LruCache<u64, V>, k: u64, v: V, evictions: &AtomicU64) {
    if !c.contains(&k) && c.len() >= c.cap().get() {
        c.pop_lru();
        evictions.fetch_add(1, Ordering::Relaxed);
    }
    c.put(k, v);
}

impl Engine {
    pub fn new(set: RuleSet, cfg: EngineConfig, counters: Arc<EngineCounters>) -> Engine {
        let mut e = Engine {
            slots: Vec::new(),
            index: HashMap::new(),
            any: Vec::new(),
            run_list: Vec::new(),
            hasher: RandomState::new(),
            cfg,
            counters,
            next_alert: 0,
        };
        e.install(set, Vec::new());
        e
    }

    pub fn counters(&self) -> &Arc<EngineCounters> {
        &self.counters
    }

    /// The rules in force.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.slots.iter().map(|s| &s.rule)
    }

    /// Replaces the rules; a rule whose id and definition are unchanged
    /// keeps its state (sequences in progress, counts, values seen,
    /// suppression). Returns how many kept their state.
    pub fn reload(&mut self, set: RuleSet) -> usize {
        let old = std::mem::take(&mut self.slots);
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        self.install(set, old)
    }

    fn per_rule_entries(&self, set: &RuleSet) -> usize {
        let stateful = set
            .rules
            .iter()
            .filter(|r| !matches!(r.kind, Kind::Single(_)))
            .count()
            .max(1);
        (self.cfg.max_state_entries / stateful).max(16)
    }

    fn install(&mut self, set: RuleSet, mut old: Vec<Slot>) -> usize {
        let per_rule = self.per_rule_entries(&set);
        let unsupported = set
            .report
            .iter()
            .filter(|r| r.status == "unsupported")
            .count();
        self.counters
            .rules_unsupported
            .store(unsupported as u64, Ordering::Relaxed);
        let mut kept = 0;
        self.index.clear();
        self.any.clear();
        let mut guards: BTreeMap<String, Guards> = BTreeMap::new();
        for rule in set.rules {
            let reuse = old
                .iter()
                .position(|s| s.rule.id == rule.id && s.rule.fingerprint == rule.fingerprint);
            let slot = match reuse {
                Some(i) => {
                    kept += 1;
                    let mut s = old.swap_remove(i);
                    match &mut s.state {
                        State::Seq { main, .. } => main.resize(nz(per_rule)),
                        State::Count(c) => c.resize(nz(per_rule)),
                        State::Seen { seen, .. } => seen.resize(nz(per_rule)),
                        State::None => {}
                    }
                    s.rule = rule;
                    s
                }
                None => Slot {
                    state: match &rule.kind {
                        Kind::Single(_) => State::None,
                        Kind::Sequence(_) => State::Seq {
                            main: LruCache::new(nz(per_rule)),
                            early: LruCache::new(nz(EARLY_ENTRIES.min(per_rule))),
                        },
                        Kind::Threshold { .. } => State::Count(LruCache::new(nz(per_rule))),
                        Kind::FirstSeen { .. } => State::Seen {
                            seen: LruCache::new(nz(per_rule)),
                            started: None,
                        },
                    },
                    suppress: LruCache::new(nz(SUPPRESS_ENTRIES)),
                    rule,
                },
            };
            let i = self.slots.len();
            match RuleSet::data_types(&slot.rule) {
                Some(types) => {
                    for t in types {
                        match slot.rule.guard_for(&t) {
                            Need::Guard(g) => guards
                                .entry(t)
                                .or_default()
                                .entry(g.field)
                                .or_default()
                                .push((i, g.patterns, g.folds)),
                            Need::Nothing => self.index.entry(t).or_default().always.push(i),
                            Need::Never => {}
                        }
                    }
                }
                None => self.any.push(i),
            }
            self.slots.push(slot);
        }
        for (t, fields) in guards {
            let bucket = self.index.entry(t).or_default();
            for (field, rules) in fields {
                let mut rule_of = Vec::new();
                let mut patterns = Vec::new();
                let mut folds = Vec::new();
                for (i, pats, fold) in &rules {
                    rule_of.extend(std::iter::repeat_n(*i, pats.len()));
                    patterns.extend(pats.iter().cloned());
                    if *fold {
                        folds.push(*i);
                    }
                }
                match regex::RegexSetBuilder::new(&patterns)
                    .size_limit(GUARD_SET_BYTES)
                    .build()
                {
                    Ok(set) => bucket.guarded.push(FieldSet {
                        field,
                        set,
                        rule_of,
                        folds,
                    }),
                    // Each rule's own regex compiled: only the set is too
                    // big. Correct, only slower.
                    Err(_) => bucket.always.extend(rules.iter().map(|(i, _, _)| *i)),
                }
            }
            bucket.always.sort_unstable();
        }
        self.counters
            .rules
            .store(self.slots.len() as u64, Ordering::Relaxed);
        kept
    }

    fn key(&self, fields: &[String], ev: &Event) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        for f in fields {
            let v = ev.get(f).filter(|v| !v.is_empty())?;
            v.hash(&mut h);
        }
        Some(h.finish())
    }

    /// Runs `ev` through the rules; alerts are appended to `out`. Alerts
    /// themselves are not fed back.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Event>) {
        let dt = ev.get("data_type").unwrap_or("");
        if dt == DATA_TYPE_ALERT {
            return;
        }
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let t = ev
            .get("time")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or_else(now_ms)
            .min(LATEST_MS);
        let id = EventId {
            ev,
            arc: OnceCell::new(),
        };
        // Taken out for the loop (the rules' state is changed in it) and
        // put back: two moves, no allocation.
        let mut run = std::mem::take(&mut self.run_list);
        self.candidates_into(ev, &mut run);
        self.counters
            .rule_evaluations
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        for &i in &run {
            self.run(i, ev, t, &id, out);
        }
        self.run_list = run;
    }

    /// The rules the index runs on `ev`.
    #[cfg(test)]
    pub(crate) fn candidates(&self, ev: &Event) -> Vec<usize> {
        let mut v = Vec::new();
        self.candidates_into(ev, &mut v);
        v
    }

    fn candidates_into(&self, ev: &Event, run: &mut Vec<usize>) {
        let dt = ev.get("data_type").unwrap_or("");
        run.clear();
        if let Some(b) = self.index.get(dt) {
            run.extend_from_slice(&b.always);
            for fs in &b.guarded {
                if let Some(v) = ev.get(&fs.field) {
                    if !v.is_ascii() {
                        run.extend_from_slice(&fs.folds);
                    }
                    run.extend(fs.set.matches(v).iter().map(|m| fs.rule_of[m]));
                }
            }
            // The rules' order, whatever index found them (a rule with
            // several matching patterns once).
            run.sort_unstable();
            run.dedup();
        }
        run.extend_from_slice(&self.any);
    }

    fn run(&mut self, i: usize, ev: &Event, t: u64, id: &EventId, out: &mut Vec<Event>) {
        let slot = &self.slots[i];
        if slot.rule.exceptions.iter().any(|x| x.matches(ev)) {
            return;
        }
        let fired: Option<(Vec<Arc<str>>, u64, Event)> = match &slot.rule.kind {
            Kind::Single(c) => c.matches(ev).then(|| (vec![id.get()], t, context(ev))),
            Kind::Threshold { .. } => self.threshold(i, ev, t, id),
            Kind::FirstSeen { .. } => self.first_seen(i, ev, t, id),
            Kind::Sequence(_) => self.sequence(i, ev, t, id),
        };
        if let Some((ids, t, ctx)) = fired {
            let key = self.suppress_key(&self.slots[i].rule.key, ev);
            self.alert(i, key, ids, t, ctx, out);
        }
    }

    fn threshold(
        &mut self,
        i: usize,
        ev: &Event,
        t: u64,
        id: &EventId,
    ) -> Option<(Vec<Arc<str>>, u64, Event)> {
        let Kind::Threshold {
            cond,
            group_by,
            within,
            count,
            distinct,
        } = &self.slots[i].rule.kind
        else {
            unreachable!()
        };
        if !cond.matches(ev) {
            return None;
        }
        let key = self.key(group_by, ev)?;
        let value = match distinct {
            Some(f) => self.key(std::slice::from_ref(f), ev)?,
            None => 0,
        };
        let (within, count, distinct) = (*within, *count as usize, distinct.is_some());
        let evictions = &self.counters.state_evictions;
        let State::Count(map) = &mut self.slots[i].state else {
            unreachable!()
        };
        if map.get(&key).is_none() {
            put(map, key, VecDeque::new(), evictions);
        }
        let w = map.get_mut(&key).expect("just put");
        while w.front().is_some_and(|(x, _, _)| *x + within < t) {
            w.pop_front();
        }
        if distinct {
            w.retain(|(_, _, v)| *v != value);
        }
        w.push_back((t, id.get(), value));
        if w.len() < count {
            return None;
        }
        let ids = w.iter().map(|(_, id, _)| id.clone()).collect();
        map.pop(&key);
        Some((ids, t, context(ev)))
    }

    fn first_seen(
        &mut self,
        i: usize,
        ev: &Event,
        t: u64,
        id: &EventId,
    ) -> Option<(Vec<Arc<str>>, u64, Event)> {
        let Kind::FirstSeen {
            cond,
            group_by,
            field,
            learn,
        } = &self.slots[i].rule.kind
        else {
            unreachable!()
        };
        if !cond.matches(ev) {
            return None;
        }
        let mut all = group_by.clone();
        all.push(field.clone());
        let key = self.key(&all, ev)?;
        let learn = *learn;
        let evictions = &self.counters.state_evictions;
        let State::Seen { seen, started } = &mut self.slots[i].state else {
            unreachable!()
        };
        let start = *started.get_or_insert(t);
        if seen.get(&key).is_some() {
            return None;
        }
        put(seen, key, (), evictions);
        (t >= start + learn).then(|| (vec![id.get()], t, context(ev)))
    }

    fn sequence(
        &mut self,
        i: usize,
        ev: &Event,
        t: u64,
        id: &EventId,
    ) -> Option<(Vec<Arc<str>>, u64, Event)> {
        let Kind::Sequence(seq) = &self.slots[i].rule.kind else {
            unreachable!()
        };
        // (step, key) for every step this event matches, under each of
        // its key alternatives; usize::MAX is `unless`.
        let mut hits: Vec<(usize, u64)> = Vec::new();
        for (s, step) in seq.steps.iter().enumerate() {
            if step.cond.matches(ev) {
                for k in &step.keys {
                    if let Some(key) = self.key(k, ev) {
                        hits.push((s, key));
                    }
                }
            }
        }
        if let Some(u) = &seq.unless {
            if u.cond.matches(ev) {
                for k in &u.keys {
                    if let Some(key) = self.key(k, ev) {
                        hits.push((usize::MAX, key));
                    }
                }
            }
        }
        if hits.is_empty() {
            return None;
        }
        let evictions = &self.counters.state_evictions;
        let slot = &mut self.slots[i];
        let Kind::Sequence(seq) = &slot.rule.kind else {
            unreachable!()
        };
        let State::Seq { main, early } = &mut slot.state else {
            unreachable!()
        };
        let n = seq.steps.len();
        let horizon = t.saturating_sub(seq.within + REORDER_MS);
        let mut fired = None;
        let mut touched: Vec<u64> = Vec::new();
        for &(s, key) in &hits {
            let starts = s == 0;
            if !main.contains(&key) {
                if starts {
                    let mut st = SeqState::new(n);
                    if let Some(e) = early.pop(&key) {
                        st.merge(e, seq);
                    }
                    put(main, key, st, evictions);
                } else {
                    // A later step before its first: kept a short while
                    // in case the first arrives late.
                    if early.get(&key).is_none() {
                        put(early, key, SeqState::new(n), evictions);
                    }
                    let st = early.get_mut(&key).expect("just put");
                    record(st, seq, s, t, id, ev);
                    for h in &mut st.steps {
                        h.expire(t.saturating_sub(REORDER_MS));
                    }
                    continue;
                }
            }
            let st = main.get_mut(&key).expect("present");
            record(st, seq, s, t, id, ev);
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        for key in touched {
            let st = main.get_mut(&key).expect("present");
            for h in &mut st.steps {
                h.expire(horizon);
            }
            st.unless.retain(|u| *u >= horizon);
            if let Some((ids, last_t)) = complete(seq, st) {
                let ctx = match &st.last {
                    Some((lt, e)) if *lt == last_t => (**e).clone(),
                    _ => context(ev),
                };
                main.pop(&key);
                fired = Some((ids, last_t, ctx));
                break;
            }
            if st.is_empty() {
                main.pop(&key);
            }
        }
        fired
    }

    /// The suppression key of an alert: its rule's `key` fields read off
    /// the event that made it (not the alert's context, which carries only
    /// the process, user, host and container fields), a missing or empty
    /// value being a value of its own, so that two findings of another
    /// module, or two processes without a known exe, never share a key.
    fn suppress_key(&self, fields: &[String], ev: &Event) -> u64 {
        let mut h = self.hasher.build_hasher();
        for f in fields {
            ev.get(f).unwrap_or("").hash(&mut h);
        }
        h.finish()
    }

    fn alert(
        &mut self,
        i: usize,
        key: u64,
        ids: Vec<Arc<str>>,
        t: u64,
        ctx: Event,
        out: &mut Vec<Event>,
    ) {
        let window = self.cfg.suppress_ms;
        let slot = &mut self.slots[i];
        let mut carried = 0;
        if window > 0 {
            match slot.suppress.get_mut(&key) {
                Some(s) if t < s.last + window && t >= s.last => {
                    s.suppressed += 1;
                    self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(s) => {
                    carried = s.suppressed;
                    *s = Supp {
                        last: t,
                        suppressed: 0,
                    };
                }
                None => {
                    // Forgetting a key only lets one more alert through.
                    slot.suppress.put(
                        key,
                        Supp {
                            last: t,
                            suppressed: 0,
                        },
                    );
                }
            }
        }
        let r = &slot.rule;
        let start = ids.len().saturating_sub(MAX_TRIGGER_IDS);
        let mut a = Event::with_capacity(12 + ctx.fields().count());
        a.push("data_type", DATA_TYPE_ALERT);
        a.push(
            "alert_id",
            format!("{}-alert-{}", self.cfg.alert_prefix, self.next_alert),
        );
        self.next_alert += 1;
        a.push("rule_id", r.id.as_str());
        a.push("rule_name", r.name.as_str());
        a.push("severity", r.severity.as_str());
        a.push("mitre_technique", r.mitre.join(","));
        a.push("source", r.source.as_str());
        a.push("description", r.description.as_str());
        a.push(
            "trigger_event_ids",
            ids[start..]
                .iter()
                .map(|s| &**s)
                .collect::<Vec<_>>()
                .join(","),
        );
        a.push("suppressed", carried.to_string());
        a.push("time", t.to_string());
        for (k, v) in ctx.fields() {
            a.push(k, v);
        }
        self.counters.alerts.fetch_add(1, Ordering::Relaxed);
        out.push(a);
    }
}

/// The fields of `ev` an alert carries.
pub fn context(ev: &Event) -> Event {
    let mut c = Event::with_capacity(ALERT_CONTEXT_FIELDS.len());
    for name in ALERT_CONTEXT_FIELDS {
        if let Some(v) = ev.get(name) {
            c.push(name, v);
        }
    }
    c
}

fn record(st: &mut SeqState, seq: &Sequence, s: usize, t: u64, id: &EventId, ev: &Event) {
    if s == usize::MAX {
        st.unless.push(t);
        if st.unless.len() > 64 {
            st.unless.remove(0);
        }
        return;
    }
    st.steps[s].add(t, id.get(), cap(seq, s));
    if s + 1 == seq.steps.len() && st.last.as_ref().is_none_or(|(lt, _)| *lt <= t) {
        st.last = Some((t, Box::new(context(ev))));
    }
}

/// Whether the hits make the sequence: from the last step backwards, the
/// newest events in time order, each step after the one before, the
/// last within the window of the first, no `unless` in between. Returns
/// the trigger ids in step order and the last one's time.
fn complete(seq: &Sequence, st: &SeqState) -> Option<(Vec<Arc<str>>, u64)> {
    let mut bound = u64::MAX;
    // One event may match several steps; it counts for one. Events are
    // told apart by their hit (one allocation each), not their id, which
    // an offline file may lack.
    let mut used: Vec<Arc<str>> = Vec::new();
    let mut chain: Vec<Vec<Arc<str>>> = Vec::new();
    let mut last_t = None;
    let mut first_done = 0;
    for (s, step) in seq.steps.iter().enumerate().rev() {
        let hits: Vec<&(u64, Arc<str>)> = st.steps[s]
            .0
            .iter()
            .filter(|(t, id)| *t <= bound && !used.iter().any(|u| Arc::ptr_eq(u, id)))
            .collect();
        let need = step.count as usize;
        if hits.len() < need {
            return None;
        }
        // The newest run of `need` hits that fits the step's window.
        let mut found = None;
        for j in (need - 1..hits.len()).rev() {
            if hits[j].0 - hits[j + 1 - need].0 <= step.within {
                found = Some(j);
                break;
            }
        }
        let j = found?;
        let run = &hits[j + 1 - need..=j];
        if s + 1 == seq.steps.len() {
            last_t = Some(run[need - 1].0);
        }
        first_done = run[need - 1].0;
        bound = run[0].0;
        used.extend(run.iter().map(|(_, id)| id.clone()));
        chain.push(run.iter().map(|(_, id)| id.clone()).collect());
    }
    let last_t = last_t?;
    if last_t - first_done > seq.within {
        return None;
    }
    if st.unless.iter().any(|u| *u > first_done && *u < last_t) {
        return None;
    }
    chain.reverse();
    Some((chain.into_iter().flatten().collect(), last_t))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
