//! Parsing sweep files into a [`SweepSpec`], every problem reported at once with its file,
//! line, column and key. Whether bayes search can model every parameter is checked when the
//! plan is built (`bayes::Searcher::new`).

use std::path::Path;

use serde_json::Value;

use super::goal::Goal;
use super::spec::{Domain, EarlyTerminate, Located, Method, Metric, MetricUse, Parameter, SweepSpec};
use crate::config::{ConfigError, Location, Origin, Problem, ProblemKind, SourceMap, suggest, yaml};

const TOP_KEYS: [&str; 10] =
    ["name", "description", "extends", "base", "method", "metric", "parameters", "run_cap", "seed", "early_terminate"];
const PARAM_KEYS: [&str; 7] = ["value", "values", "distribution", "min", "max", "q", "probabilities"];
const DISTRIBUTIONS: [&str; 5] = ["categorical", "uniform", "log_uniform_values", "int_uniform", "q_uniform"];

/// Reads and parses the sweep file at `path`.
pub fn load(path: &Path) -> Result<SweepSpec, ConfigError> {
    parse(yaml::load_file(path)?)
}

/// Parses a sweep document, reporting every problem found.
pub fn parse(doc: yaml::YamlDoc) -> Result<SweepSpec, ConfigError> {
    let mut r = Reader { map: &doc.map, problems: Vec::new() };
    let Some(top) = doc.value.as_object() else {
        r.invalid(&[] as &[&str], "a mapping with `parameters:` and optionally `base:`, `method:`", &doc.value);
        return Err(ConfigError::new(r.problems));
    };
    for key in top.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            r.unknown(&[key.as_str()], &TOP_KEYS);
        }
    }
    let file = doc.map.file().to_path_buf();
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
    let name = r.string(top, "name").unwrap_or(stem);
    if !valid_name(&name) {
        r.invalid(&["name"], "letters, digits, `_`, `-` and `.` (used in run folders)", &Value::String(name.clone()));
    }
    let description = r.string(top, "description");
    let extends = r.string(top, "extends").map(|p| {
        let dir = file.parent().unwrap_or(Path::new(""));
        Located { value: dir.join(p), at: doc.map.value(&path(&["extends"])) }
    });
    let method = match r.string(top, "method").as_deref() {
        None | Some("grid") => Method::Grid,
        Some("random") => Method::Random,
        Some("bayes") => Method::Bayes,
        Some(_) => {
            r.invalid(&["method"], "grid, random or bayes", &top["method"]);
            Method::Grid
        }
    };
    let metric = top.get("metric").and_then(|m| r.metric(m, method));
    let run_cap = r.positive_int(top, "run_cap");
    let seed = r.int(top, "seed").map(|s| s as u64).unwrap_or(0);
    let early_terminate = top.get("early_terminate").and_then(|e| r.early_terminate(e));
    if early_terminate.is_some() && metric.is_none() {
        r.missing(&[] as &[&str], "`metric:` (early termination ranks runs by it)");
    }
    if let Some(v) = top.get("base").filter(|v| !v.is_object() && !v.is_null()) {
        r.invalid(&["base"], "a mapping of settings", v);
    }
    let mut parameters = Vec::new();
    match top.get("parameters") {
        Some(Value::Object(params)) if !params.is_empty() => {
            r.parameters(params, &mut vec!["parameters".into()], "", &mut parameters)
        }
        Some(v) => r.invalid(&["parameters"], "a non-empty mapping of parameter name to values", v),
        None => r.missing(&[] as &[&str], "`parameters:` (the swept settings)"),
    }
    match method {
        Method::Random if run_cap.is_none() => {
            r.missing(&[] as &[&str], "`run_cap:` (random search needs a number of runs)")
        }
        Method::Bayes if run_cap.is_none() => {
            r.missing(&[] as &[&str], "`run_cap:` (bayes search needs a number of runs)")
        }
        Method::Bayes if !top.contains_key("metric") => {
            r.missing(&[] as &[&str], "`metric:` with `name` and `goal` (bayes search learns from it)")
        }
        _ => {}
    }
    let spec = SweepSpec {
        file,
        name,
        description,
        extends,
        method,
        metric,
        run_cap,
        seed,
        early_terminate,
        parameters,
        doc: doc.clone(),
    };
    ConfigError::check(r.problems, spec)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn path(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

struct Reader<'a> {
    map: &'a SourceMap,
    problems: Vec<Problem>,
}

