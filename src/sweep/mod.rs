//! Sweeps: the sweep-file syntax, grid and random expansion, run ids and config hashes.
//!
//! Invariants: a [`Plan`]'s runs have distinct configuration hashes and distinct ids; every
//! swept value has been checked against the configuration schema; the same spec, settings
//! and seed always expand to the same runs in the same order.

mod canonical;
mod early;
mod plan;
mod run_id;
mod sample;
mod spec;

pub use early::Hyperband;
pub use plan::{MAX_POINTS, Plan, PlannedRun};
pub use run_id::{ConfigHash, MIN_HEX, looks_like_run_id, run_id};
pub use spec::{Domain, EarlyTerminate, Goal, Located, Method, Metric, Parameter, SweepSpec, load, parse};

#[cfg(test)]
mod tests;
