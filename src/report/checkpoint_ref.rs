//! Naming a checkpoint: `best:SWEEP`, `RUN_ID` (its newest checkpoint) or `RUN_ID@STEP`.

use std::path::{Path, PathBuf};

use super::compare::{self, CompareError};
use crate::config::ExperimentConfig;
use crate::store::Store;

/// A resolved checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointRef {
    /// The run.
    pub run_id: String,
    /// The checkpoint's step.
    pub step: i64,
    /// The checkpoint folder.
    pub folder: PathBuf,
    /// The run's configuration (its base model, prompts...).
    pub config: ExperimentConfig,
    /// How `best:` chose it, if it did.
    pub rule: Option<String>,
}

/// Why a reference does not name a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// The sweep or run is unknown, or the comparison failed.
    #[error("{0}")]
    Compare(#[from] CompareError),
    /// The run has no such checkpoint.
    #[error("run `{run}` has no checkpoint at step {step}; its checkpoints: {available}")]
    NoCheckpoint {
        /// Run id.
        run: String,
        /// Step asked for.
        step: String,
        /// Steps it has.
        available: String,
    },
    /// The stored configuration cannot be read by this dbsweep.
    #[error("run `{0}` has a configuration this dbsweep cannot read")]
    Config(String),
}

/// Resolves `text` against the store and the output `root`.
pub fn resolve(store: &Store, root: &Path, text: &str) -> Result<CheckpointRef, RefError> {
    let (run_id, step, rule) = if let Some(sweep) = text.strip_prefix("best:") {
        let comparison = compare::compare(store, sweep, None, None)?;
        let best = compare::best(store, &comparison)?.ok_or_else(|| RefError::NoCheckpoint {
            run: format!("best:{sweep}"),
            step: "any".into(),
            available: "none (no run with the metric has a checkpoint)".into(),
        })?;
        (best.run_id, Some(best.checkpoint_step.to_string()), Some(best.rule))
    } else {
        match text.split_once('@') {
            Some((run, step)) => (run.to_string(), Some(step.to_string()), None),
            None => (text.to_string(), None, None),
        }
    };
    let stored = store.stored_run(&run_id).map_err(CompareError::from)?;
    let config: ExperimentConfig =
        serde_json::from_str(&stored.config_json).map_err(|_| RefError::Config(run_id.clone()))?;
    let checkpoints = store.checkpoints(&run_id).map_err(CompareError::from)?;
    let available = || {
        let steps: Vec<String> = checkpoints.iter().map(|c| c.step.to_string()).collect();
        if steps.is_empty() { "none".to_string() } else { steps.join(", ") }
    };
    let chosen = match &step {
        None => checkpoints.last(),
        Some(s) => s.parse::<i64>().ok().and_then(|n| checkpoints.iter().find(|c| c.step == n)),
    };
    let Some(chosen) = chosen else {
        return Err(RefError::NoCheckpoint {
            run: run_id,
            step: step.unwrap_or_else(|| "latest".into()),
            available: available(),
        });
    };
    let folder = root.join("runs").join(&run_id).join(&chosen.path);
    Ok(CheckpointRef { run_id, step: chosen.step, folder, config, rule })
}

/// Whether `text` is a checkpoint reference rather than a model folder.
pub fn is_reference(text: &str) -> bool {
    text.starts_with("best:") || crate::sweep::looks_like_run_id(text.split('@').next().unwrap_or(text))
}
