//! Layered configuration: built-in defaults < experiment file (`extends:`) < the sweep file's
//! `base:` < `DBSWEEP_*` environment variables < `--set key=value` flags.
//!
//! figment does the layering and remembers which layer supplied each value; this module adds
//! what figment lacks for a YAML user: line and column for every value (from [`SourceMap`]),
//! unknown-key detection with suggestions, and typed errors that name the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::value::{Dict, Map as FigmentMap};
use figment::{Figment, Metadata, Profile, Provider, Source, providers::Serialized};
use serde_json::{Map, Value};

use super::error::{ConfigError, Problem, ProblemKind};
use super::location::{NodePath, Origin, SourceMap};
use super::schema::ExperimentConfig;
use super::suggest::suggest;
use super::yaml::{self, YamlDoc};

/// Prefix of configuration environment variables; `__` separates nested keys
/// (`DBSWEEP_TRAIN__LEARNING_RATE`).
pub const ENV_PREFIX: &str = "DBSWEEP_";

/// `DBSWEEP_*` variables that are not configuration keys: the output root, and the test hook
/// that kills a training process after a given step (to test exact resume).
const ENV_NOT_CONFIG: [&str; 2] = ["DBSWEEP_ROOT", "DBSWEEP_TEST_CRASH_AT_STEP"];

/// Builder of the layer stack, lowest precedence first.
pub struct Layers {
    figment: Figment,
    files: Vec<(PathBuf, NodePath, SourceMap)>,
    problems: Vec<Problem>,
    count: usize,
}

/// A fully resolved, validated configuration and the origin of every value in it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The typed configuration.
    pub config: ExperimentConfig,
    /// The configuration as canonical JSON (keys sorted), the form that is hashed and stored.
    pub json: Value,
    /// The origin of every leaf, by dotted key.
    pub provenance: BTreeMap<String, Origin>,
}

/// Why a single value does not fit a key (see [`Resolved::probe`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeError {
    /// The key whose rule is broken (the probed key, or one that depends on it).
    pub key: String,
    /// What that key accepts.
    pub expected: String,
    /// What was found.
    pub found: String,
}

