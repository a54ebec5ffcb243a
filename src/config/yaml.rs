//! Reads YAML 1.2 files into JSON values plus a [`SourceMap`] of every key's and value's
//! position.
//!
//! saphyr (the maintained successor of yaml-rust) is used for its marked tree: serde-based
//! YAML crates lose positions once a value is deserialized, and figment's own YAML provider
//! uses the archived `serde_yaml`. JSON values are the lingua franca of the config layers:
//! figment layers them, serde types them, and the canonical JSON text is what gets hashed.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use super::error::{ConfigError, Problem, ProblemKind};
use super::location::{Location, NodePath, Origin, SourceMap};

/// A parsed YAML document: its value and where each part of it was written.
#[derive(Clone, Debug)]
pub struct YamlDoc {
    /// The document as JSON (mapping keys are strings; numbers are i64 or finite f64).
    pub value: Value,
    /// Positions of keys and values.
    pub map: SourceMap,
}

/// Reads and parses the YAML file at `path`.
pub fn load_file(path: &Path) -> Result<YamlDoc, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path.to_path_buf(), &e))?;
    parse(path, &text)
}

/// Parses `text` as the YAML file `path`. An empty document is an empty mapping.
pub fn parse(path: &Path, text: &str) -> Result<YamlDoc, ConfigError> {
    let mut doc = parse_value(path, text)?;
    if doc.value.is_null() {
        doc.value = Value::Object(Map::new());
    }
    Ok(doc)
}

/// Parses `text` as one YAML value (a flag's or variable's value); an empty document is null.
pub fn parse_value(path: &Path, text: &str) -> Result<YamlDoc, ConfigError> {
    let mut map = SourceMap::new(path);
    let here = |line: usize, column: usize| Origin::File(Location { file: path.to_path_buf(), line, column });
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        Problem::new(here(m.line(), m.col() + 1), None, ProblemKind::Syntax(e.info().to_string()))
    })?;
    if docs.len() > 1 {
        let m = docs[1].span.start;
        let msg = "a file holds one YAML document; remove the second `---`".to_string();
        return Err(Problem::new(here(m.line(), m.col() + 1), None, ProblemKind::Syntax(msg)).into());
    }
    let Some(doc) = docs.into_iter().next() else {
        return Ok(YamlDoc { value: Value::Null, map });
    };
    let mut problems = Vec::new();
    let value = convert(&doc, &mut NodePath::new(), &mut map, &mut problems);
    ConfigError::check(problems, YamlDoc { value, map })
}

fn convert(node: &MarkedYaml<'_>, path: &mut NodePath, map: &mut SourceMap, problems: &mut Vec<Problem>) -> Value {
    let start = node.span.start;
    map.add_value(path.clone(), start.line(), start.col() + 1);
    let mut bad = |msg: &str| {
        let loc = Location { file: map.file().to_path_buf(), line: start.line(), column: start.col() + 1 };
        problems.push(Problem::new(Origin::File(loc), key_of(path), ProblemKind::Syntax(msg.into())));
        Value::Null
    };
    match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Number((*i).into()),
            Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => bad("infinite and NaN numbers are not accepted"),
            },
            Scalar::String(s) => Value::String(s.to_string()),
        },
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(convert(item, path, map, problems));
                path.pop();
            }
            Value::Array(out)
        }
        YamlData::Mapping(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => {
                        let loc = Location {
                            file: map.file().to_path_buf(),
                            line: k.span.start.line(),
                            column: k.span.start.col() + 1,
                        };
                        let msg = "mapping keys must be plain strings".to_string();
                        problems.push(Problem::new(Origin::File(loc), key_of(path), ProblemKind::Syntax(msg)));
                        continue;
                    }
                };
                path.push(key.clone());
                map.add_key(path.clone(), k.span.start.line(), k.span.start.col() + 1);
                let value = convert(v, path, map, problems);
                path.pop();
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Alias(_) => bad("aliases (`*name`) are not supported; repeat the value"),
        YamlData::Tagged(..) => bad("tags (`!tag`) are not supported; write a plain value"),
        YamlData::Representation(..) | YamlData::BadValue => {
            bad("this value cannot be read as null, bool, integer, float or string")
        }
    }
}

fn key_of(path: &[String]) -> Option<String> {
    if path.is_empty() { None } else { Some(path.join(".")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Result<YamlDoc, ConfigError> {
        parse(Path::new("t.yaml"), text)
    }

    #[test]
    fn yaml_1_2_numbers_and_positions() {
        let d = doc("train:\n  learning_rate: 1e-6\n  epochs: 3\n").unwrap();
        assert_eq!(d.value["train"]["learning_rate"], serde_json::json!(1e-6));
        assert_eq!(d.value["train"]["epochs"], serde_json::json!(3));
        let p = vec!["train".to_string(), "epochs".to_string()];
        assert_eq!((d.map.key(&p).line, d.map.key(&p).column), (3, 3));
        assert_eq!((d.map.value(&p).line, d.map.value(&p).column), (3, 11));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = doc("a: [1, 2\nb: 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.yaml:"), "{text}");
        assert!(text.contains("invalid YAML"), "{text}");
    }

    #[test]
    fn duplicate_keys_rejected() {
        let err = doc("a: 1\na: 2\n").unwrap_err().to_string();
        assert!(err.contains("t.yaml:2:1") && err.contains("duplicate"), "{err}");
    }

    #[test]
    fn aliases_resolve_and_nan_is_rejected_with_position() {
        assert_eq!(doc("a: &x 1\nb: *x\n").unwrap().value, serde_json::json!({"a": 1, "b": 1}));
        let err = doc("a: 1\nc: .nan\nd: !custom 3\n").unwrap_err();
        let lines: Vec<_> = err.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("t.yaml:2:4: key `c`: invalid YAML: infinite and NaN"), "{lines:?}");
        assert!(lines[1].starts_with("t.yaml:3:4: key `d`: invalid YAML: tags"), "{lines:?}");
        // W&B's docs write `!!float 1e-6` for YAML 1.1 parsers; the core tag still works.
        assert_eq!(doc("lr: !!float 1e-6\n").unwrap().value, serde_json::json!({"lr": 1e-6}));
    }

    #[test]
    fn empty_file_is_empty_mapping() {
        assert_eq!(doc("").unwrap().value, serde_json::json!({}));
        assert!(doc("---\na: 1\n---\nb: 2\n").is_err());
    }
}
