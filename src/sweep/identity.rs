//! What makes two runs the same run: their resolved configuration, with each image folder
//! replaced by the fingerprint of the images in it. Changed images are a new run, never
//! "already finished"; the same images in another folder (or on another machine) are the same
//! run, as the configuration's other settings are.

use std::collections::HashMap;

use serde_json::Value;

use super::run_id::ConfigHash;
use crate::config::leaf_mut;
use crate::image_set::{DataError, ImageSet};

/// The settings that name image folders.
pub const DATA_KEYS: [&str; 2] = ["data.instance_dir", "data.class_dir"];

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
