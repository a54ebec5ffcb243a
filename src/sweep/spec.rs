//! Sweep files: the experiment's fixed settings plus the swept parameters, in the syntax of
//! W&B Sweeps (`method`, `parameters` with `value` / `values` / `distribution` + `min`/`max`/`q`,
//! `metric`, `run_cap`), so W&B users already know it.
//!
//! ```yaml
//! name: lr_grid
//! extends: ../experiments/tiny.yaml   # optional experiment file, relative to this file
//! base: { train: { epochs: 2 } }        # fixed settings, override `extends`
//! method: grid                          # grid | random | bayes
//! metric: { name: val/loss, goal: minimize }
//! parameters:
//!   train.learning_rate: { values: [1.0e-4, 5.0e-4] }
//!   train.prior_loss_weight: { distribution: uniform, min: 0.5, max: 1.0 }   # random only
//! ```

use std::path::PathBuf;

use serde_json::Value;

use super::goal::Goal;
use crate::config::{Location, yaml};

/// How points are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every combination (cartesian product) of the parameters' values.
    Grid,
    /// Seeded random samples, up to `run_cap`.
    Random,
    /// Each point proposed from the results so far (see [`super::bayes`]), up to `run_cap`.
    Bayes,
}

impl Method {
    /// The name used in sweep files.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
            Method::Bayes => "bayes",
        }
    }
}

/// The metric that ranks runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Metric key as the trainer logs it.
    pub name: String,
    /// Direction.
    pub goal: Goal,
    /// Which of a run's values `method: bayes` learns from (`metric.use`; bayes only).
    pub use_: MetricUse,
    /// Stop proposing runs once a run reaches this value (`metric.target`; bayes only).
    pub target: Option<f64>,
}

/// Which value of a run's metric series stands for the run (`metric.use`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricUse {
    /// The best value over the run, by the goal (W&B's bayes search does the same).
    #[default]
    Best,
    /// The value at the run's last report.
    Last,
}

impl MetricUse {
    /// The name used in sweep files.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricUse::Best => "best",
            MetricUse::Last => "last",
        }
    }

    /// The value standing for a run whose metric reports are `series` (in step order), or
    /// `None` when it reported none.
    pub fn value(self, series: &[f64], goal: Goal) -> Option<f64> {
        match self {
            MetricUse::Best => goal.best(series.iter().copied(), |v| v),
            MetricUse::Last => series.last().copied(),
        }
    }
}

/// A value written in the sweep file, with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it is written.
    pub at: Location,
}

/// What values a parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// A finite list (`value`, `values`, or `distribution: categorical`), with optional
    /// sampling probabilities for random search.
    Values {
        /// The values.
        values: Vec<Located<Value>>,
        /// Probabilities of each value in random search (uniform when absent).
        probabilities: Option<Vec<f64>>,
    },
    /// Uniform on [min, max].
    Uniform {
        /// Lower bound.
        min: Located<f64>,
        /// Upper bound.
        max: Located<f64>,
    },
    /// Log-uniform on [min, max] (bounds are values, not exponents).
    LogUniformValues {
        /// Lower bound, > 0.
        min: Located<f64>,
        /// Upper bound.
        max: Located<f64>,
    },
    /// Uniform integers in [min, max].
    IntUniform {
        /// Lower bound.
        min: Located<i64>,
        /// Upper bound.
        max: Located<i64>,
    },
    /// `round(uniform(min, max) / q) * q`.
    QUniform {
        /// Lower bound.
        min: Located<f64>,
        /// Upper bound.
        max: Located<f64>,
        /// Quantum, > 0.
        q: Located<f64>,
    },
}

/// One swept parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// The dotted configuration key it sets.
    pub key: String,
    /// Where the parameter is declared.
    pub at: Location,
    /// Its values.
    pub domain: Domain,
}

/// Early termination with W&B's hyperband form: rungs at `min_iter * eta^k` reports of the
/// sweep metric; at each rung a run outside the best `1/eta` of the runs that reached it stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyTerminate {
    /// Metric reports before the first rung.
    pub min_iter: u64,
    /// Keep the best 1/eta at each rung.
    pub eta: u64,
}

/// A parsed sweep file, before its settings are resolved against the config schema.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    /// The sweep file.
    pub file: PathBuf,
    /// Sweep name (`name:`, or the file stem).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The experiment file named by `extends:`, resolved against the sweep file's folder.
    pub extends: Option<Located<PathBuf>>,
    /// Grid, random or bayes.
    pub method: Method,
    /// The metric that ranks runs.
    pub metric: Option<Metric>,
    /// Most runs to plan.
    pub run_cap: Option<u64>,
    /// Seed of random and bayes search.
    pub seed: u64,
    /// Early termination, if declared.
    pub early_terminate: Option<EarlyTerminate>,
    /// Swept parameters, in file order.
    pub parameters: Vec<Parameter>,
    /// The whole parsed file (its `base:` mapping is a config layer).
    pub doc: yaml::YamlDoc,
}
