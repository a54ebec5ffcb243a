//! Layered configuration: built-in defaults < experiment file (`extends:`) < the sweep file's
//! `base:` < `DBSWEEP_*` environment variables < `--set key=value` flags.
//!
//! figment does the layering and remembers which layer supplied each value; this module adds
//! what figment lacks for a YAML user: line and column for every value (from [`SourceMap`]),
//! unknown-key detection with suggestions, and typed errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// `DBSWEEP_*` variables that are not configuration keys: the output root, and the test hooks
/// (`DBSWEEP_TEST_*`: killing a training process after a step, feeding it PyTorch's inputs).
fn not_config(name: &str) -> bool {
    name == "DBSWEEP_ROOT" || name.starts_with("DBSWEEP_TEST_")
}

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

    /// Adds an experiment file (the settings of one run, as `dbsweep train` takes it). A sweep
    /// file given instead is one problem that says so, not a list of unknown keys.
    pub fn experiment(mut self, doc: &YamlDoc) -> Self {
        let sweep_key = ["parameters", "method"].into_iter().find(|k| doc.value.get(k).is_some());
        if let Some(key) = sweep_key {
            let origin = Origin::File(doc.map.key(&[key.to_string()]));
            let message = format!(
                "this is a sweep file (it has `{key}:`): train its runs with `dbsweep run {}`; `dbsweep train` takes an \
                 experiment file (the settings of one run)",
                doc.map.file().display()
            );
            self.problems.push(Problem::new(origin, None, ProblemKind::Conflict(message)));
            return self;
        }
        self.file(doc, &[])
    }

    /// Adds every `DBSWEEP_*` variable of `vars` (pass `std::env::vars()`), except
    /// command-line settings such as `DBSWEEP_ROOT`.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && !not_config(k)).collect();
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

    /// Adds `--set key=value` flags, in order (a later flag wins). A flag that tries to set an
    /// API key is shown without its value wherever it is named (the key is never a setting,
    /// and never repeated in a message).
    pub fn flags(mut self, flags: &[String]) -> Self {
        for flag in flags {
            let shown = match flag.split_once('=') {
                Some((key, _)) if key.trim().ends_with("api_key") => format!("{key}=<hidden>"),
                _ => flag.clone(),
            };
            let origin = Origin::Flag(shown.clone());
            let Some((key, text)) = flag.split_once('=') else {
                let kind = ProblemKind::Invalid { expected: "key=value".into(), found: format!("{flag:?}") };
                self.problems.push(Problem::new(origin, None, kind));
                continue;
            };
            match nested(key.trim(), text, &origin) {
                Ok(value) => self = self.push("flag", Source::Custom(shown), value),
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
            return Err(ConfigError::new(sorted(problems)));
        }
        // A value of the wrong type is reported and replaced by its default, so the next
        // problem (and every range rule after) is found in the same pass.
        let mut json = merged;
        let config = loop {
            match typed(&json) {
                Ok(c) => break c,
                Err(e) => {
                    let path: Vec<String> = e.key.split('.').map(String::from).collect();
                    // A missing key has no origin of its own: point at the nearest key written.
                    let origin = (1..=path.len())
                        .rev()
                        .map(|n| self.origin(&path[..n], true))
                        .find(|o| *o != Origin::Default)
                        .unwrap_or(Origin::Default);
                    let kind = ProblemKind::Invalid { expected: e.expected, found: e.found };
                    problems.push(Problem::new(origin, Some(e.key.clone()), kind));
                    if !replace_with_default(&mut json, &path) {
                        return Err(ConfigError::new(sorted(problems)));
                    }
                }
            }
        };
        let mut config = config;
        config.map_paths(|key, value| {
            let path: Vec<String> = key.split('.').map(String::from).collect();
            let base = match self.origin(&path, true) {
                Origin::File(loc) => loc.file.parent().map(Path::to_path_buf),
                _ => None,
            };
            absolute_path(value, base.as_deref())
        });
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
        ConfigError::check(sorted(problems), Resolved { config, json, provenance })
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

/// The settings that name files or folders. A relative one is relative to the file that
/// declares it (like `extends:`), or to the current folder when it comes from a default, the
/// environment or a flag; the resolved configuration holds it absolute, so a run trains on
/// the same data from wherever it is started. `model.pretrained` names are left alone.
pub const PATH_KEYS: [&str; 5] =
    ["model.pretrained", "data.instance_dir", "data.class_dir", "evaluation.clip_model", "evaluation.dino_model"];

/// `value` (a path setting) made absolute against `base` (the declaring file's folder), or the
/// current folder without one. Built-in model names (`builtin:...`) and absolute paths are
/// returned as they are; `.` and `..` are resolved without touching the filesystem.
pub fn absolute_path(value: &str, base: Option<&Path>) -> String {
    if value.starts_with("builtin:") || value.trim().is_empty() {
        return value.to_string();
    }
    let joined = match base {
        Some(dir) if !Path::new(value).is_absolute() => dir.join(value),
        _ => PathBuf::from(value),
    };
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean.to_string_lossy().into_owned()
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

/// `problems` in the order they are written: file positions first (by file, line, column),
/// then the environment's and flags' (stable).
fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|a, b| match (&a.origin, &b.origin) {
        (Origin::File(x), Origin::File(y)) => (&x.file, x.line, x.column).cmp(&(&y.file, y.line, y.column)),
        (Origin::File(_), _) => std::cmp::Ordering::Less,
        (_, Origin::File(_)) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    });
    problems
}

/// Replaces the value at `path` in `json`, or else at the nearest enclosing key where that
/// changes something, with the default's (removing it where the default has none, as for an
/// optional section); `false` when nothing changes, so the same error would come again.
fn replace_with_default(json: &mut Value, path: &[String]) -> bool {
    (1..=path.len()).rev().any(|n| replace_one(json, &path[..n]))
}

fn replace_one(json: &mut Value, path: &[String]) -> bool {
    let defaults = defaults_json();
    let default = path.iter().try_fold(&defaults, |v, k| v.get(k)).cloned();
    let Some((last, parents)) = path.split_last() else { return false };
    let Some(Value::Object(parent)) = parents.iter().try_fold(&mut *json, |v, k| v.get_mut(k.as_str())) else {
        return false;
    };
    match default {
        Some(d) if parent.get(last) != Some(&d) => {
            parent.insert(last.clone(), d);
            true
        }
        None => parent.remove(last).is_some(),
        Some(_) => false,
    }
}

fn typed(json: &Value) -> Result<ExperimentConfig, ProbeError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let mut key = e.path().to_string();
        let message = e.inner().to_string();
        let path: Vec<&str> = key.split('.').collect();
        let mut found = path.iter().try_fold(json, |v, k| v.get(*k)).map(short).unwrap_or_default();
        let expected = if let Some(field) = field_in(&message, "missing field ") {
            // A required key of a section that is present: name the key itself.
            key = format!("{key}.{field}");
            found = "nothing".into();
            format!("a value: `{key}` is required when `{}` is set", e.path())
        } else if field_in(&message, "unknown field ") == Some("api_key") && key.starts_with("tracking.wandb") {
            key = "tracking.wandb.api_key".into();
            found = "an API key in the settings".into();
            "no such setting: the W&B API key is never a setting (it would be stored with the run); it comes \
             from WANDB_API_KEY or ~/.netrc"
                .into()
        } else if let Some(field) = field_in(&message, "unknown field ") {
            if !key.ends_with(&format!(".{field}")) {
                key = format!("{key}.{field}");
            }
            let known = message.rsplit_once("expected one of ").map_or("", |(_, k)| k).replace('`', "");
            found = "an unknown key".into();
            format!("one of the keys {known}")
        } else {
            expected_of(&key, &message)
        };
        ProbeError { key, expected, found }
    })
}

