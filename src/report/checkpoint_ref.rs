//! Naming a checkpoint: `best:SWEEP`, `RUN_ID` (its newest checkpoint) or `RUN_ID@STEP`.
//!
//! Every checkpoint a reference resolves to is verified first: each of its files against its
//! manifest, and the manifest against the sha256 the store recorded when it was written. A
//! reader (`sample`, `export`, `eval`) never uses a corrupt or swapped checkpoint.

use std::path::{Path, PathBuf};

use super::compare::{self, CompareError};
use crate::config::ExperimentConfig;
use crate::store::Store;
use crate::train::checkpoint::{self, CheckpointError};

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
    /// The checkpoint's files do not match its manifest, or its manifest the store's record.
    #[error("{0}; the checkpoint is corrupt: choose another step (`dbsweep show RUN_ID` lists them)")]
    Corrupt(#[from] CheckpointError),
}

impl RefError {
    /// Whether the error is the user's (an unknown run, sweep, metric or step, or a corrupt
    /// checkpoint), rather than the store failing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RefError::Compare(CompareError::Store(e)) => e.is_bad_input(),
            _ => true,
        }
    }
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
    let config = store.run_config(&run_id).map_err(CompareError::from)?;
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
    checkpoint::verify_recorded(&folder, &chosen.sha256)?;
    Ok(CheckpointRef { run_id, step: chosen.step, folder, config, rule })
}

/// Whether `text` is a checkpoint reference rather than a model folder.
pub fn is_reference(text: &str) -> bool {
    text.starts_with("best:") || crate::sweep::looks_like_run_id(text.split('@').next().unwrap_or(text))
}
