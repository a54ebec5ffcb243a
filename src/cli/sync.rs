//! `dbsweep sync [RUN_ID|SWEEP]`: sends what runs spooled for Weights & Biases (offline mode,
//! a server that was unreachable, a process killed before its data went out) to the server
//! that `WANDB_BASE_URL` and `WANDB_API_KEY` (or `~/.netrc`) name.
//!
//! Runs already delivered cost nothing (no request, no key needed). A run that fails is
//! reported and the others still sync; the command then fails with the first error.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Error;
use crate::store::{DB_FILE, Store, StoreError};
use crate::tracking::TrackingError;
use crate::tracking::wandb::{self, SPOOL_DIR, SyncOptions};

/// The runs `target` names, as `(run id, run folder)`: the run with that id, else the runs of
/// the sweep with that id or name, else (no target) every run folder under `root` with a spool.
fn runs(root: &Path, target: Option<&str>) -> Result<Vec<(String, PathBuf)>, Error> {
    let runs_dir = root.join("runs");
    let folder = |id: &str| (id.to_string(), runs_dir.join(id));
    let Some(target) = target else {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&runs_dir) {
            for entry in entries.flatten() {
                if entry.path().join(SPOOL_DIR).is_dir() {
                    found.push(folder(&entry.file_name().to_string_lossy()));
                }
            }
        }
        found.sort();
        return Ok(found);
    };
    if !target.contains(['/', '\\']) && runs_dir.join(target).is_dir() {
        return Ok(vec![folder(target)]);
    }
    let not_found = |hint| StoreError::NotFound { what: "run or sweep", id: target.to_string(), hint };
    let Some(store) = Store::open_existing(&root.join(DB_FILE))? else { return Err(not_found(None).into()) };
    let sweep = match store.sweep(target) {
        Ok(sweep) => sweep,
        Err(StoreError::NotFound { hint, .. }) => return Err(not_found(hint).into()),
        Err(e) => return Err(e.into()),
    };
    Ok(store.sweep_runs(&sweep.id)?.iter().map(|r| folder(&r.id)).collect())
}

/// Syncs the runs `target` names (see [`runs`]), one line per run on `out`.
pub fn sync(root: &Path, target: Option<&str>, env: &[(String, String)], out: &mut dyn Write) -> Result<(), Error> {
    let runs = runs(root, target)?;
    if runs.is_empty() {
        writeln!(out, "nothing spooled for W&B under {}", root.join("runs").display())?;
        return Ok(());
    }
    let mut first_error = None;
    let mut not_delivered = 0;
    for (run_id, run_dir) in runs {
        let result = wandb::pending(&run_dir).and_then(|pending| {
            if pending.entries == 0 {
                return Ok(None);
            }
            wandb::sync(&run_dir, env, &SyncOptions::default()).map(Some)
        });
        match result {
            Ok(None) => writeln!(out, "{run_id}: up to date")?,
            Ok(Some(report)) => {
                writeln!(
                    out,
                    "{run_id}: sent {} history rows, {} files, {} finished attempts",
                    report.rows_sent, report.files_uploaded, report.attempts_completed
                )?;
                for skipped in &report.skipped {
                    writeln!(out, "  not uploaded: {skipped}")?;
                }
                not_delivered += report.skipped.len();
            }
            Err(e) => {
                writeln!(out, "{run_id}: {e}")?;
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(Error::Tracking(TrackingError::Wandb(e))),
        // Files the server would not take: the sync did not deliver everything.
        None if not_delivered > 0 => Err(Error::Undelivered(not_delivered)),
        None => Ok(()),
    }
}