/// The field name serde quotes after `prefix` (`missing field `project``).
fn field_in<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.strip_prefix('`')?.split('`').next()
}

/// Turns serde's "invalid type: string \"x\", expected f64" for `key` into words a user
/// knows: the key's range rule when it has one (`train.epochs`: "an integer >= 1"), else its
/// type.
fn expected_of(key: &str, message: &str) -> String {
    let expected = message.rsplit_once("expected ").map_or(message, |(_, e)| e);
    let typed = match expected {
        "f64" => "a number".to_string(),
        "u32" | "u64" => "a whole number >= 0".to_string(),
        "a boolean" => "true or false".to_string(),
        e if e.starts_with("struct ") => format!("a mapping of `{key}.KEY: value` settings"),
        other => other.replace('`', "").replace("one of ", "one of: "),
    };
    match rule_of(key) {
        Some(rule) if typed == "a whole number >= 0" || typed == "a number" => rule.to_string(),
        _ => typed,
    }
}

/// The range rule of a numeric key, as the schema words it: found by giving the defaults zero
/// at that key and reading what the schema objects to (`None` when zero is fine).
fn rule_of(key: &str) -> Option<&'static str> {
    let path: Vec<&str> = key.split('.').collect();
    [Value::from(0), Value::from(0.0)].into_iter().find_map(|zero| {
        let mut json = defaults_json();
        *leaf_mut(&mut json, &path)? = zero;
        let config: ExperimentConfig = serde_json::from_value(json).ok()?;
        config.violations().into_iter().find(|v| v.key == key).map(|v| v.expected)
    })
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
            let shown = if key.ends_with("api_key") { "<hidden>".to_string() } else { format!("{text:?}") };
            let kind = ProblemKind::Invalid { expected: "a YAML value".into(), found: format!("{shown} ({msg})") };
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