struct Layer {
    name: String,
    source: Source,
    data: Value,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.name.clone(), self.source.clone())
    }

    fn data(&self) -> Result<FigmentMap<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.data).data()
    }
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    /// A stack holding only the built-in defaults.
    pub fn new() -> Self {
        let defaults = Serialized::defaults(ExperimentConfig::default());
        Self { figment: Figment::from(defaults), files: Vec::new(), problems: Vec::new(), count: 0 }
    }

    fn push(mut self, name: &str, source: Source, data: Value) -> Self {
        self.count += 1;
        let layer = Layer { name: format!("{name}#{}", self.count), source, data };
        self.figment = self.figment.merge(layer);
        self
    }

    /// Adds the mapping found at `prefix` inside `doc` (empty prefix: the whole document).
    pub fn file(mut self, doc: &YamlDoc, prefix: &[&str]) -> Self {
        let prefix: NodePath = prefix.iter().map(|s| s.to_string()).collect();
        let value = prefix.iter().try_fold(&doc.value, |v, k| v.get(k)).cloned();
        let value = match value {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v) => v,
        };
        if !value.is_object() {
            let origin = Origin::File(doc.map.value(&prefix));
            let kind = ProblemKind::Invalid { expected: "a mapping of settings".into(), found: short(&value) };
            let key = (!prefix.is_empty()).then(|| prefix.join("."));
            self.problems.push(Problem::new(origin, key, kind));
            return self;
        }
        let file = doc.map.file().to_path_buf();
        self.files.push((file.clone(), prefix, doc.map.clone()));
        self.push("file", Source::File(file), value)
    }

    /// Adds every `DBSWEEP_*` variable of `vars` (pass `std::env::vars()`), except
    /// command-line settings such as `DBSWEEP_ROOT`.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (name, text) in vars {
            let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
            let origin = Origin::Env(name.clone());
            match nested(&key, &text, &origin) {
                Ok(value) => self = self.push("env", Source::Custom(name), value),
                Err(p) => self.problems.push(p),
            }
        }
        self
    }

    /// Adds `--set key=value` flags, in order (a later flag wins).
    pub fn flags(mut self, flags: &[String]) -> Self {
        for flag in flags {
            let origin = Origin::Flag(flag.clone());
            let Some((key, text)) = flag.split_once('=') else {
                let kind = ProblemKind::Invalid { expected: "key=value".into(), found: format!("{flag:?}") };
                self.problems.push(Problem::new(origin, None, kind));
                continue;
            };
            match nested(key.trim(), text, &origin) {
                Ok(value) => self = self.push("flag", Source::Custom(flag.clone()), value),
                Err(p) => self.problems.push(p),
            }
        }
        self
    }

    /// Merges the layers, rejects unknown keys, types the result and checks every range rule.
    pub fn resolve(self) -> Result<Resolved, ConfigError> {
        let mut problems = self.problems.clone();
        let merged: Value = match self.figment.extract() {
            Ok(v) => v,
            Err(e) => {
                let p = Problem::new(Origin::Default, None, ProblemKind::Syntax(e.to_string()));
                return Err(ConfigError::new(vec![p]));
            }
        };
        let defaults = defaults_json();
        let all_keys = key_tree();
        let mut path = Vec::new();
        unknown_keys(&merged, &defaults, &mut path, &mut |p: &[String]| {
            let key = p.join(".");
            let suggestion = suggest(&key, all_keys.iter().map(|(k, _)| k.as_str()));
            problems.push(Problem::new(self.origin(p, false), Some(key), ProblemKind::UnknownKey { suggestion }));
        });
        if !problems.is_empty() {
            problems.sort_by_key(|p| match &p.origin {
                Origin::File(loc) => (0, loc.line, loc.column),
                _ => (1, 0, 0),
            });
            return Err(ConfigError::new(problems));
        }
        let config = match typed(&merged) {
            Ok(c) => c,
            Err(e) => {
                let path: Vec<String> = e.key.split('.').map(String::from).collect();
                let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
                return Err(Problem::new(self.origin(&path, true), Some(e.key), kind).into());
            }
        };
        for v in config.violations() {
            let path: Vec<String> = v.key.split('.').map(String::from).collect();
            let kind = ProblemKind::Invalid { expected: v.expected.into(), found: v.found };
            problems.push(Problem::new(self.origin(&path, true), Some(v.key.into()), kind));
        }
        let json = canonical(serde_json::to_value(&config).expect("config serializes"));
        let provenance = leaf_keys().into_iter().map(|k| {
            let path: Vec<String> = k.split('.').map(String::from).collect();
            let origin = self.origin(&path, true);
            (k, origin)
        });
        let provenance = provenance.collect();
        ConfigError::check(problems, Resolved { config, json, provenance })
    }

    /// Which layer supplied the value at `path`, with its position when it came from a file.
    fn origin(&self, path: &[String], at_value: bool) -> Origin {
        let Some(meta) = self.figment.find_metadata(&path.join(".")) else {
            return Origin::Default;
        };
        match &meta.source {
            Some(Source::File(file)) => {
                let (_, prefix, map) = self.files.iter().rev().find(|(f, ..)| f == file).expect("file layer");
                let full: NodePath = prefix.iter().chain(path).cloned().collect();
                Origin::File(if at_value { map.value(&full) } else { map.key(&full) })
            }
            Some(Source::Custom(text)) if meta.name.starts_with("env#") => Origin::Env(text.clone()),
            Some(Source::Custom(text)) => Origin::Flag(text.clone()),
            _ => Origin::Default,
        }
    }
}

impl Resolved {
    /// The canonical JSON text (sorted keys, no spaces): what the config hash is computed over.
    pub fn canonical_text(&self) -> String {
        self.json.to_string()
    }

