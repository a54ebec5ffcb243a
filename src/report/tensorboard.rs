//! A sweep's TensorBoard folder: `ROOT/sweeps/SWEEP_ID/tensorboard/`, with one sub-folder per
//! run (named by its swept values and id) holding links to the run's event files, the HParams
//! experiment summary listing the swept hyperparameters and the metrics, and the
//! custom-scalars layout from `dashboards/tensorboard-layout.json`.
//!
//! Runs keep their event files in their own folders (a run can belong to several sweeps);
//! TensorBoard reads the linked files, including what a still-running run appends. The folder
//! is rebuilt on every call, so event files a resumed run started since are picked up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::store::{Store, StoreError};
use crate::tracking::TrackingError;
use crate::tracking::tensorboard::{ExperimentSummary, Layout, write_experiment, write_layout};

/// Why the folder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SweepBoardError {
    /// The store failed or lacks the sweep.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Writing the summary, the layout or a link failed.
    #[error("{0}")]
    Tracking(#[from] TrackingError),
    /// A folder or link could not be made.
    #[error("`{path}`: {message}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn io(path: &Path, e: std::io::Error) -> SweepBoardError {
    SweepBoardError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// A run's folder name: its swept values and id, without characters TensorBoard or shells
/// mind.
fn run_name(swept: &BTreeMap<String, Value>, id: &str) -> String {
    let values: Vec<String> = swept
        .iter()
        .map(|(k, v)| {
            format!("{}={}", k.rsplit('.').next().unwrap_or(k), v.as_str().map_or_else(|| v.to_string(), String::from))
        })
        .collect();
    let name = format!("{}_{id}", values.join("+"));
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "=+._-".contains(c) { c } else { '_' }).collect()
}

/// Builds (or rebuilds) the TensorBoard folder of sweep `sweep` under `root`, with the layout
/// read from `layout_file` when it exists (else the built-in one). Returns the folder.
pub fn build(store: &Store, root: &Path, sweep: &str, layout_file: &Path) -> Result<PathBuf, SweepBoardError> {
    let summary = store.sweep(sweep)?;
    let dir = root.join("sweeps").join(&summary.id).join("tensorboard");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let runs = store.sweep_runs(&summary.id)?;
    for run in &runs {
        let run_dir = dir.join(run_name(&run.swept, &run.id));
        std::fs::create_dir_all(&run_dir).map_err(|e| io(&run_dir, e))?;
        let source = root.join("runs").join(&run.id);
        let Ok(entries) = std::fs::read_dir(&source) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().contains("tfevents") {
                let target = std::fs::canonicalize(entry.path()).map_err(|e| io(&entry.path(), e))?;
                std::os::unix::fs::symlink(&target, run_dir.join(&name)).map_err(|e| io(&run_dir, e))?;
            }
        }
    }
    let mut metrics: Vec<String> = summary.metric.iter().cloned().collect();
    for m in ["val/loss", "val/prior_drift", "train/loss"] {
        if !metrics.iter().any(|x| x == m) {
            metrics.push(m.to_string());
        }
    }
    let experiment =
        ExperimentSummary::from_runs(&summary.id, runs.iter().map(|r| &r.swept), metrics, crate::tracking::now());
    write_experiment(&dir, &experiment)?;
    let layout = if layout_file.exists() { Layout::from_file(layout_file)? } else { Layout::builtin()? };
    write_layout(&dir, &layout, crate::tracking::now())?;
    Ok(dir)
}
