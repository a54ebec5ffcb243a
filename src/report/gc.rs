//! Freeing disk: deleting a sweep's checkpoints except each run's best and/or last, and never
//! the checkpoint `best` chooses for the sweep.

use std::path::Path;

use serde::Serialize;

use super::compare::{self, CompareError};
use crate::store::Store;

/// What to keep of each run's checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// The checkpoint whose recorded sweep metric is best.
    pub best: bool,
    /// The newest checkpoint (the one a run resumes from).
    pub last: bool,
}

impl std::str::FromStr for Keep {
    type Err = String;

    /// `best`, `last` or `best,last`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = text.split(',').map(str::trim).collect();
        if words.iter().any(|w| !["best", "last"].contains(w)) {
            return Err(format!("`{text}`: expected best, last or best,last"));
        }
        Ok(Keep { best: words.contains(&"best"), last: words.contains(&"last") })
    }
}

/// A checkpoint `gc` deletes (or, in a dry run, would delete).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Removal {
    /// Run id.
    pub run_id: String,
    /// The checkpoint's step.
    pub step: i64,
    /// Its bytes on disk.
    pub size_bytes: i64,
}

/// Deletes (unless `dry_run`) the checkpoints of sweep `sweep` that `keep` does not keep, the
/// sweep's best checkpoint always kept; returns what was (or would be) deleted.
pub fn collect_garbage(
    store: &mut Store,
    root: &Path,
    sweep: &str,
    keep: Keep,
    dry_run: bool,
) -> Result<Vec<Removal>, CompareError> {
    let c = compare::compare(store, sweep, None, None)?;
    let sweep_best = compare::best(store, &c)?;
    let mut removed = Vec::new();
    for row in &c.rows {
        let checkpoints = store.checkpoints(&row.run_id)?;
        let last = checkpoints.last().map(|c| c.step);
        let chosen = sweep_best.as_ref().filter(|b| b.run_id == row.run_id).map(|b| b.checkpoint_step);
        let scored = checkpoints
            .iter()
            .filter_map(|ck| ck.metrics.get(&c.metric).and_then(serde_json::Value::as_f64).map(|v| (v, ck.step)));
        let own_best = c.goal.best(scored, |(v, _)| v).map(|(_, step)| step);
        for ck in &checkpoints {
            let protected = Some(ck.step) == chosen
                || (keep.last && Some(ck.step) == last)
                || (keep.best && Some(ck.step) == own_best);
            if protected {
                continue;
            }
            if !dry_run {
                let folder = root.join("runs").join(&row.run_id).join(&ck.path);
                if folder.exists() {
                    std::fs::remove_dir_all(&folder)
                        .map_err(|e| CompareError::Io { path: folder.clone(), message: e.to_string() })?;
                }
                store.remove_checkpoint(&row.run_id, ck.step)?;
            }
            removed.push(Removal { run_id: row.run_id.clone(), step: ck.step, size_bytes: ck.size_bytes });
        }
    }
    Ok(removed)
}