type Obj = serde_json::Map<String, Value>;

impl Reader<'_> {
    fn at(&self, p: &[String]) -> Location {
        self.map.value(p)
    }

    fn problem(&mut self, p: &[String], at_key: bool, kind: ProblemKind) {
        let at = if at_key { self.map.key(p) } else { self.map.value(p) };
        let key = (!p.is_empty()).then(|| p.join("."));
        self.problems.push(Problem::new(Origin::File(at), key, kind));
    }

    fn invalid<S: AsRef<str>>(&mut self, p: &[S], expected: &str, found: &Value) {
        let p: Vec<String> = p.iter().map(|s| s.as_ref().to_string()).collect();
        self.problem(&p, false, ProblemKind::Invalid { expected: expected.into(), found: found.to_string() });
    }

    fn missing<S: AsRef<str>>(&mut self, p: &[S], expected: &str) {
        let p: Vec<String> = p.iter().map(|s| s.as_ref().to_string()).collect();
        self.problem(&p, true, ProblemKind::Missing { expected: expected.into() });
    }

    fn unknown<S: AsRef<str>>(&mut self, p: &[S], known: &[&str]) {
        let p: Vec<String> = p.iter().map(|s| s.as_ref().to_string()).collect();
        let suggestion = suggest(p.last().map_or("", String::as_str), known.iter().copied());
        self.problem(&p, true, ProblemKind::UnknownKey { suggestion });
    }

    fn string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        match obj.get(key)? {
            Value::String(s) => Some(s.clone()),
            v => {
                self.invalid(&[key], "a string", v);
                None
            }
        }
    }

    fn int(&mut self, obj: &Obj, key: &str) -> Option<i64> {
        match obj.get(key)? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            v => {
                self.invalid(&[key], "an integer", v);
                None
            }
        }
    }

    fn positive_int(&mut self, obj: &Obj, key: &str) -> Option<u64> {
        let n = self.int(obj, key)?;
        if n < 1 {
            self.invalid(&[key], "an integer >= 1", &obj[key]);
            return None;
        }
        Some(n as u64)
    }

    fn early_terminate(&mut self, e: &Value) -> Option<EarlyTerminate> {
        let Some(obj) = e.as_object() else {
            self.invalid(&["early_terminate"], "a mapping such as {type: hyperband, min_iter: 3, eta: 3}", e);
            return None;
        };
        const KEYS: [&str; 3] = ["type", "min_iter", "eta"];
        for key in obj.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            self.unknown(&["early_terminate", key.as_str()], &KEYS);
        }
        if obj.get("type").and_then(Value::as_str) != Some("hyperband") {
            let found = obj.get("type").cloned().unwrap_or(Value::Null);
            self.invalid(&["early_terminate", "type"], "hyperband", &found);
            return None;
        }
        let int = |key: &str, default: Option<i64>, min: i64| match obj.get(key) {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v >= min) => Ok(n.as_i64().unwrap_or(min) as u64),
            None => default
                .map(|d| d as u64)
                .ok_or_else(|| (key.to_string(), format!("`{key}:` (an integer >= {min})"), None)),
            Some(v) => Err((key.to_string(), format!("an integer >= {min}"), Some(v.clone()))),
        };
        let mut bad = |(key, expected, found): (String, String, Option<Value>)| match found {
            Some(v) => self.invalid(&["early_terminate", key.as_str()], &expected, &v),
            None => self.missing(&["early_terminate"], &expected),
        };
        let min_iter = int("min_iter", None, 1).map_err(&mut bad).ok();
        let eta = int("eta", Some(3), 2).map_err(&mut bad).ok();
        Some(EarlyTerminate { min_iter: min_iter?, eta: eta? })
    }

    fn metric(&mut self, m: &Value, method: Method) -> Option<Metric> {
        let Some(obj) = m.as_object() else {
            self.invalid(&["metric"], "a mapping with `name` and `goal`", m);
            return None;
        };
        const KEYS: [&str; 4] = ["name", "goal", "target", "use"];
        for key in obj.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            self.unknown(&["metric", key.as_str()], &KEYS);
        }
        // What only a search that learns from results reads: refused elsewhere rather than ignored.
        for key in ["target", "use"].into_iter().filter(|k| obj.contains_key(*k) && method != Method::Bayes) {
            self.invalid(
                &["metric", key],
                "no such key with grid or random search (it applies to `method: bayes`)",
                &obj[key],
            );
        }
        let uses = [("best", MetricUse::Best), ("last", MetricUse::Last)];
        let expected = "best or last (which of a run's values bayes search learns from)";
        let use_ = self.keyword(obj, "use", &uses, expected).unwrap_or_default();
        let target = match obj.get("target") {
            None => None,
            Some(v) if v.as_f64().is_some_and(f64::is_finite) => v.as_f64(),
            Some(v) => {
                self.invalid(&["metric", "target"], "a number (stop proposing once a run reaches it)", v);
                None
            }
        };
        if method == Method::Bayes && !obj.contains_key("goal") {
            self.missing(&["metric"], "`goal:` (minimize or maximize: bayes search needs the direction)");
        }
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(v) => {
                self.invalid(&["metric", "name"], "a metric name such as val/loss", v);
                return None;
            }
            None => {
                self.missing(&["metric"], "`name:` (the metric key)");
                return None;
            }
        };
        let goals = [("minimize", Goal::Minimize), ("maximize", Goal::Maximize)];
        let goal = match obj.get("goal") {
            None => Goal::Minimize,
            Some(_) => self.keyword(obj, "goal", &goals, "minimize or maximize")?,
        };
        Some(Metric { name, goal, use_, target })
    }

    /// The value of `metric.key` among the `choices` by name (`None`, reported as not
    /// `expected`, when it is none of them; `None` when absent).
    fn keyword<T: Copy>(&mut self, obj: &Obj, key: &str, choices: &[(&str, T)], expected: &str) -> Option<T> {
        let v = obj.get(key)?;
        let found = choices.iter().find(|(name, _)| v.as_str() == Some(*name)).map(|(_, c)| *c);
        if found.is_none() {
            self.invalid(&["metric", key], expected, v);
        }
        found
    }

    fn parameters(&mut self, params: &Obj, p: &mut Vec<String>, prefix: &str, out: &mut Vec<Parameter>) {
        for (name, spec) in params {
            p.push(name.clone());
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            match spec {
                _ if !valid => self.problem(
                    p,
                    true,
                    ProblemKind::Invalid {
                        expected: "a parameter name matching [A-Za-z_][A-Za-z0-9_.-]*".into(),
                        found: format!("{name:?}"),
                    },
                ),
                Value::Object(obj) if obj.contains_key("parameters") => match &obj["parameters"] {
                    Value::Object(nested) if obj.len() == 1 => {
                        p.push("parameters".into());
                        self.parameters(nested, p, &key, out);
                        p.pop();
                    }
                    v => self.invalid(p, "a mapping with only `parameters:` (nested parameters)", v),
                },
                Value::Object(obj) => {
                    if let Some(domain) = self.domain(obj, p) {
                        out.push(Parameter { key, at: self.map.key(p), domain });
                    }
                }
                v => self.invalid(p, "a mapping such as {values: [...]} or {value: x}", v),
            }
            p.pop();
        }
    }

    fn domain(&mut self, obj: &Obj, p: &[String]) -> Option<Domain> {
        let before = self.problems.len();
        let sub = |k: &str| -> Vec<String> { p.iter().cloned().chain([k.to_string()]).collect() };
        for key in obj.keys().filter(|k| !PARAM_KEYS.contains(&k.as_str())) {
            let kp = sub(key);
            self.unknown(&kp, &PARAM_KEYS);
        }
        let has = |k: &str| obj.contains_key(k);
        let distribution = match obj.get("distribution") {
            None if has("value") => "constant",
            None if has("values") => "categorical",
            None if has("min") || has("max") => {
                let ints = [obj.get("min"), obj.get("max")].iter().all(|v| v.is_some_and(|v| v.is_i64()));
                if ints { "int_uniform" } else { "uniform" }
            }
            None => {
                self.missing(p, "`values:`, `value:` or `distribution:` with `min`/`max`");
                return None;
            }
            Some(Value::String(d)) if DISTRIBUTIONS.contains(&d.as_str()) => d.as_str(),
            Some(v) => {
                let found = v.as_str().unwrap_or("");
                let hint = suggest(found, DISTRIBUTIONS).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
                let expected = format!("one of {}{hint}", DISTRIBUTIONS.join(", "));
                self.invalid(&sub("distribution"), &expected, v);
                return None;
            }
        };
        let map = self.map;
        let located = |v: &Value, k: &[String]| Located { value: v.clone(), at: map.value(k) };
        let domain = match distribution {
            "constant" => {
                let v = &obj["value"];
                Domain::Values { values: vec![located(v, &sub("value"))], probabilities: None }
            }
            "categorical" => {
                let values = match obj.get("values") {
                    Some(Value::Array(vs)) if !vs.is_empty() => vs
                        .iter()
                        .enumerate()
                        .map(|(i, v)| located(v, &[sub("values"), vec![i.to_string()]].concat()))
                        .collect::<Vec<_>>(),
                    Some(v) => {
                        self.invalid(&sub("values"), "a non-empty list of values", v);
                        return None;
                    }
                    None => {
                        self.missing(p, "`values:` (the categories)");
                        return None;
                    }
                };
                let probabilities = self.probabilities(obj, p, values.len());
                Domain::Values { values, probabilities }
            }
            "int_uniform" => {
                let (min, max) = (self.bound_int(obj, p, "min")?, self.bound_int(obj, p, "max")?);
                self.ordered(p, min.value as f64, max.value as f64);
                Domain::IntUniform { min, max }
            }
            d => {
                let (min, max) = (self.bound(obj, p, "min")?, self.bound(obj, p, "max")?);
                self.ordered(p, min.value, max.value);
                match d {
                    "uniform" => Domain::Uniform { min, max },
                    "log_uniform_values" => {
                        if min.value <= 0.0 {
                            self.invalid(&sub("min"), "a number > 0 (log scale)", &obj["min"]);
                        }
                        Domain::LogUniformValues { min, max }
                    }
                    _ => {
                        let q = self.bound(obj, p, "q")?;
                        if q.value <= 0.0 {
                            self.invalid(&sub("q"), "a number > 0", &obj["q"]);
                        }
                        Domain::QUniform { min, max, q }
                    }
                }
            }
        };
        (self.problems.len() == before).then_some(domain)
    }

    fn probabilities(&mut self, obj: &Obj, p: &[String], n: usize) -> Option<Vec<f64>> {
        let v = obj.get("probabilities")?;
        let kp: Vec<String> = p.iter().cloned().chain(["probabilities".to_string()]).collect();
        let probs: Option<Vec<f64>> = v.as_array().and_then(|a| a.iter().map(Value::as_f64).collect());
        match probs {
            Some(ps)
                if ps.len() == n && ps.iter().all(|&x| x >= 0.0) && (ps.iter().sum::<f64>() - 1.0).abs() < 1e-6 =>
            {
                Some(ps)
            }
            _ => {
                let expected = format!("{n} numbers >= 0 that sum to 1, one per value");
                self.invalid(&kp, &expected, v);
                None
            }
        }
    }

    fn bound(&mut self, obj: &Obj, p: &[String], key: &str) -> Option<Located<f64>> {
        let kp: Vec<String> = p.iter().cloned().chain([key.to_string()]).collect();
        match obj.get(key) {
            Some(v) if v.is_number() => Some(Located { value: v.as_f64()?, at: self.at(&kp) }),
            Some(v) => {
                self.invalid(&kp, "a number", v);
                None
            }
            None => {
                self.missing(p, &format!("`{key}:` for this distribution"));
                None
            }
        }
    }

    fn bound_int(&mut self, obj: &Obj, p: &[String], key: &str) -> Option<Located<i64>> {
        let kp: Vec<String> = p.iter().cloned().chain([key.to_string()]).collect();
        match obj.get(key) {
            Some(Value::Number(n)) if n.is_i64() => Some(Located { value: n.as_i64()?, at: self.at(&kp) }),
            Some(v) => {
                self.invalid(&kp, "an integer (int_uniform)", v);
                None
            }
            None => {
                self.missing(p, &format!("`{key}:` for int_uniform"));
                None
            }
        }
    }

    fn ordered(&mut self, p: &[String], min: f64, max: f64) {
        if min > max {
            let kp: Vec<String> = p.iter().cloned().chain(["min".to_string()]).collect();
            let kind = ProblemKind::Invalid { expected: format!("min <= max ({max})"), found: min.to_string() };
            self.problem(&kp, false, kind);
        }
    }
}
