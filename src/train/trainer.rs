//! The DreamBooth training loop of one run: prepare, then step, log, validate and checkpoint
//! until the last step or a stop request.
//!
//! Same config, seed, machine and thread count give the same loss at every step, bit for bit,
//! whether the run went through or was killed and resumed (see [`super::step`] for why, and the
//! test that kills a process mid-run).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::checkpoint::{self, TrainState};
use super::error::TrainError;
use super::evaluate;
use super::job::{Notice, TrainJob, TrainOutcome};
use super::prepare::Setup;
use super::step::{EpochOrder, StepReport};
use super::validate::validate;
use crate::store::Store;
use crate::tracking::tracker::Tracker;
use crate::tracking::wandb::{self, DeliveryStatus};
use crate::tracking::{EndStatus, Record, now};

/// Trains `job` to the end (or until stopped), resuming from its newest valid checkpoint.
pub fn train(job: &mut TrainJob, store: &mut Store) -> Result<TrainOutcome, TrainError> {
    let mut setup = Setup::prepare(job, store)?;
    let mut tracker = setup.open_tracking(job, store)?;
    let cfg = job.config.clone();
    let total = setup.schedule.total;
    let crash_at = job.crash_at_step();
    let mut order = EpochOrder::new(cfg.seed, setup.schedule.epoch_len);
    let mut step = setup.resume.start;
    let mut status = EndStatus::Success;
    if step == 0 && evaluate::due(job, 0, total) {
        evaluate::evaluate(&setup, 0, job, &mut tracker, store)?;
    }
    while step < total {
        let report = setup.step(&cfg, step, &mut order)?;
        step += 1;
        if setup.resume.scaler.is_some_and(|s| s.scale < 1.0) {
            return Err(TrainError::Settings(format!(
                "the fp16 loss scale fell below 1 at step {step}: the gradients overflow at every scale; \
                 lower train.learning_rate or use model.mixed_precision bf16 or no"
            )));
        }
        if !report.loss.is_finite() && setup.resume.scaler.is_none() {
            return Err(TrainError::Settings(format!(
                "the loss became {} at step {step}; lower train.learning_rate",
                report.loss
            )));
        }
        log_step(&mut tracker, step, &report, setup.resume.scaler.is_some())?;
        (job.notify)(Notice::Progress { step, total, loss: report.loss });
        tracker.publish_metrics()?;
        if crash_at == Some(step) {
            // Test hook: the first attempt dies like kill -9 (no flush, no cleanup) after this step.
            std::process::abort();
        }
        let stopping = job.stop.load(Ordering::SeqCst);
        let mut metrics = BTreeMap::new();
        if step % cfg.validation.every_steps == 0 || step == total {
            metrics = validate(&setup, step, job, &mut tracker, store)?;
            tracker.publish_metrics()?;
        }
        if evaluate::due(job, step, total) {
            metrics.extend(evaluate::evaluate(&setup, step, job, &mut tracker, store)?);
        }
        if step % cfg.checkpoint.every_steps == 0 || step == total || stopping {
            save_checkpoint(&mut setup, job, step, metrics, &mut tracker, store)?;
        }
        if stopping && step < total {
            status = EndStatus::Interrupted;
            break;
        }
    }
    tracker.emit(Record::End { status, wall_time: now() })?;
    tracker.flush()?;
    let wandb = tracker.finish();
    Ok(TrainOutcome {
        status,
        step,
        total_steps: total,
        class_images_generated: setup.class_images_generated,
        latents_encoded: setup.latents_encoded,
        prompts_encoded: setup.texts.computed,
        wandb_undelivered: wandb.and_then(|status| undelivered(job, &status)),
    })
}

/// What W&B still lacks of the run after its end, in words (`None` when everything went out).
fn undelivered(job: &TrainJob, status: &DeliveryStatus) -> Option<String> {
    let entries = wandb::pending(&job.run_dir).map_or(1, |p| p.entries);
    (entries > 0).then(|| {
        let why = status.last_error.as_deref().map(|e| format!(" (W&B was unreachable: {e})")).unwrap_or_default();
        format!("{entries} entries are spooled for W&B{why}; `dbsweep sync {}` sends them", job.run_id)
    })
}

/// Logs a step's scalars. An fp16 step that overflowed (and was skipped) has no finite loss
/// or norm: those are left out.
fn log_step(tracker: &mut Tracker, step: u64, report: &StepReport, scaled: bool) -> Result<(), TrainError> {
    let wall_time = now();
    let mut scalars = vec![
        ("train/loss", report.loss),
        ("train/loss_instance", report.instance_loss),
        ("train/loss_prior", report.prior_loss),
        ("train/lr", report.lr),
        ("train/grad_norm", report.grad_norm),
    ];
    if scaled {
        scalars.push(("train/loss_scale", report.loss_scale));
        scalars.push(("train/step_skipped", if report.applied { 0.0 } else { 1.0 }));
    }
    for (key, value) in scalars.into_iter().filter(|(_, v)| v.is_finite()) {
        tracker.emit(Record::Scalar { key: key.into(), step, value, wall_time })?;
    }
    Ok(())
}

/// Saves the checkpoint of `step` (with the validation `metrics` taken at it), waits for the
/// tracking sinks to hold everything up to it, records it in the store and prunes old
/// checkpoints beyond `checkpoint.total_limit` (never the newest or the best).
fn save_checkpoint(
    setup: &mut Setup,
    job: &TrainJob,
    step: u64,
    metrics: BTreeMap<String, f64>,
    tracker: &mut Tracker,
    store: &mut Store,
) -> Result<(), TrainError> {
    let cfg = &job.config;
    if let Some(v) = metrics.get("val/loss")
        && setup.resume.best.is_none_or(|(_, b)| *v < b)
    {
        setup.resume.best = Some((step, *v));
    }
    let state = TrainState {
        step,
        has_optimizer: !cfg.checkpoint.weights_only,
        has_text_encoder: cfg.train.train_text_encoder,
        metrics,
        loss_scale: setup.resume.scaler,
    };
    let optimizer = (!cfg.checkpoint.weights_only).then_some(&setup.optimizer);
    let files = setup.trainable.files(&setup.model);
    let saved = checkpoint::save(&setup.checkpoints, &files, optimizer, &state)?;
    tracker.flush()?;
    let rel = saved.path.strip_prefix(&job.run_dir).unwrap_or(&saved.path).display().to_string();
    let metrics_json = serde_json::to_string(&state.metrics).expect("metrics serialize");
    store.add_checkpoint(&job.run_id, step as i64, &rel, &saved.sha256, saved.size, &metrics_json)?;
    if let Some(limit) = cfg.checkpoint.total_limit {
        for removed in checkpoint::prune(&setup.checkpoints, limit as usize, setup.resume.best.map(|(s, _)| s)) {
            store.remove_checkpoint(&job.run_id, removed as i64)?;
        }
    }
    Ok(())
}
