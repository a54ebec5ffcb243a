//! After the sweep: `compare`, `best`, `export`, `tensorboard`, `gc` and `reproduce`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Error, print_json, table};
use crate::model::builtin;
use crate::report::compare::{self, CompareError, Comparison};
use crate::report::export;
use crate::report::reference::{self, RefError};
use crate::store::{CodeVersion, Store, StoreError};
use crate::train::data::ImageSet;

fn open(root: &Path) -> Result<Store, Error> {
    let db = root.join(crate::store::DB_FILE);
    Store::open_existing(&db)?.ok_or_else(|| {
        Error::Store(StoreError::NotFound { what: "lineage store", id: db.display().to_string(), hint: None })
    })
}

fn compare_error(e: CompareError) -> Error {
    match e {
        CompareError::Store(e) => Error::Store(e),
        other => Error::Usage(other.to_string()),
    }
}

fn ref_error(e: RefError) -> Error {
    match e {
        RefError::Compare(e) => compare_error(e),
        other => Error::Usage(other.to_string()),
    }
}

fn number(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.6}"))
}

/// Output format of `compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

/// `dbsweep compare SWEEP`.
pub fn compare_cmd(
    root: &Path,
    sweep: &str,
    metric: Option<&str>,
    sort: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let store = open(root)?;
    let c: Comparison = compare::compare(&store, sweep, metric, None).map_err(compare_error)?;
    let rows: Vec<&compare::Row> = if sort { c.sorted() } else { c.rows.iter().collect() };
    if format == Format::Json {
        let doc = serde_json::json!({"sweep_id": c.sweep_id, "metric": c.metric, "goal": c.goal, "rows": rows});
        return print_json(out, &doc);
    }
    let mut headers = vec!["RUN ID".to_string()];
    headers.extend(c.keys.iter().cloned());
    headers.extend(["STATUS", "FINAL", "BEST", "BEST STEP", "STEPS", "WALL S", "GPU H"].map(String::from));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.run_id.clone()];
            row.extend(c.keys.iter().map(|k| r.swept.get(k).map(table::cell).unwrap_or_default()));
            row.extend([
                r.status.to_string(),
                number(r.final_value),
                number(r.best_value),
                r.best_step.map_or("-".into(), |s| s.to_string()),
                r.steps.to_string(),
                format!("{:.1}", r.wall_seconds),
                format!("{:.3}", r.gpu_hours),
            ]);
            row
        })
        .collect();
    if format == Format::Csv {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
        };
        for line in std::iter::once(&headers).chain(&cells) {
            writeln!(out, "{}", line.iter().map(|s| quote(s)).collect::<Vec<_>>().join(","))?;
        }
        return Ok(());
    }
    writeln!(out, "sweep {}: {} ({})", c.sweep_id, c.metric, c.goal)?;
    write!(out, "{}", table::render(&headers, &cells))?;
    Ok(())
}

/// `dbsweep best SWEEP`.
pub fn best_cmd(
    root: &Path,
    sweep: &str,
    metric: Option<&str>,
    goal: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let store = open(root)?;
    let c = compare::compare(&store, sweep, metric, goal).map_err(compare_error)?;
    let best = compare::best(&store, &c).map_err(compare_error)?.ok_or_else(|| {
        Error::Usage(format!("no run of sweep `{}` has both `{}` and a checkpoint", c.sweep_id, c.metric))
    })?;
    if json {
        return print_json(out, &best);
    }
    writeln!(out, "best run   {} ({} = {:.6} at step {})", best.run_id, c.metric, best.value, best.step)?;
    writeln!(
        out,
        "checkpoint step {}: {}",
        best.checkpoint_step,
        root.join("runs").join(&best.run_id).join(&best.checkpoint_path).display()
    )?;
    writeln!(out, "rule       {}", best.rule)?;
    Ok(())
}

/// `dbsweep export REF --format diffusers OUT`.
pub fn export_cmd(root: &Path, reference_text: &str, out_dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let store = open(root)?;
    let r = reference::resolve(&store, root, reference_text).map_err(ref_error)?;
    let base = builtin::resolve(&r.config.model.pretrained, &root.join("models"))?;
    export::diffusers(&base, &r.folder, out_dir).map_err(|e| Error::Usage(e.to_string()))?;
    writeln!(out, "exported run {} at step {} to {}", r.run_id, r.step, out_dir.display())?;
    Ok(())
}

/// `dbsweep tensorboard SWEEP`: builds the sweep's TensorBoard folder (runs under readable
/// names, the HParams experiment summary, the custom-scalars layout) and prints the command.
pub fn tensorboard_cmd(root: &Path, sweep: &str, out: &mut dyn Write) -> Result<(), Error> {
    let store = open(root)?;
    let layout = Path::new("dashboards/tensorboard-layout.json");
    let dir = crate::report::tensorboard::build(&store, root, sweep, layout).map_err(|e| match e {
        crate::report::tensorboard::SweepBoardError::Store(e) => Error::Store(e),
        other => Error::Usage(other.to_string()),
    })?;
    writeln!(out, "tensorboard --logdir {}", dir.display())?;
    Ok(())
}

