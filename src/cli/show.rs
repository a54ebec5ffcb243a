//! `dbsweep show RUN_ID`: the whole lineage record of one run, and for a run a bayes sweep
//! proposed, how and from what.

use std::io::Write;
use std::path::Path;

use super::{Error, table};
use crate::store::{Store, StoreError};
use crate::tracking::wandb;

/// Prints everything the store knows about `run_id`.
pub fn show(db: &Path, run_id: &str, as_json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let Some(store) = Store::open_read_only(db)? else {
        return Err(StoreError::NotFound { what: "run", id: run_id.into(), hint: None }.into());
    };
    let rec = store.run(run_id)?;
    if as_json {
        super::print_json(out, &rec)?;
        return Ok(());
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "run {}  status {}  attempt {}", rec.id, rec.status, rec.attempt)?;
    writeln!(out, "config hash  {}", rec.config_hash)?;
    writeln!(out, "seed         {}", rec.seed)?;
    writeln!(out, "code         {}", rec.code_version)?;
    let sweeps: Vec<String> = rec.sweeps.iter().map(|s| format!("{} #{}", s.sweep_id, s.position)).collect();
    writeln!(out, "sweeps       {}", sweeps.join(", "))?;
    writeln!(out, "parent       {}", opt(&rec.parent_run_id))?;
    writeln!(out, "reproduces   {}", opt(&rec.reproduced_from))?;
    writeln!(out, "host/device  {} / {}", opt(&rec.host), opt(&rec.device))?;
    writeln!(out, "created      {}  started {}  ended {}", rec.created_at, opt(&rec.started_at), opt(&rec.ended_at))?;
    if let Some(error) = &rec.error {
        writeln!(out, "error        {error} (exit code {})", rec.exit_code.map_or("-".into(), |c| c.to_string()))?;
    }
    let run_dir = db.parent().unwrap_or(Path::new(".")).join("runs").join(&rec.id);
    let pending = wandb::pending(&run_dir).map_or(0, |p| p.entries);
    if pending > 0 {
        writeln!(out, "W&B          {pending} entries spooled, not delivered: `dbsweep sync {}` sends them", rec.id)?;
    }
    for p in &rec.proposals {
        writeln!(out, "proposed     by sweep {} at #{}: {}", p.sweep_id, p.position, p.description)?;
        let metric = p.metric.as_deref().unwrap_or("the sweep metric");
        let observed: Vec<String> = p.observed.iter().map(|o| format!("{} {}", o.run_id, o.value)).collect();
        let list = |ids: &[String]| if ids.is_empty() { "none".to_string() } else { ids.join(", ") };
        writeln!(
            out,
            "  learned from {} result(s), {metric} ({} of each run): {}",
            observed.len(),
            p.metric_use,
            list(&observed)
        )?;
        writeln!(out, "  without a result yet (counted as the worst): {}", list(&p.pending))?;
        writeln!(out, "  failed or without the metric (only avoided): {}", list(&p.excluded))?;
    }
    writeln!(out, "\nsettings that are not defaults:")?;
    let headers: Vec<String> = ["KEY", "VALUE", "FROM", "WHERE"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = rec
        .params
        .iter()
        .map(|p| {
            vec![
                p.key.clone(),
                table::cell(&p.value),
                if p.swept { "sweep".into() } else { p.source.clone() },
                p.detail.clone(),
            ]
        })
        .collect();
    write!(out, "{}", table::render(&headers, &rows))?;
    if !rec.data_fingerprints.is_empty() {
        writeln!(out, "\ndata:")?;
        for (name, hash) in &rec.data_fingerprints {
            writeln!(out, "  {name}  {hash}")?;
        }
    }
    if !rec.metrics.is_empty() {
        writeln!(out, "\nmetrics:")?;
        let headers: Vec<String> = ["KEY", "POINTS", "LAST STEP", "LAST", "MIN", "MAX"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> = rec
            .metrics
            .iter()
            .map(|m| {
                vec![
                    m.key.clone(),
                    m.points.to_string(),
                    m.last_step.to_string(),
                    m.last.to_string(),
                    m.min.to_string(),
                    m.max.to_string(),
                ]
            })
            .collect();
        write!(out, "{}", table::render(&headers, &rows))?;
    }
    if !rec.checkpoints.is_empty() {
        writeln!(out, "\ncheckpoints:")?;
        for (step, path) in &rec.checkpoints {
            writeln!(out, "  step {step}  {path}")?;
        }
    }
    writeln!(out, "\nhistory:")?;
    for e in &rec.events {
        let from = e.from.map_or("-".to_string(), |s| s.to_string());
        writeln!(out, "  {}  {from} -> {}  {}", e.at, e.to, e.reason)?;
    }
    writeln!(out, "\nresolved config: `dbsweep show {} --json` (field `config`)", rec.id)?;
    Ok(())
}
