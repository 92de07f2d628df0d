//! Kestrel's detection engine.
//!
//! Rules are YAML files ([`model`]): single-event conditions over any
//! event field, sequences ("A then B within T, keyed by a field, unless C
//! in between"), thresholds (count or distinct count within T, grouped by
//! fields) and first-seen values. [`load`] parses and compiles them (an
//! error names file and line), [`Engine`] runs finished events through
//! them, indexed by `data_type`, keeping bounded state, and raises alerts:
//! events of `data_type` 9000 on the same stream (docs/events.md,
//! docs/detections.md). [`sigma`] translates Sigma rules into the same
//! model, so both share matching, state and alerts.

pub mod cond;
pub mod engine;
pub mod load;
pub mod model;
pub mod sigma;

pub use engine::{
    context, Engine, EngineConfig, EngineCounters, ALERT_CONTEXT_FIELDS, DATA_TYPE_ALERT,
    MAX_TRIGGER_IDS, REORDER_MS,
};
pub use load::{
    builtin_sources, compile, parse, read_dir, LoadError, Origin, Rule, RuleSet, RuleSource,
    RuleStatus,
};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

#[cfg(test)]
mod sigma_tests;
#[cfg(test)]
mod tests;
