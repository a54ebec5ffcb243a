//! Comparing a sweep's runs, and choosing the best run and checkpoint.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::store::{RunStatus, Store, StoreError, SweepSummary};
use crate::sweep::Goal;

/// One run of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Run id.
    pub run_id: String,
    /// Swept values.
    pub swept: BTreeMap<String, Value>,
    /// Status.
    pub status: RunStatus,
    /// The metric's value at the last step it was logged.
    pub final_value: Option<f64>,
    /// The metric's best value (by the goal).
    pub best_value: Option<f64>,
    /// The step of the best value.
    pub best_step: Option<i64>,
    /// Optimiser steps done (last `train/loss` step).
    pub steps: i64,
    /// Seconds spent running, all attempts.
    pub wall_seconds: f64,
    /// GPU hours (GPUs assigned x hours; 0 on CPU slots).
    pub gpu_hours: f64,
}

/// A sweep's runs side by side on one metric.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Sweep id.
    pub sweep_id: String,
    /// The metric compared.
    pub metric: String,
    /// Whether lower or higher values are better.
    pub goal: Goal,
    /// Swept keys, in the order of the sweep's runs.
    pub keys: Vec<String>,
    /// Rows in expansion order.
    pub rows: Vec<Row>,
}

/// Why a comparison cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The store failed or lacks the sweep.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No run logged the metric.
    #[error("no run of sweep `{sweep}` logged metric `{metric}`; logged metrics: {known}")]
    UnknownMetric {
        /// Sweep id.
        sweep: String,
        /// The metric asked for.
        metric: String,
        /// Metrics that exist.
        known: String,
    },
    /// A file of the sweep's results could not be changed.
    #[error("`{path}`: {message}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl CompareError {
    /// Whether the error is the user's: an unknown sweep or metric.
    pub fn is_bad_input(&self) -> bool {
        match self {
            CompareError::Store(e) => e.is_bad_input(),
            CompareError::UnknownMetric { .. } => true,
            CompareError::Io { .. } => false,
        }
    }
}

/// The metric that ranks a sweep's runs, and its goal: the ones given, else the sweep's, else
/// [`DEFAULT_METRIC`] minimised.
pub fn ranking(sweep: &SweepSummary, metric: Option<&str>, goal: Option<Goal>) -> (String, Goal) {
    let metric = metric.map(String::from).or(sweep.metric.clone()).unwrap_or_else(|| DEFAULT_METRIC.into());
    (metric, goal.or(sweep.goal).unwrap_or(Goal::Minimize))
}

/// The metric runs are ranked by when a sweep declares none.
pub const DEFAULT_METRIC: &str = "val/loss";

fn gpus_of(device: Option<&str>) -> usize {
    device
        .and_then(|d| d.split("CUDA_VISIBLE_DEVICES=").nth(1))
        .map_or(0, |list| list.trim_end_matches(')').split(',').count())
}

/// Compares the runs of sweep `key` (id or name) on `metric` (default: the sweep's metric,
/// else `val/loss`) with `goal` (default: the sweep's, else minimize).
pub fn compare(store: &Store, key: &str, metric: Option<&str>, goal: Option<Goal>) -> Result<Comparison, CompareError> {
    let sweep = store.sweep(key)?;
    let (metric, goal) = ranking(&sweep, metric, goal);
    let runs = store.sweep_runs(&sweep.id)?;
    let keys: Vec<String> = runs.first().map(|r| r.swept.keys().cloned().collect()).unwrap_or_default();
    let mut rows = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    for run in runs {
        let record = store.run(&run.id)?;
        known.extend(record.metrics.iter().map(|m| m.key.clone()));
        let series = store.metric_series(&run.id, &metric)?;
        let best = goal.best(series.iter().copied(), |p| p.1);
        let wall = store.running_seconds(&run.id)?;
        rows.push(Row {
            run_id: run.id.clone(),
            swept: run.swept,
            status: run.status,
            final_value: series.last().map(|p| p.1),
            best_value: best.map(|p| p.1),
            best_step: best.map(|p| p.0),
            steps: store.metric_series(&run.id, "train/loss")?.last().map_or(0, |p| p.0),
            wall_seconds: wall,
            gpu_hours: gpus_of(record.device.as_deref()) as f64 * wall / 3600.0,
        });
    }
    if rows.iter().all(|r| r.best_value.is_none()) && !rows.is_empty() {
        let known = known.into_iter().collect::<Vec<_>>().join(", ");
        return Err(CompareError::UnknownMetric { sweep: sweep.id, metric, known });
    }
    Ok(Comparison { sweep_id: sweep.id, metric, goal, keys, rows })
}

impl Comparison {
    /// Rows sorted best first (runs without the metric last).
    pub fn sorted(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by(|a, b| match (a.best_value, b.best_value) {
            (Some(x), Some(y)) => self.goal.best_first(x, y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        rows
    }
}

/// The chosen run and checkpoint, with the rule that chose them.
#[derive(Clone, Debug, Serialize)]
pub struct Best {
    /// Sweep id.
    pub sweep_id: String,
    /// Run id.
    pub run_id: String,
    /// Its best metric value.
    pub value: f64,
    /// The step of that value.
    pub step: i64,
    /// The chosen checkpoint's step.
    pub checkpoint_step: i64,
    /// The chosen checkpoint's folder, relative to the run folder.
    pub checkpoint_path: String,
    /// How they were chosen, in words.
    pub rule: String,
}

/// The best run of `comparison` and its best checkpoint: the checkpoint whose recorded metric
/// is best, else the one closest to the best metric's step.
pub fn best(store: &Store, comparison: &Comparison) -> Result<Option<Best>, CompareError> {
    let goal = comparison.goal;
    for row in comparison.sorted() {
        let (Some(value), Some(step)) = (row.best_value, row.best_step) else { continue };
        let checkpoints = store.checkpoints(&row.run_id)?;
        let scored = checkpoints
            .iter()
            .filter_map(|c| c.metrics.get(&comparison.metric).and_then(Value::as_f64).map(|v| (v, c)));
        let by_metric = goal.best(scored, |(v, _)| v).map(|(_, c)| c);
        let chosen = by_metric.or_else(|| checkpoints.iter().min_by_key(|c| (c.step - step).abs()));
        let Some(chosen) = chosen else { continue };
        let how = if by_metric.is_some() { "whose recorded metric is best" } else { "closest to that step" };
        let rule = format!(
            "run with the {} {} over all steps ({} of {} runs logged it); checkpoint {how}",
            if goal == Goal::Minimize { "lowest" } else { "highest" },
            comparison.metric,
            comparison.rows.iter().filter(|r| r.best_value.is_some()).count(),
            comparison.rows.len()
        );
        return Ok(Some(Best {
            sweep_id: comparison.sweep_id.clone(),
            run_id: row.run_id.clone(),
            value,
            step,
            checkpoint_step: chosen.step,
            checkpoint_path: chosen.path.clone(),
            rule,
        }));
    }
    Ok(None)
}
