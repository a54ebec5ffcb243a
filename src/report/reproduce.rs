//! Reproducing a run from the store alone: the same resolved configuration registered as a
//! new run linked to the original (`reproduced_from`), after checking that its images did not
//! change; then, optionally, every metric compared step by step.

use std::path::PathBuf;

use crate::config::ExperimentConfig;
use crate::image_set::ImageSet;
use crate::store::{CodeVersion, Store, StoreError};

/// Why a run cannot be reproduced.
#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    /// The store failed, or lacks the run.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The images the run trained on changed since.
    #[error(
        "the {set} images in `{dir}` no longer match run {run}'s fingerprint ({recorded}); pass --allow-data-change to reproduce anyway"
    )]
    DataChanged {
        /// The run.
        run: String,
        /// `instance` or `class`.
        set: String,
        /// The folder.
        dir: PathBuf,
        /// The fingerprint the run recorded.
        recorded: String,
    },
}

impl ReproduceError {
    /// Whether the error is the user's (an unknown run, changed data).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ReproduceError::Store(e) => e.is_bad_input(),
            ReproduceError::DataChanged { .. } => true,
        }
    }
}

/// A reproduction registered and ready to train.
#[derive(Clone, Debug)]
pub struct Reproduction {
    /// The new run's id.
    pub run_id: String,
    /// Its configuration: the original's.
    pub config: ExperimentConfig,
    /// Set when another dbsweep version made the original (results may differ).
    pub code_warning: Option<String>,
}

/// Registers a reproduction of run `original`, unless its images changed (and
/// `allow_data_change` is not given).
pub fn register(store: &mut Store, original: &str, allow_data_change: bool) -> Result<Reproduction, ReproduceError> {
    let record = store.run(original)?;
    let config = store.run_config(original)?;
    let sets = [("instance", Some(&config.data.instance_dir)), ("class", config.data.class_dir.as_ref())];
    for (set, dir) in sets {
        let (Some(dir), Some(recorded)) = (dir, record.data_fingerprints.get(set)) else { continue };
        let dir = PathBuf::from(dir);
        let now = ImageSet::open(&dir).map(|s| s.fingerprint).unwrap_or_else(|e| e.to_string());
        if &now != recorded && !allow_data_change {
            return Err(ReproduceError::DataChanged {
                run: original.into(),
                set: set.into(),
                dir,
                recorded: recorded.clone(),
            });
        }
    }
    let code = CodeVersion::current();
    let code_warning = (code != record.code_version)
        .then(|| format!("run {original} was made by {}, this is {code}; results may differ", record.code_version));
    let run_id = store.register_reproduction(original, &code)?;
    Ok(Reproduction { run_id, config, code_warning })
}

/// How a reproduction's metrics compare with the original's.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every point of every metric is identical.
    Identical {
        /// Points compared.
        points: usize,
    },
    /// A metric was logged at other steps (or a different number of times).
    Misaligned {
        /// The metric.
        key: String,
        /// Its points in the original.
        original: usize,
        /// Its points in the reproduction.
        reproduced: usize,
    },
    /// Some values differ.
    Differs {
        /// The largest absolute difference.
        deviation: f64,
        /// The metric where it is.
        key: String,
        /// Its step.
        step: i64,
        /// Points compared.
        points: usize,
    },
}

/// The comparison of a reproduction with the original.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// The metrics' verdict.
    pub verdict: Verdict,
    /// Whether the reproduction trained on other class images than the original.
    pub class_images_differ: bool,
}

/// Compares every metric of `reproduced` with `original`, step by step (`data/*` points
/// describe what an attempt found in the caches, not training, and are left out).
pub fn verify(store: &Store, original: &str, reproduced: &str) -> Result<Verification, StoreError> {
    let a_record = store.run(original)?;
    let b_record = store.run(reproduced)?;
    let class_images_differ = a_record
        .data_fingerprints
        .get("class")
        .is_some_and(|class| b_record.data_fingerprints.get("class") != Some(class));
    let mut worst: Option<(f64, String, i64)> = None;
    let mut points = 0;
    for m in a_record.metrics.iter().filter(|m| !m.key.starts_with("data/")) {
        let a = store.metric_series(original, &m.key)?;
        let b = store.metric_series(reproduced, &m.key)?;
        if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
            let verdict = Verdict::Misaligned { key: m.key.clone(), original: a.len(), reproduced: b.len() };
            return Ok(Verification { verdict, class_images_differ });
        }
        for (x, y) in a.iter().zip(&b) {
            points += 1;
            let d = (x.1 - y.1).abs();
            if d > 0.0 && worst.as_ref().is_none_or(|w| d > w.0) {
                worst = Some((d, m.key.clone(), x.0));
            }
        }
    }
    let verdict = match worst {
        None => Verdict::Identical { points },
        Some((deviation, key, step)) => Verdict::Differs { deviation, key, step, points },
    };
    Ok(Verification { verdict, class_images_differ })
}
