//! What makes two runs the same run: their resolved configuration, with each image folder
//! replaced by the fingerprint of the images in it. Changed images are a new run, never
//! "already finished"; the same images in another folder (or on another machine) are the same
//! run, as the configuration's other settings are.
//!
//! Settings added to dbsweep after runs were first registered ([`ADDED_LATER`]) are left out of
//! the identity while they hold their defaults: a run registered by an older dbsweep keeps its
//! id (and is found finished, or resumed) after an upgrade, and a new run that uses none of the
//! new settings gets the id the older version would have given it.

use std::collections::HashMap;

use serde_json::Value;

use super::run_id::ConfigHash;
use crate::config::leaf_mut;
use crate::image_set::{DataError, ImageSet};

/// The settings that name image folders.
pub const DATA_KEYS: [&str; 2] = ["data.instance_dir", "data.class_dir"];

/// Settings (leaves or whole sections) that came after the first released schema.
pub const ADDED_LATER: [&str; 5] =
    ["evaluation", "train.method", "lora", "train.optimizer", "train.gradient_checkpointing"];

/// Whether `key` (a dotted leaf) is, or is inside, a setting of [`ADDED_LATER`].
pub fn added_later(key: &str) -> bool {
    ADDED_LATER.iter().any(|late| key == *late || key.strip_prefix(late).is_some_and(|rest| rest.starts_with('.')))
}

/// Removes from `json` (canonical) every leaf of [`ADDED_LATER`] that holds its default, except
/// the leaves in `keep` (filled in later), and the sections that become empty.
pub fn strip_late_defaults(json: &mut Value, keep: &[String]) {
    let defaults = crate::config::canonical(
        serde_json::to_value(crate::config::ExperimentConfig::default()).expect("defaults serialize"),
    );
    for late in ADDED_LATER {
        let path: Vec<&str> = late.split('.').collect();
        let (Some(value), Some(default)) = (lookup(json, &path), lookup(&defaults, &path)) else { continue };
        let mut kept = value.clone();
        prune(&mut kept, default, late, keep);
        let (parent, last) = path.split_at(path.len() - 1);
        let Some(Value::Object(map)) = leaf_mut(json, parent) else { continue };
        match kept {
            Value::Object(m) if m.is_empty() => {
                map.remove(last[0]);
            }
            Value::Null => {
                map.remove(last[0]);
            }
            other => {
                map.insert(last[0].to_string(), other);
            }
        }
    }
}

fn lookup<'a>(json: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(json, |v, k| v.get(*k))
}

/// Reduces `value` (setting `key`) to what differs from `default`: `Null` when nothing does.
fn prune(value: &mut Value, default: &Value, key: &str, keep: &[String]) {
    if keep.iter().any(|k| k == key) {
        return;
    }
    match (value, default) {
        (Value::Object(map), Value::Object(defaults)) if !keep.iter().any(|k| k == key) => {
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                let child_key = format!("{key}.{name}");
                let child = map.get_mut(&name).expect("listed");
                match defaults.get(&name) {
                    Some(d) => prune(child, d, &child_key, keep),
                    None => continue,
                }
                if child.is_null() || child.as_object().is_some_and(|m| m.is_empty()) {
                    map.remove(&name);
                }
            }
        }
        (value, default) if value == default => *value = Value::Null,
        _ => {}
    }
}

/// Fingerprints of image folders, each folder read once.
#[derive(Debug, Default)]
pub struct Fingerprints {
    by_dir: HashMap<String, Result<String, DataError>>,
}

impl Fingerprints {
    /// The fingerprint of the images in `dir`.
    pub fn of(&mut self, dir: &str) -> Result<&str, &DataError> {
        let found = self
            .by_dir
            .entry(dir.to_string())
            .or_insert_with(|| ImageSet::open(std::path::Path::new(dir)).map(|s| s.fingerprint));
        match found {
            Ok(fingerprint) => Ok(fingerprint),
            Err(e) => Err(e),
        }
    }

    /// What stands for `value` of setting `key` in an identity: the images' fingerprint for a
    /// data folder (`null` stays `null`), the value itself for any other setting.
    pub fn identity_value(&mut self, key: &str, value: &Value) -> Result<Value, DataError> {
        match value {
            Value::String(dir) if DATA_KEYS.contains(&key) => {
                Ok(Value::String(format!("images:{}", self.of(dir).map_err(Clone::clone)?)))
            }
            other => Ok(other.clone()),
        }
    }

    /// The identity of a configuration (canonical JSON) whose data folders are not among
    /// `skip` (their values are filled in later, per run): the first unreadable folder fails,
    /// with its key.
    pub fn identity(&mut self, json: &Value, skip: &[String]) -> Result<Value, (&'static str, DataError)> {
        let mut out = json.clone();
        strip_late_defaults(&mut out, skip);
        for key in DATA_KEYS.iter().filter(|k| !skip.iter().any(|s| s == *k)) {
            let path: Vec<&str> = key.split('.').collect();
            let Some(leaf) = leaf_mut(&mut out, &path) else { continue };
            *leaf = self.identity_value(key, leaf).map_err(|e| (*key, e))?;
        }
        Ok(out)
    }

    /// The identity hash of a whole configuration (canonical JSON).
    pub fn hash(&mut self, json: &Value) -> Result<ConfigHash, (&'static str, DataError)> {
        Ok(ConfigHash::of(&self.identity(json, &[])?.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &str) -> Value {
        serde_json::json!({"data": {"class_dir": null, "instance_dir": dir}, "seed": 1})
    }

    #[test]
    fn identity_follows_the_images_not_the_folder_name() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance");
        let copy = tempfile::tempdir().unwrap();
        for f in ImageSet::open(&examples).unwrap().files {
            std::fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
        }
        let mut fps = Fingerprints::default();
        let a = fps.hash(&config(&examples.display().to_string())).unwrap();
        let b = fps.hash(&config(&copy.path().display().to_string())).unwrap();
        assert_eq!(a, b, "the same images elsewhere are the same run");
        let first = ImageSet::open(copy.path()).unwrap().files[0].clone();
        std::fs::write(&first, b"other bytes").unwrap();
        let c = Fingerprints::default().hash(&config(&copy.path().display().to_string())).unwrap();
        assert_ne!(a, c, "changed images are another run");
        let err = fps.hash(&config("/nowhere/at/all")).unwrap_err();
        assert_eq!(err.0, "data.instance_dir");
    }
}
