//! Expansion: a sweep spec resolved against the configuration layers into planned runs.
//!
//! Grid order is the cartesian product with parameters in file order and the last parameter
//! varying fastest (nested loops, as `itertools::iproduct!` or `sklearn`'s `ParameterGrid`
//! with insertion order). Random search draws every parameter of a point in file order from
//! one generator seeded with the sweep's `seed`, skipping points already drawn. `run_cap`
//! keeps the first points of either. A bayes sweep's runs are proposed while it runs, from the
//! results of earlier ones; its plan holds only the runs of the random phase, which depend on
//! no result (the same runs the sweep will have at those positions).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::bayes::{History, Point, Searcher};
use super::canonical::Template;
use super::draw::{draw, grid_size, grid_values};
use super::identity::{Fingerprints, added_later, strip_late_defaults};
use super::run_id::{ConfigHash, MIN_HEX, run_id};
use super::spec::{Domain, Method, Parameter, SweepSpec};
use crate::config::{
    ConfigError, Layers, Location, Origin, PATH_KEYS, Problem, ProblemKind, Resolved, absolute_path, leaf_keys,
    suggest, yaml,
};
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
    /// The runs, in expansion order (for `method: bayes`, the runs of the random phase, the
    /// only ones known before results exist; the store gets them when they are proposed).
    pub runs: Vec<PlannedRun>,
    candidates: Vec<Vec<Candidate>>,
    /// The configuration's canonical text, with holes for the swept values.
    template: Template,
    /// The run identity's canonical text (image folders as fingerprints), with the same holes.
    identity: Template,
    /// Whether a swept key is a setting added later: then a run's identity text is reduced to
    /// what differs from those settings' defaults before it is hashed (see
    /// [`super::identity`]).
    late_swept: bool,
}

