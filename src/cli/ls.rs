//! `dbsweep ls`: sweeps and their runs, as the store has them now.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::{Error, table};
use crate::store::{RunRow, Store, SweepSummary};
use crate::tracking::wandb;

/// Lists every sweep (or only `only`) with its runs.
pub fn ls(db: &Path, only: Option<&str>, as_json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let Some(store) = Store::open_read_only(db)? else {
        if as_json {
            writeln!(out, "[]")?;
        } else {
            writeln!(out, "no sweeps yet in {} (register one with `dbsweep submit SWEEP.yaml`)", db.display())?;
        }
        return Ok(());
    };
    let sweeps: Vec<SweepSummary> = match only {
        Some(key) => vec![store.sweep(key)?],
        None => store.sweeps()?,
    };
    // Runs outside sweeps (`dbsweep train`, reproductions) are listed too, after the sweeps.
    let loose = if only.is_none() { store.runs_outside_sweeps()? } else { Vec::new() };
    let mut docs = Vec::new();
    for (i, sweep) in sweeps.iter().enumerate() {
        let runs = store.sweep_runs(&sweep.id)?;
        if as_json {
            docs.push(json!({"sweep": sweep, "runs": runs}));
            continue;
        }
        let counts: Vec<String> = sweep.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "sweep {} ({}, {} runs: {}) from {}, created {}",
            sweep.id,
            sweep.method,
            sweep.total,
            counts.join(", "),
            sweep.file,
            sweep.created_at
        )?;
        let keys: Vec<String> = runs.first().map(|r| r.swept.keys().cloned().collect()).unwrap_or_default();
        let mut headers = vec!["#".to_string(), "RUN ID".to_string(), "STATUS".to_string(), "ATTEMPT".to_string()];
        headers.extend(keys.iter().cloned());
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                let mut row = vec![r.position.to_string(), r.id.clone(), r.status.to_string(), r.attempt.to_string()];
                row.extend(keys.iter().map(|k| r.swept.get(k).map(table::cell).unwrap_or_default()));
                row
            })
            .collect();
        write!(out, "{}", table::render(&headers, &rows))?;
    }
    if !loose.is_empty() && !as_json {
        if !sweeps.is_empty() {
            writeln!(out)?;
        }
        writeln!(out, "runs outside sweeps ({}):", loose.len())?;
        let headers = ["RUN ID", "STATUS", "ATTEMPT"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> =
            loose.iter().map(|r| vec![r.id.clone(), r.status.to_string(), r.attempt.to_string()]).collect();
        write!(out, "{}", table::render(&headers, &rows))?;
    }
    if !as_json {
        let root = db.parent().unwrap_or(Path::new("."));
        let ids = docs_ids(&store, &sweeps, &loose)?;
        let waiting = ids.iter().filter(|id| wandb::pending(&root.join("runs").join(id)).is_ok_and(|p| p.entries > 0));
        let waiting: Vec<&String> = waiting.collect();
        if !waiting.is_empty() {
            writeln!(out, "\n{} run(s) have W&B data spooled, not delivered: `dbsweep sync` sends it", waiting.len())?;
        }
    }
    if as_json {
        if !loose.is_empty() {
            docs.push(json!({"sweep": null, "runs": loose}));
        }
        super::print_json(out, &docs)?;
    }
    Ok(())
}

/// The ids of every run listed: those of `sweeps` and the runs outside sweeps.
fn docs_ids(store: &Store, sweeps: &[SweepSummary], loose: &[RunRow]) -> Result<Vec<String>, Error> {
    let mut ids: Vec<String> = loose.iter().map(|r| r.id.clone()).collect();
    for sweep in sweeps {
        ids.extend(store.sweep_runs(&sweep.id)?.into_iter().map(|r| r.id));
    }
    Ok(ids)
}
