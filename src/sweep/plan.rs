//! Expansion: a sweep spec resolved against the configuration layers into planned runs.
//!
//! Grid order is the cartesian product with parameters in file order and the last parameter
//! varying fastest (nested loops, as `itertools::iproduct!` or `sklearn`'s `ParameterGrid`
//! with insertion order). Random search draws every parameter of a point in file order from
//! one generator seeded with the sweep's `seed`, skipping points already drawn. `run_cap`
//! keeps the first points of either.

use std::collections::HashSet;

use serde_json::Value;

use super::canonical::Template;
use super::run_id::{ConfigHash, MIN_HEX, run_id};
use super::sample::{draw, grid_values};
use super::spec::{Domain, Method, Parameter, SweepSpec};
use crate::config::{ConfigError, Layers, Location, Origin, Problem, ProblemKind, Resolved, leaf_keys, suggest, yaml};
use crate::rng::Rng;

/// Largest grid dbsweep expands without a `run_cap`.
pub const MAX_POINTS: u64 = 10_000_000;

/// A sweep resolved into runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sweep file as parsed.
    pub spec: SweepSpec,
    /// `name-hash`: the same file with the same settings is the same sweep.
    pub sweep_id: String,
    /// The resolved configuration shared by every run (swept keys at their base values).
    pub base: Resolved,
    /// Swept keys, in file order.
    pub keys: Vec<String>,
    /// The runs, in expansion order.
    pub runs: Vec<PlannedRun>,
    candidates: Vec<Vec<(Value, String)>>,
    template: Template,
}

/// One point of the sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRun {
    /// 0-based position in expansion order.
    pub position: usize,
    /// Hash of the fully resolved configuration.
    pub config_hash: ConfigHash,
    /// Readable id derived from the hash.
    pub run_id: String,
    choices: Box<[u32]>,
}

impl Plan {
    /// Resolves `spec` with the environment `env` (pass `std::env::vars()`) and `--set`
    /// `flags`, validates every swept value, and expands the runs.
    pub fn build(
        spec: SweepSpec,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> Result<Plan, ConfigError> {
        let mut layers = Layers::new();
        if let Some(extends) = &spec.extends {
            let doc = yaml::load_file(&extends.value).map_err(|e| extends_error(e, &extends.at, &extends.value))?;
            layers = layers.file(&doc, &[]);
        }
        let base = layers.file(&spec.doc, &["base"]).env(env).flags(flags).resolve()?;
        let mut problems = Vec::new();
        let known = leaf_keys();
        let mut keys: Vec<String> = Vec::new();
        let mut candidates = Vec::new();
        for p in &spec.parameters {
            let origin = Origin::File(p.at.clone());
            let problem = |kind| Problem::new(origin.clone(), Some(p.key.clone()), kind);
            if !known.contains(&p.key) {
                let suggestion = suggest(&p.key, known.iter().map(String::as_str));
                problems.push(problem(ProblemKind::UnknownKey { suggestion }));
                continue;
            }
            if keys.contains(&p.key) {
                problems.push(problem(ProblemKind::Conflict("swept twice; keep one declaration".into())));
                continue;
            }
            if let Some(o @ (Origin::Env(_) | Origin::Flag(_))) = base.provenance.get(&p.key) {
                let msg = format!("swept here but also set by {o}; remove one of them");
                problems.push(problem(ProblemKind::Conflict(msg)));
                continue;
            }
            keys.push(p.key.clone());
            candidates.push(candidate_values(&base, p, spec.method, &mut problems));
        }
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        let template = Template::new(&base.json, &keys);
        let sweep_id = sweep_id(&spec, &base);
        let mut plan = Plan { spec, sweep_id, base, keys, runs: Vec::new(), candidates, template };
        match plan.spec.method {
            Method::Grid => plan.expand_grid()?,
            Method::Random => plan.expand_random()?,
        }
        Ok(plan)
    }

    /// The values of `run`'s swept keys, in the order of [`Plan::keys`].
    pub fn values<'a>(&'a self, run: &'a PlannedRun) -> impl Iterator<Item = &'a Value> + 'a {
        run.choices.iter().zip(&self.candidates).map(|(&c, cands)| &cands[c as usize].0)
    }

    /// The canonical JSON text of `run`'s fully resolved configuration.
    pub fn config_text(&self, run: &PlannedRun) -> String {
        let mut out = String::new();
        self.template.fill(&mut out, |i| self.candidates[i][run.choices[i] as usize].1.as_str());
        out
    }

