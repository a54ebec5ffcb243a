//! Sweeps: the sweep-file syntax, grid and random expansion, bayes search, run ids and config
//! hashes.
//!
//! Invariants: a [`Plan`]'s runs have distinct configuration hashes and distinct ids; every
//! swept value has been checked against the configuration schema; the same spec, settings
//! and seed always expand to the same runs in the same order.

pub mod bayes;
mod canonical;
mod draw;
mod early;
mod goal;
mod identity;
mod parse;
mod plan;
mod run_id;
mod spec;

pub use early::Hyperband;
pub use goal::Goal;
pub use identity::{ADDED_LATER, DATA_KEYS, Fingerprints, strip_late_defaults};
pub use parse::{load, parse};
pub use plan::{MAX_POINTS, Plan, PlannedRun};
pub use run_id::{ConfigHash, MIN_HEX, looks_like_run_id, run_id};
pub use spec::{Domain, EarlyTerminate, Located, Method, Metric, MetricUse, Parameter, SweepSpec};

#[cfg(test)]
mod tests;
