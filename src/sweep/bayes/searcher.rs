//! A bayes sweep as the orchestrator runs it: the searcher of one sweep file (its space, seed,
//! metric and run cap) and the conversion of a proposed point into a run's configuration.
//!
//! Built once from the sweep file when it is planned (which checks that every parameter can be
//! modelled) and again from the stored sweep whenever `dbsweep run` or `resume` dispatches it,
//! so both see the same space: listed values are normalised by the configuration schema and
//! listed paths made absolute against the sweep file, exactly as grid and random search do, so
//! the points read back from runs' configurations are points of the space.

use serde_json::Value;

use super::space::{Point, Space, SpaceError};
use super::{Observation, Proposal, Tpe};
use crate::config::{
    ConfigError, ExperimentConfig, Origin, PATH_KEYS, ProbeError, Problem, ProblemKind, Resolved, absolute_path,
    leaf_mut,
};
use crate::sweep::spec::{Domain, Method, Metric, Parameter, SweepSpec};

/// What a proposal sees of the sweep's runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct History<'a> {
    /// Runs with a value of the metric, in the sweep's order.
    pub observations: &'a [Observation],
    /// Runs that have no value yet but will (pending, running, interrupted, or failed with
    /// retries left): the constant liar counts them as the worst.
    pub pending: &'a [Point],
    /// Runs that will never have a value (failed for good, or ended without reporting the
    /// metric): never proposed again, and not used otherwise.
    pub excluded: &'a [Point],
}

/// The searcher of one bayes sweep.
#[derive(Clone, Debug)]
pub struct Searcher {
    keys: Vec<String>,
    space: Space,
    tpe: Tpe,
    metric: Metric,
    run_cap: u64,
    base: Resolved,
}

impl Searcher {
    /// The searcher of `spec` (a `method: bayes` sweep file) over the resolved base
    /// configuration `base`. A parameter bayes search cannot model, or a listed value the
    /// configuration refuses, is a problem at the parameter, naming its key.
    pub fn new(spec: &SweepSpec, base: Resolved) -> Result<Searcher, ConfigError> {
        let at = |p: &Parameter| Origin::File(p.at.clone());
        let (Method::Bayes, Some(metric), Some(run_cap)) = (spec.method, &spec.metric, spec.run_cap) else {
            let kind = ProblemKind::Missing { expected: "`method: bayes` with `metric:` and `run_cap:`".into() };
            let origin = spec.parameters.first().map_or(Origin::Default, at);
            return Err(Problem::new(origin, None, kind).into());
        };
        let mut problems = Vec::new();
        let mut parameters = Vec::with_capacity(spec.parameters.len());
        for p in &spec.parameters {
            match normalised(p, &base) {
                Ok(p) => parameters.push(p),
                Err(e) => {
                    let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
                    problems.push(Problem::new(at(p), Some(e.key), kind));
                }
            }
        }
        let space = match Space::new(&parameters) {
            Ok(space) => Some(space),
            Err(SpaceError::NoParameters) => {
                let kind = ProblemKind::Missing { expected: "a swept parameter".into() };
                problems.push(Problem::new(Origin::Default, None, kind));
                None
            }
            Err(SpaceError::Unsupported { key, problem }) => {
                let origin = spec.parameters.iter().find(|p| p.key == key).map_or(Origin::Default, at);
                let kind = ProblemKind::Conflict(format!("bayes search cannot model this parameter: {problem}"));
                problems.push(Problem::new(origin, Some(key), kind));
                None
            }
        };
        let (true, Some(space)) = (problems.is_empty(), space) else {
            return Err(ConfigError::new(problems));
        };
        let keys = spec.parameters.iter().map(|p| p.key.clone()).collect();
        Ok(Searcher { keys, space, tpe: Tpe::new(spec.seed), metric: metric.clone(), run_cap, base })
    }

    /// The searcher of a registered sweep: its file as parsed (`spec`) and its stored base
    /// configuration (canonical JSON).
    pub fn from_stored(spec: &SweepSpec, base: Value) -> Result<Searcher, ConfigError> {
        let config: ExperimentConfig = serde_json::from_value(base.clone()).map_err(|e| {
            let kind =
                ProblemKind::Invalid { expected: "a configuration this dbsweep reads".into(), found: e.to_string() };
            ConfigError::from(Problem::new(Origin::Default, None, kind))
        })?;
        Searcher::new(spec, Resolved { config, json: base, provenance: Default::default() })
    }

    /// The swept keys, in file order: a point's values are in this order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The sweep metric, with its goal, `use` and `target`.
    pub fn metric(&self) -> &Metric {
        &self.metric
    }

    /// Most runs the sweep has.
    pub fn run_cap(&self) -> u64 {
        self.run_cap
    }

    /// Proposals made by random draws before TPE takes over (see [`super::N_STARTUP`]).
    pub fn random_phase(&self) -> u64 {
        self.tpe.settings.n_startup as u64
    }

    /// The point for the sweep's run at `position` (0-based) given `history`; `None` when a
    /// finite space has no point left. A pure function of the sweep's seed, `position` and
    /// `history`.
    pub fn propose(&self, position: u64, history: &History) -> Option<Proposal> {
        self.tpe.propose(&self.space, position, history, self.metric.goal)
    }

    /// The point of a run whose configuration is `config` (values at the swept keys); points
    /// outside the space are ignored by [`Searcher::propose`].
    pub fn point_of(&self, config: &Value) -> Point {
        Point(
            self.keys
                .iter()
                .map(|k| k.split('.').try_fold(config, |v, part| v.get(part)).cloned().unwrap_or_default())
                .collect(),
        )
    }

    /// The value standing for a run whose metric reports are `series`, by `metric.use`.
    pub fn value(&self, series: &[f64]) -> Option<f64> {
        self.metric.use_.value(series, self.metric.goal)
    }

    /// Whether `value` reaches `metric.target`.
    pub fn reaches_target(&self, value: f64) -> bool {
        self.metric.target.is_some_and(|t| value == t || self.metric.goal.better(value, t))
    }

    /// The values of `point`, normalised by the configuration schema, in key order.
    pub fn values(&self, point: &Point) -> Result<Vec<Value>, ProbeError> {
        self.keys.iter().zip(&point.0).map(|(k, v)| self.base.probe(k, v)).collect()
    }

    /// The fully resolved configuration (canonical JSON) of the run at `point`.
    pub fn config(&self, point: &Point) -> Result<Value, ProbeError> {
        let mut json = self.base.json.clone();
        for (key, value) in self.keys.iter().zip(self.values(point)?) {
            let path: Vec<&str> = key.split('.').collect();
            *leaf_mut(&mut json, &path).expect("swept keys are known leaves") = value;
        }
        Ok(json)
    }
}

/// `p` with its listed values as the configuration normalises them (paths absolute against
/// the file that lists them), so that they compare equal to the values runs record.
fn normalised(p: &Parameter, base: &Resolved) -> Result<Parameter, ProbeError> {
    let Domain::Values { values, probabilities } = &p.domain else { return Ok(p.clone()) };
    let mut out = values.clone();
    for v in &mut out {
        v.value = match base.probe(&p.key, &v.value)? {
            Value::String(path) if PATH_KEYS.contains(&p.key.as_str()) => {
                Value::String(absolute_path(&path, v.at.file.parent()))
            }
            other => other,
        };
    }
    Ok(Parameter { domain: Domain::Values { values: out, probabilities: probabilities.clone() }, ..p.clone() })
}
