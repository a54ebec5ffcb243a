//! `dbsweep eval`: scoring checkpoints that already exist (a sweep run without evaluation, or
//! with other settings), recorded exactly as in-run evaluation records them: `eval/*` metrics
//! at the checkpoint's step in the run's journal, the store and TensorBoard, the per-prompt
//! table, the images as artifacts, and the metrics added to the checkpoint's record so `best`
//! can choose checkpoints by them. The same checkpoint and settings give the numbers the run
//! itself recorded.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;

use super::checkpoint_ref::{self, CheckpointRef, RefError};
use super::compare::CompareError;
use crate::config::yaml::YamlDoc;
use crate::config::{EvaluationConfig, ExperimentConfig, Layers, SourceMap};
use crate::eval::EvalError;
use crate::eval::evaluator::{Evaluated, Evaluator};
use crate::image_set::ImageSet;
use crate::model::attention::AttentionMode;
use crate::model::builtin;
use crate::model::pipeline::StableDiffusion;
use crate::store::Store;
use crate::tracking::tracker::Tracker;
use crate::train::TrainError;
use crate::train::evaluate::record;
use crate::train::trainable::apply_checkpoint;

/// Why checkpoints could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The reference names no checkpoint, or a corrupt one.
    #[error("{0}")]
    Reference(#[from] RefError),
    /// The `--set` overrides are not valid evaluation settings.
    #[error("{0}")]
    Settings(#[from] crate::config::ConfigError),
    /// Scoring or recording failed.
    #[error("{0}")]
    Train(#[from] TrainError),
}

impl EvaluateError {
    /// Whether the error is the user's.
    pub fn is_bad_input(&self) -> bool {
        match self {
            EvaluateError::Reference(e) => e.is_bad_input(),
            EvaluateError::Settings(_) => true,
            EvaluateError::Train(e) => e.is_bad_input(),
        }
    }
}

impl From<EvalError> for EvaluateError {
    fn from(e: EvalError) -> Self {
        EvaluateError::Train(TrainError::Eval(e))
    }
}

impl From<CompareError> for EvaluateError {
    fn from(e: CompareError) -> Self {
        EvaluateError::Reference(RefError::Compare(e))
    }
}

/// What one checkpoint scored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Scored {
    /// Run id.
    pub run_id: String,
    /// The step (0: the base model).
    pub step: i64,
    /// The metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// The checkpoints `target` names: `RUN_ID` (its newest), `RUN_ID@STEP`, `best:SWEEP`, or a
/// sweep (id or name: every checkpoint of every run).
pub fn targets(store: &Store, root: &Path, target: &str) -> Result<Vec<CheckpointRef>, EvaluateError> {
    if checkpoint_ref::is_reference(target) {
        return Ok(vec![checkpoint_ref::resolve(store, root, target)?]);
    }
    let sweep = store.sweep(target).map_err(CompareError::from)?;
    let mut refs = Vec::new();
    for run in store.sweep_runs(&sweep.id).map_err(CompareError::from)? {
        for c in store.checkpoints(&run.id).map_err(CompareError::from)? {
            refs.push(checkpoint_ref::resolve(store, root, &format!("{}@{}", run.id, c.step))?);
        }
    }
    Ok(refs)
}

/// `config`'s evaluation settings with the `--set evaluation.KEY=VALUE` `overrides`, checked
/// as every setting is.
pub fn settings(config: &ExperimentConfig, overrides: &[String]) -> Result<EvaluationConfig, EvaluateError> {
    let json = serde_json::to_value(config).expect("config serializes");
    let doc = YamlDoc { value: json, map: SourceMap::new(Path::new("(the run's stored settings)")) };
    let resolved = Layers::new().file(&doc, &[]).flags(overrides).resolve()?;
    Ok(resolved.config.evaluation)
}

/// Scores checkpoint `r` (and, when `with_base`, the base model at step 0) with `settings`
/// on `device`, recording each into its run.
pub fn score(
    store: &mut Store,
    root: &Path,
    r: &CheckpointRef,
    settings: &EvaluationConfig,
    with_base: bool,
    device: &Device,
) -> Result<Vec<Scored>, EvaluateError> {
    let cfg = &r.config;
    let folder = builtin::resolve(&cfg.model.pretrained, &root.join("models")).map_err(TrainError::Model)?;
    let mut model = StableDiffusion::load(&folder, device, AttentionMode::Full).map_err(TrainError::Model)?;
    let instance = ImageSet::open(Path::new(&cfg.data.instance_dir)).map_err(TrainError::Data)?;
    let evaluator = Evaluator::new(settings, &instance, &root.join("models"), device)?;
    let size = cfg.data.resolution as usize;
    let run_dir = root.join("runs").join(&r.run_id);
    let mut scored = Vec::new();
    if with_base {
        let key = crate::train::cache::model_key(&folder).map_err(TrainError::Cache)?;
        let base = evaluator.baseline(&model, &key, &cfg.data.class_prompt, size, &root.join("cache"))?;
        scored.push(keep(store, r, &run_dir, 0, &base, cfg)?);
    }
    apply_checkpoint(&mut model, &r.folder, cfg, 1.0).map_err(TrainError::Checkpoint)?;
    let dir = run_dir.join("eval").join(format!("step-{:08}", r.step));
    let evaluated = evaluator.evaluate(&model, &cfg.data.class_prompt, size, &dir)?;
    scored.push(keep(store, r, &run_dir, r.step, &evaluated, cfg)?);
    Ok(scored)
}

/// Records `evaluated` as run `r`'s evaluation at `step`.
fn keep(
    store: &mut Store,
    r: &CheckpointRef,
    run_dir: &Path,
    step: i64,
    evaluated: &Evaluated,
    cfg: &ExperimentConfig,
) -> Result<Scored, EvaluateError> {
    let mut tracker = Tracker::open(run_dir, store.path(), &r.run_id, cfg.tracking.tensorboard, None, false)
        .map_err(TrainError::Tracking)?;
    record(evaluated, step as u64, &cfg.data.class_prompt, run_dir, &r.run_id, &mut tracker, store)?;
    tracker.flush().map_err(TrainError::Tracking)?;
    let metrics = evaluated.scores.metrics.clone();
    if step > 0 {
        store.add_checkpoint_metrics(&r.run_id, step, &metrics).map_err(TrainError::Store)?;
    }
    Ok(Scored { run_id: r.run_id.clone(), step, metrics })
}