    /// Checks `value` for the leaf `key` against this configuration, returning the value as
    /// the typed config normalises it (`1` for an integer key stays `1`, `1` for a float key
    /// becomes `1.0`). Used to validate swept values before any run is planned.
    pub fn probe(&self, key: &str, value: &Value) -> Result<Value, ProbeError> {
        let path: Vec<&str> = key.split('.').collect();
        let mut json = self.json.clone();
        *leaf_mut(&mut json, &path).expect("probe of a known leaf") = value.clone();
        let config = typed(&json)?;
        if let Some(v) = config.violations().into_iter().next() {
            return Err(ProbeError { key: v.key.into(), expected: v.expected.into(), found: v.found });
        }
        let normalised = serde_json::to_value(&config).expect("config serializes");
        Ok(path.iter().fold(&normalised, |v, k| &v[*k]).clone())
    }
}

/// `json` with the keys of every mapping sorted: the canonical form that is hashed.
pub fn canonical(json: Value) -> Value {
    match json {
        Value::Object(map) => {
            let mut map: Map<String, Value> = map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            map.sort_keys();
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Every leaf key of the configuration, dotted, in sorted order.
pub fn leaf_keys() -> Vec<String> {
    key_tree().into_iter().filter(|(_, leaf)| *leaf).map(|(k, _)| k).collect()
}

/// Every key, sections (`train`) and leaves (`train.epochs`) alike, with whether it is a leaf.
fn key_tree() -> Vec<(String, bool)> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, bool)>) {
        match v {
            Value::Object(m) => {
                if !prefix.is_empty() {
                    out.push((prefix.to_string(), false));
                }
                for (k, child) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(child, &key, out);
                }
            }
            _ => out.push((prefix.to_string(), true)),
        }
    }
    let mut out = Vec::new();
    walk(&canonical(defaults_json()), "", &mut out);
    out
}

/// The leaf at `path` inside a JSON tree, if every step exists.
pub fn leaf_mut<'a>(json: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(json, |v, k| v.get_mut(*k))
}

fn defaults_json() -> Value {
    serde_json::to_value(ExperimentConfig::default()).expect("defaults serialize")
}

fn unknown_keys(v: &Value, defaults: &Value, path: &mut Vec<String>, report: &mut impl FnMut(&[String])) {
    let (Value::Object(given), Value::Object(known)) = (v, defaults) else { return };
    for (k, child) in given {
        path.push(k.clone());
        match known.get(k) {
            Some(d) => unknown_keys(child, d, path, report),
            None => report(path),
        }
        path.pop();
    }
}

fn typed(json: &Value) -> Result<ExperimentConfig, ProbeError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        let path: Vec<&str> = key.split('.').collect();
        let found = path.iter().try_fold(json, |v, k| v.get(*k)).map(short).unwrap_or_default();
        ProbeError { key, expected: expected_of(&message), found }
    })
}

/// Turns serde's "invalid type: string \"x\", expected f64" into words a user knows.
fn expected_of(message: &str) -> String {
    let expected = message.rsplit_once("expected ").map_or(message, |(_, e)| e);
    match expected {
        "f64" => "a number".into(),
        "u32" | "u64" => "a whole number >= 0".into(),
        "a boolean" => "true or false".into(),
        other => other.replace('`', "").replace("one of ", "one of: "),
    }
}

/// `a.b.c` = YAML scalar text, as the nested mapping `{a: {b: {c: value}}}`.
fn nested(key: &str, text: &str, origin: &Origin) -> Result<Value, Problem> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key.split('.').all(valid) {
        let kind = ProblemKind::Invalid {
            expected: "a dotted key such as train.learning_rate".into(),
            found: format!("{key:?}"),
        };
        return Err(Problem::new(origin.clone(), None, kind));
    }
    let label = PathBuf::from(origin.detail());
    let value = match yaml::parse_value(&label, text) {
        Ok(_) if text.trim().is_empty() => Value::String(String::new()),
        Ok(doc) => doc.value,
        Err(e) => {
            let msg = e.problems().first().map(|p| format!("{:?}", p.kind)).unwrap_or_default();
            let kind = ProblemKind::Invalid { expected: "a YAML value".into(), found: format!("{text:?} ({msg})") };
            return Err(Problem::new(origin.clone(), Some(key.into()), kind));
        }
    };
    Ok(key.rsplit('.').fold(value, |acc, k| {
        let mut m = Map::new();
        m.insert(k.to_string(), acc);
        Value::Object(m)
    }))
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 { format!("{}...", text.chars().take(57).collect::<String>()) } else { text }
}