/// `dbsweep gc SWEEP --keep best,last`: deletes other checkpoints; never the one `best` returns.
pub fn gc_cmd(root: &Path, sweep: &str, keep: &str, out: &mut dyn Write) -> Result<(), Error> {
    let keep_best = keep.split(',').any(|k| k.trim() == "best");
    let keep_last = keep.split(',').any(|k| k.trim() == "last");
    if keep.split(',').any(|k| !["best", "last"].contains(&k.trim())) {
        return Err(Error::Usage(format!("--keep {keep}: expected best, last or best,last")));
    }
    let mut store = open(root)?;
    let c = compare::compare(&store, sweep, None, None).map_err(compare_error)?;
    let sweep_best = compare::best(&store, &c).map_err(compare_error)?;
    let (mut freed, mut removed) = (0i64, 0usize);
    for row in &c.rows {
        let checkpoints = store.checkpoints(&row.run_id)?;
        let last = checkpoints.last().map(|c| c.step);
        let chosen = sweep_best.as_ref().filter(|b| b.run_id == row.run_id).map(|b| b.checkpoint_step);
        let minimize = c.goal == "minimize";
        let own_best = checkpoints
            .iter()
            .filter_map(|ck| ck.metrics.get(&c.metric).and_then(serde_json::Value::as_f64).map(|v| (v, ck.step)))
            .reduce(|a, b| if (b.0 < a.0) == minimize && b.0 != a.0 { b } else { a })
            .map(|(_, step)| step);
        for ck in &checkpoints {
            let protected = Some(ck.step) == chosen
                || (keep_last && Some(ck.step) == last)
                || (keep_best && Some(ck.step) == own_best);
            if protected {
                continue;
            }
            let folder = root.join("runs").join(&row.run_id).join(&ck.path);
            if folder.exists() {
                std::fs::remove_dir_all(&folder)?;
            }
            store.remove_checkpoint(&row.run_id, ck.step)?;
            freed += ck.size_bytes;
            removed += 1;
        }
    }
    writeln!(out, "removed {removed} checkpoints, freed {:.1} MB", freed as f64 / 1e6)?;
    Ok(())
}

/// `dbsweep reproduce RUN_ID [--verify] [--allow-data-change]`: retrains a run from its stored
/// configuration as a new, linked run; with `--verify`, compares every metric step by step.
pub fn reproduce_cmd(
    root: &Path,
    run: &str,
    verify: bool,
    allow_data_change: bool,
    env: &[(String, String)],
    out: &mut dyn Write,
) -> Result<i32, Error> {
    let mut store = open(root)?;
    let original = store.run(run)?;
    let config: crate::config::ExperimentConfig = serde_json::from_value(original.config.clone())
        .map_err(|e| Error::Usage(format!("run `{run}` has a configuration this dbsweep cannot read: {e}")))?;
    let mut data_sets = vec![("instance", Some(PathBuf::from(&config.data.instance_dir)))];
    data_sets.push(("class", config.data.class_dir.as_ref().map(PathBuf::from)));
    for (name, dir) in data_sets {
        let (Some(dir), Some(recorded)) = (dir, original.data_fingerprints.get(name)) else { continue };
        let now = ImageSet::open(&dir).map(|s| s.fingerprint).unwrap_or_else(|e| e.to_string());
        if &now != recorded && !allow_data_change {
            return Err(Error::Usage(format!(
                "the {name} images in `{}` no longer match run {run}'s fingerprint ({recorded}); pass --allow-data-change to reproduce anyway",
                dir.display()
            )));
        }
    }
    let code = CodeVersion::current();
    if code != original.code_version {
        writeln!(out, "warning: run {run} was made by {}, this is {code}; results may differ", original.code_version)?;
    }
    let new_id = store.register_reproduction(run, &code)?;
    writeln!(out, "reproducing {run} as {new_id}")?;
    let status = super::train::execute(&mut store, &new_id, config, false, None, env, root, out)?;
    if status != crate::exit::OK || !verify {
        return Ok(status);
    }
    let reproduced = store.run(&new_id)?;
    let mut worst: Option<(f64, String, i64)> = None;
    let mut compared = 0;
    // `data/*` points describe the caches (what this attempt had to generate), not training.
    for m in original.metrics.iter().filter(|m| !m.key.starts_with("data/")) {
        let a = store.metric_series(run, &m.key)?;
        let b = store.metric_series(&new_id, &m.key)?;
        if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
            writeln!(out, "verify: {} has {} points in {run} and {} in {new_id}", m.key, a.len(), b.len())?;
            return Ok(crate::exit::FAILED);
        }
        for (x, y) in a.iter().zip(&b) {
            compared += 1;
            let d = (x.1 - y.1).abs();
            if d > 0.0 && worst.as_ref().is_none_or(|w| d > w.0) {
                worst = Some((d, m.key.clone(), x.0));
            }
        }
    }
    if let Some(class) = original.data_fingerprints.get("class")
        && reproduced.data_fingerprints.get("class") != Some(class)
    {
        writeln!(out, "verify: the class images differ from the original run's")?;
    }
    match worst {
        None => {
            writeln!(out, "verify: identical ({compared} metric points, every step)")?;
            Ok(crate::exit::OK)
        }
        Some((d, key, step)) => {
            writeln!(
                out,
                "verify: differs; largest deviation {d:e} in {key} at step {step} ({compared} points compared)"
            )?;
            Ok(crate::exit::FAILED)
        }
    }
}
