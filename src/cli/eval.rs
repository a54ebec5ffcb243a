//! `dbsweep eval TARGET [--set evaluation.KEY=VALUE]`: score checkpoints that already exist.

use std::io::Write;
use std::path::Path;

use super::{Error, open_store, print_json, table};
use crate::model::device;
use crate::report::checkpoint_ref;
use crate::report::evaluate::{self, Scored};

/// Scores every checkpoint `target` names (with the base model of each run when the target is
/// a sweep) and prints the scores.
pub fn eval(
    root: &Path,
    target: &str,
    overrides: &[String],
    env: &[(String, String)],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if let Some(other) = overrides.iter().find(|o| !o.trim_start().starts_with("evaluation.")) {
        return Err(Error::Usage(format!("--set {other}: `dbsweep eval` takes evaluation.* settings only")));
    }
    let visible = env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.as_str());
    let choice = device::choose(visible)?;
    if let Some(warning) = &choice.warning {
        eprintln!("warning: {warning}");
    }
    let mut store = open_store(root, "eval")?;
    let refs = evaluate::targets(&store, root, target)?;
    let whole_sweep = !checkpoint_ref::is_reference(target);
    if refs.is_empty() {
        return Err(Error::Usage(format!("{target}: no checkpoint to score (the sweep's runs have none yet)")));
    }
    let mut all: Vec<Scored> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let settings = evaluate::settings(&r.config, overrides)?;
        if !settings.enabled() {
            return Err(Error::Usage(format!(
                "run {}: no evaluation model: set evaluation.clip_model and/or evaluation.dino_model (in the run's \
                 settings, or here with --set)",
                r.run_id
            )));
        }
        // Scoring a sweep scores the base model too, once per run (from the shared cache after
        // the first), so its point stands beside the runs'.
        let with_base = whole_sweep && refs[..i].iter().all(|earlier| earlier.run_id != r.run_id);
        eprintln!("scoring {} at step {}", r.run_id, r.step);
        all.extend(evaluate::score(&mut store, root, r, &settings, with_base, &choice.device)?);
    }
    if json {
        return print_json(out, &all);
    }
    let keys: Vec<String> = crate::eval::METRICS
        .iter()
        .filter(|k| all.iter().any(|s| s.metrics.contains_key(**k)))
        .map(|k| k.to_string())
        .collect();
    let mut headers = vec!["RUN ID".to_string(), "STEP".to_string()];
    headers.extend(keys.iter().cloned());
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let mut row = vec![s.run_id.clone(), s.step.to_string()];
            row.extend(keys.iter().map(|k| s.metrics.get(k).map_or("-".into(), |v| format!("{v:.6}"))));
            row
        })
        .collect();
    write!(out, "{}", table::render(&headers, &rows))?;
    Ok(())
}