/// One value a swept parameter may take.
#[derive(Clone, Debug)]
struct Candidate {
    /// The value, normalised by the configuration schema.
    value: Value,
    /// Its canonical JSON text.
    text: String,
    /// What stands for it in a run's identity: its text, or for an image folder the text of
    /// its images' fingerprint.
    identity: String,
    /// Where the sweep file declares it (the parameter, for values a distribution makes).
    at: Location,
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
        }
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        // A grid's size is known before any value is listed: too large is refused at once, and
        // a capped grid lists only the values its first points use.
        let limits = match spec.method {
            Method::Grid => grid_limits(&spec)?,
            Method::Random | Method::Bayes => vec![u64::MAX; spec.parameters.len()],
        };
        let mut fingerprints = Fingerprints::default();
        for (p, limit) in spec.parameters.iter().zip(limits) {
            candidates.push(candidate_values(&base, p, spec.method, limit, &mut fingerprints, &mut problems));
        }
        // The identity of the fixed part: its image folders must exist and hold images now,
        // before anything is registered.
        let identity = match fingerprints.identity(&base.json, &keys) {
            Ok(identity) => Some(identity),
            Err((key, e)) => {
                let origin = base.provenance.get(key).cloned().unwrap_or(Origin::Default);
                let kind = ProblemKind::Invalid { expected: "a folder of images".into(), found: e.to_string() };
                problems.push(Problem::new(origin, Some(key.to_string()), kind));
                None
            }
        };
        let (false, Some(identity)) = (!problems.is_empty(), identity) else {
            return Err(ConfigError::new(problems));
        };
        let template = Template::new(&base.json, &keys);
        let identity = Template::new(&identity, &keys);
        let sweep_id = sweep_id(&spec, &base);
        let late_swept = keys.iter().any(|k| added_later(k));
        let mut plan =
            Plan { spec, sweep_id, base, keys, runs: Vec::new(), candidates, template, identity, late_swept };
        match plan.spec.method {
            Method::Grid => plan.expand_grid()?,
            Method::Random => plan.expand_random()?,
            Method::Bayes => plan.expand_random_phase()?,
        }
        Ok(plan)
    }

    /// The values of `run`'s swept keys, in the order of [`Plan::keys`].
    pub fn values<'a>(&'a self, run: &'a PlannedRun) -> impl Iterator<Item = &'a Value> + 'a {
        run.choices.iter().zip(&self.candidates).map(|(&c, cands)| &cands[c as usize].value)
    }

    /// The canonical JSON text of `run`'s fully resolved configuration.
    pub fn config_text(&self, run: &PlannedRun) -> String {
        let mut out = String::new();
        self.template.fill(&mut out, |i| self.candidates[i][run.choices[i] as usize].text.as_str());
        out
    }

    /// The values setting `key` takes in this plan's runs, each with where it was written: the
    /// swept values, or the one fixed value.
    pub fn settings_of(&self, key: &str) -> Vec<(Value, Origin)> {
        match self.keys.iter().position(|k| k == key) {
            Some(i) => self.candidates[i].iter().map(|c| (c.value.clone(), Origin::File(c.at.clone()))).collect(),
            None => {
                let path: Vec<&str> = key.split('.').collect();
                let value = path.iter().try_fold(&self.base.json, |v, k| v.get(*k)).cloned().unwrap_or(Value::Null);
                vec![(value, self.base.provenance.get(key).cloned().unwrap_or(Origin::Default))]
            }
        }
    }

    /// The swept parameters, in the order of [`Plan::keys`] (a built plan has no invalid ones).
    pub fn parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.spec.parameters.iter()
    }

    fn expand_grid(&mut self) -> Result<(), ConfigError> {
        // Positions are mixed-radix numbers over the full sizes; a capped grid's candidates are
        // a prefix of each parameter's values that its first `count` positions never pass.
        let sizes: Vec<u64> = self.spec.parameters.iter().map(|p| grid_size(&p.domain).unwrap_or(0)).collect();
        let total = sizes.iter().fold(1u64, |acc, &n| acc.saturating_mul(n));
        let count = self.spec.run_cap.map_or(total, |cap| cap.min(total));
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
        let mut index = self.candidate_index();
        let mut attempts = 0;
        while self.runs.len() < cap && attempts < cap.saturating_mul(100).max(1000) {
            attempts += 1;
            let mut choices = Vec::with_capacity(params.len());
            for (i, p) in params.iter().enumerate() {
                let raw = draw(&p.domain, &mut rng);
                let value = self.base.probe(&p.key, &raw).map_err(|e| probe_error(p, e))?;
                choices.push(self.choice(&mut index, i, value, p));
            }
            self.identity.fill(&mut text, |i| self.candidates[i][choices[i] as usize].identity.as_str());
            if hashes.insert(self.hash(&text)) {
                let run = self.point(self.runs.len(), &choices, &mut text, &mut ids);
                self.runs.push(run);
            }
        }
        Ok(())
    }

    /// The identity hash of a run whose identity text is `text`.
    fn hash(&self, text: &str) -> ConfigHash {
        if !self.late_swept {
            return ConfigHash::of(text);
        }
        let mut json: Value = serde_json::from_str(text).expect("identity text is JSON");
        strip_late_defaults(&mut json, &[]);
        ConfigHash::of(&json.to_string())
    }

    /// The runs a bayes sweep has at its first positions whatever the results: those of its
    /// random phase (at most `run_cap`), each proposed with the earlier ones pending, as the
    /// orchestrator proposes them.
    fn expand_random_phase(&mut self) -> Result<(), ConfigError> {
        let searcher = Searcher::new(&self.spec, self.base.clone())?;
        let count = searcher.random_phase().min(searcher.run_cap());
        let params: Vec<Parameter> = self.parameters().cloned().collect();
        let mut index = self.candidate_index();
        let (mut ids, mut text, mut pending) = (HashSet::new(), String::new(), Vec::<Point>::new());
        for position in 0..count {
            let history = History { pending: &pending, ..History::default() };
            let Some(proposal) = searcher.propose(position, &history) else { break };
            let mut choices = Vec::with_capacity(params.len());
            for ((i, p), raw) in params.iter().enumerate().zip(&proposal.point.0) {
                let value = self.base.probe(&p.key, raw).map_err(|e| probe_error(p, e))?;
                choices.push(self.choice(&mut index, i, value, p));
            }
            let run = self.point(position as usize, &choices, &mut text, &mut ids);
            self.runs.push(run);
            pending.push(proposal.point);
        }
        Ok(())
    }

    /// Each parameter's candidates by canonical text: a value finds its index in O(1).
    fn candidate_index(&self) -> Vec<HashMap<String, u32>> {
        self.candidates
            .iter()
            .map(|c| c.iter().enumerate().map(|(i, c)| (c.text.clone(), i as u32)).collect())
            .collect()
    }

    /// The index of normalised `value` among parameter `i`'s candidates, added if new (drawn
    /// values are numbers; folders come from `values:` lists, listed already).
    fn choice(&mut self, index: &mut [HashMap<String, u32>], i: usize, value: Value, p: &Parameter) -> u32 {
        let cands = &mut self.candidates[i];
        let text = value.to_string();
        *index[i].entry(text.clone()).or_insert_with(|| {
            cands.push(Candidate { value, identity: text.clone(), text, at: p.at.clone() });
            (cands.len() - 1) as u32
        })
    }

    fn point(&self, position: usize, choices: &[u32], text: &mut String, ids: &mut HashSet<String>) -> PlannedRun {
        self.identity.fill(text, |i| self.candidates[i][choices[i] as usize].identity.as_str());
        let config_hash = self.hash(text);
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

/// How many values of each parameter a grid's points use: all of them, or with `run_cap`
/// only the first ones its first points reach. A grid over more than [`MAX_POINTS`] points
/// without a cap is refused here, before any value is listed.
fn grid_limits(spec: &SweepSpec) -> Result<Vec<u64>, ConfigError> {
    let sizes: Vec<u64> = spec.parameters.iter().map(|p| grid_size(&p.domain).unwrap_or(0)).collect();
    let total = sizes.iter().fold(1u64, |acc, &n| acc.saturating_mul(n));
    let count = spec.run_cap.map_or(total, |cap| cap.min(total));
    if count > MAX_POINTS {
        let at = spec.parameters.first().map(|p| p.at.clone()).expect("parameters");
        let total = if total == u64::MAX { "more than 2^64".to_string() } else { total.to_string() };
        let msg = format!("the grid has {total} points, more than {MAX_POINTS}; set `run_cap:` or use fewer values");
        return Err(Problem::new(Origin::File(at), None, ProblemKind::Conflict(msg)).into());
    }
    // Parameter i's value at position k is digit i of k in the mixed radix of the sizes (the
    // last varying fastest): positions below `count` use values below ceil(count / stride).
    let mut limits = vec![0; sizes.len()];
    let mut stride = 1u64;
    for i in (0..sizes.len()).rev() {
        limits[i] = sizes[i].min(count.div_ceil(stride.max(1)));
        stride = stride.saturating_mul(sizes[i]);
    }
    Ok(limits)
}

/// Normalised values a grid point may take (at most `limit` of them; random search adds its
/// draws later), each validated against the configuration; problems point at the value in the
/// sweep file.
fn candidate_values(
    base: &Resolved,
    p: &Parameter,
    method: Method,
    limit: u64,
    fingerprints: &mut Fingerprints,
    problems: &mut Vec<Problem>,
) -> Vec<Candidate> {
    let is_path = PATH_KEYS.contains(&p.key.as_str());
    let mut check = |raw: &Value, at: &Location| -> Option<Value> {
        let value = base.probe(&p.key, raw).map_err(|e| {
            let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
            problems.push(Problem::new(Origin::File(at.clone()), Some(e.key), kind));
        });
        match value.ok()? {
            // A swept path is relative to the sweep file, as every path a file declares.
            Value::String(path) if is_path => Some(Value::String(absolute_path(&path, at.file.parent()))),
            other => Some(other),
        }
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
            return match grid_values(&p.domain, limit) {
                Some(values) => values
                    .into_iter()
                    .map(|value| {
                        let text = value.to_string();
                        Candidate { value, identity: text.clone(), text, at: p.at.clone() }
                    })
                    .collect(),
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
    // Normalised values are compared by their canonical text: linear in the list's length.
    let mut seen = HashSet::with_capacity(normalised.len());
    let mut out: Vec<Candidate> = Vec::with_capacity(normalised.len());
    for (v, at) in normalised {
        let text = v.to_string();
        if !seen.insert(text.clone()) {
            let kind = ProblemKind::Invalid { expected: "each value once".into(), found: format!("{v} again") };
            problems.push(Problem::new(Origin::File(at.clone()), Some(p.key.clone()), kind));
            continue;
        }
        // An image folder stands in the identity for the images in it, read now: a folder
        // without images is found before anything is registered.
        let identity = match fingerprints.identity_value(&p.key, &v) {
            Ok(identity) => identity.to_string(),
            Err(e) => {
                let kind = ProblemKind::Invalid { expected: "a folder of images".into(), found: e.to_string() };
                problems.push(Problem::new(Origin::File(at.clone()), Some(p.key.clone()), kind));
                continue;
            }
        };
        out.push(Candidate { value: v, text, identity, at: at.clone() });
    }
    if let Some(limit) = usize::try_from(limit).ok().filter(|l| *l < out.len()) {
        out.truncate(limit);
    }
    out
}

/// A value the configuration refuses, at the parameter that produced it.
fn probe_error(p: &Parameter, e: crate::config::ProbeError) -> ConfigError {
    let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
    ConfigError::from(Problem::new(Origin::File(p.at.clone()), Some(e.key), kind))
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
    let mut identity = serde_json::json!({
        "base": base.json,
        "parameters": spec.doc.value.get("parameters"),
        "method": spec.method.as_str(),
        "run_cap": spec.run_cap,
        "seed": spec.seed,
        "metric": spec.metric.as_ref().map(|m| (m.name.as_str(), m.goal.as_str())),
    });
    // What only bayes search reads joins the identity of bayes sweeps alone, so grid and random
    // sweeps keep the ids earlier versions gave them.
    if let (Method::Bayes, Some(m), Value::Object(map)) = (spec.method, &spec.metric, &mut identity) {
        map.insert("metric_use".into(), m.use_.as_str().into());
        map.insert("metric_target".into(), m.target.into());
    }
    let hash = xxhash_rust::xxh3::xxh3_64(identity.to_string().as_bytes());
    format!("{}-{:08x}", spec.name, hash as u32)
}