    /// The swept parameters, in the order of [`Plan::keys`] (a built plan has no invalid ones).
    pub fn parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.spec.parameters.iter()
    }

    fn expand_grid(&mut self) -> Result<(), ConfigError> {
        let sizes: Vec<u64> = self.candidates.iter().map(|c| c.len() as u64).collect();
        let total = sizes.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n)).unwrap_or(u64::MAX);
        let count = self.spec.run_cap.map_or(total, |cap| cap.min(total));
        if count > MAX_POINTS {
            let at = self.spec.parameters.first().map(|p| p.at.clone()).expect("parameters");
            let msg =
                format!("the grid has {total} points, more than {MAX_POINTS}; set `run_cap:` or use fewer values");
            return Err(Problem::new(Origin::File(at), None, ProblemKind::Conflict(msg)).into());
        }
        let mut runs = Vec::with_capacity(count as usize);
        let mut ids = HashSet::with_capacity(count as usize);
        let mut text = String::new();
        let mut choices = vec![0u32; sizes.len()];
        for position in 0..count as usize {
            let mut rest = position as u64;
            for (slot, &n) in choices.iter_mut().zip(&sizes).rev() {
                *slot = (rest % n) as u32;
                rest /= n;
            }
            runs.push(self.point(position, &choices, &mut text, &mut ids));
        }
        self.runs = runs;
        Ok(())
    }

    fn expand_random(&mut self) -> Result<(), ConfigError> {
        let cap = self.spec.run_cap.expect("random search has a run_cap") as usize;
        let mut rng = Rng::new(self.spec.seed);
        let mut hashes = HashSet::new();
        let mut ids = HashSet::new();
        let mut text = String::new();
        let params: Vec<Parameter> = self.parameters().cloned().collect();
        let mut attempts = 0;
        while self.runs.len() < cap && attempts < cap.saturating_mul(100).max(1000) {
            attempts += 1;
            let mut choices = Vec::with_capacity(params.len());
            for (i, p) in params.iter().enumerate() {
                let raw = draw(&p.domain, &mut rng);
                let value = self.base.probe(&p.key, &raw).map_err(|e| {
                    let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
                    ConfigError::from(Problem::new(Origin::File(p.at.clone()), Some(e.key), kind))
                })?;
                let cands = &mut self.candidates[i];
                let index = cands.iter().position(|(v, _)| *v == value).unwrap_or_else(|| {
                    let text = value.to_string();
                    cands.push((value, text));
                    cands.len() - 1
                });
                choices.push(index as u32);
            }
            self.template.fill(&mut text, |i| self.candidates[i][choices[i] as usize].1.as_str());
            if hashes.insert(ConfigHash::of(&text)) {
                let run = self.point(self.runs.len(), &choices, &mut text, &mut ids);
                self.runs.push(run);
            }
        }
        Ok(())
    }

    fn point(&self, position: usize, choices: &[u32], text: &mut String, ids: &mut HashSet<String>) -> PlannedRun {
        self.template.fill(text, |i| self.candidates[i][choices[i] as usize].1.as_str());
        let config_hash = ConfigHash::of(text);
        let mut hex = MIN_HEX;
        let run_id = loop {
            let id = run_id(config_hash, hex);
            if ids.insert(id.clone()) {
                break id;
            }
            hex += 2;
        };
        PlannedRun { position, config_hash, run_id, choices: choices.into() }
    }
}

/// Normalised values a grid point may take (random search adds its draws later), each
/// validated against the configuration; problems point at the value in the sweep file.
fn candidate_values(
    base: &Resolved,
    p: &Parameter,
    method: Method,
    problems: &mut Vec<Problem>,
) -> Vec<(Value, String)> {
    let mut check = |raw: &Value, at: &Location| -> Option<Value> {
        base.probe(&p.key, raw)
            .map_err(|e| {
                let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
                problems.push(Problem::new(Origin::File(at.clone()), Some(e.key), kind));
            })
            .ok()
    };
    let bounds: Vec<(Value, &Location)> = match &p.domain {
        Domain::Values { values, .. } => values.iter().map(|v| (v.value.clone(), &v.at)).collect(),
        Domain::IntUniform { min, max } => vec![(Value::from(min.value), &min.at), (Value::from(max.value), &max.at)],
        Domain::Uniform { min, max } | Domain::LogUniformValues { min, max } | Domain::QUniform { min, max, .. } => {
            vec![(float(min.value), &min.at), (float(max.value), &max.at)]
        }
    };
    let mut normalised = Vec::new();
    for (raw, at) in &bounds {
        if let Some(v) = check(raw, at) {
            normalised.push((v, *at));
        }
    }
    let Domain::Values { .. } = p.domain else {
        if method == Method::Grid {
            return match grid_values(&p.domain) {
                Some(values) => values.into_iter().map(|v| (v.clone(), v.to_string())).collect(),
                None => {
                    let msg = "a grid needs a finite set of values: use `values:`, int_uniform or q_uniform, or `method: random`";
                    problems.push(Problem::new(
                        Origin::File(p.at.clone()),
                        Some(p.key.clone()),
                        ProblemKind::Conflict(msg.into()),
                    ));
                    Vec::new()
                }
            };
        }
        return Vec::new();
    };
    let mut out: Vec<(Value, String)> = Vec::new();
    for (v, at) in normalised {
        if out.iter().any(|(seen, _)| *seen == v) {
            let kind = ProblemKind::Invalid { expected: "each value once".into(), found: format!("{v} again") };
            problems.push(Problem::new(Origin::File(at.clone()), Some(p.key.clone()), kind));
            continue;
        }
        let text = v.to_string();
        out.push((v, text));
    }
    out
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn extends_error(err: ConfigError, at: &Location, file: &std::path::Path) -> ConfigError {
    let unreadable = err.problems().iter().any(|p| matches!(p.kind, ProblemKind::Read(_)));
    if !unreadable {
        return err;
    }
    let reason = err.problems().iter().map(|p| match &p.kind {
        ProblemKind::Read(msg) => msg.clone(),
        _ => String::new(),
    });
    let kind = ProblemKind::Invalid {
        expected: "a readable experiment file (relative to the sweep file)".into(),
        found: format!("{} ({})", file.display(), reason.collect::<Vec<_>>().join("")),
    };
    Problem::new(Origin::File(at.clone()), Some("extends".into()), kind).into()
}

fn sweep_id(spec: &SweepSpec, base: &Resolved) -> String {
    let identity = serde_json::json!({
        "base": base.json,
        "parameters": spec.doc.value.get("parameters"),
        "method": spec.method.as_str(),
        "run_cap": spec.run_cap,
        "seed": spec.seed,
        "metric": spec.metric.as_ref().map(|m| (m.name.as_str(), m.goal.as_str())),
    });
    let hash = xxhash_rust::xxh3::xxh3_64(identity.to_string().as_bytes());
    format!("{}-{:08x}", spec.name, hash as u32)
}
