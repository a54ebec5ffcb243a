//! Evaluation during training: at step 0 (the base model, shared by every run through the
//! cache), every `evaluation.every_steps` and at the end, the run's model is scored (see
//! [`crate::eval`]) and the scores logged as `eval/*` metrics, the per-prompt table as text and
//! the images as artifacts. The images are fixed by their seeds, so a resumed run scores
//! exactly as an uninterrupted one.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::TrainError;
use super::job::TrainJob;
use super::prepare::Setup;
use crate::eval::EvalError;
use crate::eval::evaluator::Evaluated;
use crate::image_set::hex;
use crate::store::Store;
use crate::tracking::tracker::Tracker;
use crate::tracking::{Record, now};

/// Whether the run evaluates at `step` (of `total`).
pub fn due(job: &TrainJob, step: u64, total: u64) -> bool {
    let e = &job.config.evaluation;
    e.enabled() && (step == 0 || step == total || e.every_steps.is_some_and(|n| step.is_multiple_of(n)))
}

/// Evaluates the run's model at `step` (step 0: the base model, from the shared cache) and
/// records the scores; returns the metrics for the step's checkpoint.
pub fn evaluate(
    setup: &Setup,
    step: u64,
    job: &TrainJob,
    tracker: &mut Tracker,
    store: &mut Store,
) -> Result<BTreeMap<String, f64>, TrainError> {
    let Some(evaluator) = &setup.evaluator else { return Ok(BTreeMap::new()) };
    let cfg = &job.config;
    let size = cfg.data.resolution as usize;
    let evaluated = if step == 0 {
        let cache = job.root.join("cache");
        evaluator.baseline(&setup.model, &setup.model_key, &cfg.data.class_prompt, size, &cache)?
    } else {
        let dir = job.run_dir.join("eval").join(format!("step-{step:08}"));
        evaluator.evaluate(&setup.model, &cfg.data.class_prompt, size, &dir)?
    };
    record(&evaluated, step, &cfg.data.class_prompt, &job.run_dir, &job.run_id, tracker, store)?;
    Ok(evaluated.scores.metrics)
}

/// Logs an evaluation of run `run_id` at `step`: the metrics, the per-prompt table, and each
/// image as an artifact (paths relative to `run_dir` when inside it; `class_prompt` made the
/// PRES images).
pub fn record(
    evaluated: &Evaluated,
    step: u64,
    class_prompt: &str,
    run_dir: &Path,
    run_id: &str,
    tracker: &mut Tracker,
    store: &mut Store,
) -> Result<(), TrainError> {
    let wall_time = now();
    for (key, value) in &evaluated.scores.metrics {
        tracker.emit(Record::Scalar { key: key.clone(), step, value: *value, wall_time })?;
    }
    tracker.emit(Record::Text { key: "eval/per_prompt".into(), step, text: evaluated.scores.table(), wall_time })?;
    let prompts = evaluated.scores.per_prompt.iter().map(|p| p.prompt.as_str());
    let class = std::iter::once((&evaluated.images.class, class_prompt));
    for (k, (files, prompt)) in evaluated.images.by_prompt.iter().zip(prompts).chain(class).enumerate() {
        for (i, file) in files.iter().enumerate() {
            let read = std::fs::read(file);
            let bytes = read.map_err(|e| EvalError::Io { path: file.clone(), message: e.to_string() })?;
            let sha = hex(&Sha256::digest(&bytes));
            let rel = file.strip_prefix(run_dir).unwrap_or(file).display().to_string();
            let for_prior = k == evaluated.images.by_prompt.len();
            let meta = json!({"prompt": prompt, "image": i, "class_prompt": for_prior, "shared": evaluated.cached});
            store.add_artifact(run_id, Some(step as i64), "eval_image", &rel, &sha, &meta.to_string())?;
        }
    }
    tracker.publish_metrics()?;
    Ok(())
}
