//! One self-contained HTML dashboard per sweep: the parameter table (sortable), loss and
//! validation curves as inline SVG, the grid of each run's latest validation image, the best run
//! marked and links to the run folders. Nothing is fetched when the page is viewed: styles and
//! script are inline, images are `data:` URIs, charts are drawn here as SVG.
//!
//! Layout choices:
//!
//! - The swept keys are ordered as in the sweep file. The store keeps them by name, so the order
//!   is recovered from the runs' expansion order: in a grid the first parameter changes least
//!   often from one run to the next, the last one most often. Keys with a single value are not
//!   axes.
//! - The image grid has the first swept key down and the second across. With a third (and
//!   further) swept key, there is one grid per combination of the other keys' values, so every
//!   run's image is shown (for `sweeps/lr_grid.yaml`: one learning rate x prior-loss weight grid
//!   per `train.epochs`).
//! - A run's "best" value is the smallest (goal `minimize`) or largest (`maximize`) value the
//!   sweep metric reached in that run; the best run is the one whose best value wins. Runs
//!   without the metric are not eligible, and a sweep that declares no metric has no best run
//!   (its table then shows `val/loss`).
//! - The table is sorted by clicking a header (again: descending). The page also honours
//!   `?sort=KEY&dir=asc|desc` at load, where KEY is a header's `data-key` (`run`, `status`,
//!   `final`, `best`, `steps`, or a swept key), and exposes `window.dbsweepSort(key, dir)`.
//!   When its script has run, `<body>` carries `data-ready="1"`.

mod chart;
mod html;
mod scatter;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

pub use html::{escape, file_url, render};

use super::compare;
use super::pareto::{self, Axis, Front};
use crate::store::{RunRow, Store, StoreError, SweepSummary};
use crate::sweep::Goal;

/// The two metrics of the trade-off chart: subject fidelity against prompt fidelity.
pub const TRADE_OFF: [&str; 2] = ["eval/dino", "eval/clip_t"];

/// The curves drawn, one chart each.
pub const CURVES: [&str; 5] = ["train/loss", "val/loss", "val/prior_drift", "eval/dino", "eval/clip_t"];

/// A run's latest validation image.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Path relative to the run folder, e.g. `samples/step-00000016/prompt0-0.png`.
    pub path: String,
    /// Training step it was sampled at, when the path names one.
    pub step: Option<i64>,
    /// The PNG as a `data:` URI; `None` when the file could not be read.
    pub data_uri: Option<String>,
}

/// One run as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct RunView {
    /// Id, position, status and swept values.
    pub row: RunRow,
    /// Last value of the sweep metric.
    pub final_value: Option<f64>,
    /// Best value of the sweep metric over the run (by the goal).
    pub best_value: Option<f64>,
    /// Last training step recorded.
    pub steps: Option<i64>,
    /// Each of [`CURVES`] the run has, by key: (step, value) points.
    pub curves: BTreeMap<String, Vec<(i64, f64)>>,
    /// Latest validation image.
    pub sample: Option<Sample>,
    /// The run folder (absolute): ROOT/runs/RUN_ID.
    pub folder: PathBuf,
}

/// Everything one dashboard page shows.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// The sweep.
    pub sweep: SweepSummary,
    /// The metric in the table: the sweep's, or `val/loss` when it declares none.
    pub metric: String,
    /// Whether lower or higher metric values are better.
    pub goal: Goal,
    /// Swept keys with more than one value, in sweep-file order (inferred, see the module doc).
    pub keys: Vec<String>,
    /// Runs in expansion order.
    pub runs: Vec<RunView>,
    /// Index into `runs` of the best run.
    pub best: Option<usize>,
    /// The runs' checkpoints in subject fidelity (`eval/dino`) against prompt fidelity
    /// (`eval/clip_t`), when the sweep was evaluated.
    pub front: Option<Front>,
}

/// Reads what the dashboard of sweep `key` (id or name) shows from `store`; run folders are
/// under `root`/runs.
pub fn collect(store: &Store, root: &Path, key: &str) -> Result<Dashboard, StoreError> {
    let sweep = store.sweep(key)?;
    let (metric, goal) = compare::ranking(&sweep, None, None);
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let rows = store.sweep_runs(&sweep.id)?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        let rec = store.run(&row.id)?;
        let folder = root.join("runs").join(&row.id);
        let summary = rec.metrics.iter().find(|m| m.key == metric);
        let final_value = summary.map(|m| m.last).filter(|v| v.is_finite());
        let best_value = summary.map(|m| if goal == Goal::Maximize { m.max } else { m.min }).filter(|v| v.is_finite());
        let steps = rec
            .metrics
            .iter()
            .find(|m| m.key == "train/loss")
            .map(|m| m.last_step)
            .or_else(|| rec.metrics.iter().map(|m| m.last_step).max());
        let mut curves = BTreeMap::new();
        for curve in CURVES {
            let points: Vec<(i64, f64)> =
                store.metric_series(&row.id, curve)?.into_iter().filter(|(_, v)| v.is_finite()).collect();
            if !points.is_empty() {
                curves.insert(curve.to_string(), points);
            }
        }
        let sample = latest_sample(&rec.artifacts).map(|path| {
            let data_uri = std::fs::read(folder.join(&path)).ok().map(|bytes| {
                format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
            });
            Sample { step: step_of(&path), path, data_uri }
        });
        runs.push(RunView { row, final_value, best_value, steps, curves, sample, folder });
    }
    let keys = axis_keys(&runs);
    let best = if sweep.metric.is_some() { best_run(&runs, goal) } else { None };
    let axes = TRADE_OFF.map(|m| Axis { metric: m.to_string(), goal: pareto::default_goal(m) });
    let front = pareto::front(store, &sweep.id, axes).ok();
    Ok(Dashboard { sweep, metric, goal, keys, runs, best, front })
}

/// The newest validation sample among `artifacts`, preferring the first prompt's first image.
fn latest_sample(artifacts: &[String]) -> Option<String> {
    let samples = artifacts.iter().filter(|p| p.starts_with("samples/") && p.ends_with(".png"));
    let first = samples.clone().filter(|p| p.ends_with("/prompt0-0.png")).max_by_key(|p| (step_of(p), p.as_str()));
    first.or_else(|| samples.max_by_key(|p| (step_of(p), p.as_str()))).cloned()
}

/// The step of a path with a `step-NNNNNNNN` component.
fn step_of(path: &str) -> Option<i64> {
    path.split('/').find_map(|c| c.strip_prefix("step-")).and_then(|s| s.parse().ok())
}

/// Swept keys with more than one value, the least often changing (in expansion order) first.
fn axis_keys(runs: &[RunView]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for run in runs {
        for key in run.row.swept.keys() {
            if !all.contains(key) {
                all.push(key.clone());
            }
        }
    }
    let value = |run: &RunView, key: &str| run.row.swept.get(key).cloned().unwrap_or(Value::Null);
    let mut keyed: Vec<(usize, String)> = all
        .into_iter()
        .filter(|k| runs.iter().any(|r| value(r, k) != value(&runs[0], k)))
        .map(|k| (runs.windows(2).filter(|w| value(&w[0], &k) != value(&w[1], &k)).count(), k))
        .collect();
    keyed.sort_by_key(|k| k.0);
    keyed.into_iter().map(|(_, k)| k).collect()
}

/// The best run as `best` and `compare` rank them: the best value wins, the first of equals.
fn best_run(runs: &[RunView], goal: Goal) -> Option<usize> {
    let eligible = runs.iter().enumerate().filter_map(|(i, r)| r.best_value.map(|v| (i, v)));
    goal.best(eligible, |(_, v)| v).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;

    #[test]
    fn latest_sample_prefers_the_newest_first_image() {
        let a: Vec<String> = [
            "samples/step-00000004/prompt0-0.png",
            "samples/step-00000008/prompt0-1.png",
            "samples/step-00000008/prompt0-0.png",
            "class/x.png",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(latest_sample(&a).as_deref(), Some("samples/step-00000008/prompt0-0.png"));
        assert_eq!(step_of("samples/step-00000008/prompt0-0.png"), Some(8));
    }

    fn view(position: i64, swept: &[(&str, Value)], best: Option<f64>) -> RunView {
        let row = RunRow {
            id: format!("run-{position}"),
            position,
            status: RunStatus::Finished,
            attempt: 1,
            swept: swept.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        RunView {
            row,
            final_value: best,
            best_value: best,
            steps: Some(4),
            curves: BTreeMap::from([("train/loss".to_string(), vec![(1, 2.0), (2, 1.5)])]),
            sample: None,
            folder: PathBuf::from(format!("/r/runs/run-{position}")),
        }
    }

    #[test]
    fn three_swept_keys_give_one_grid_per_value_of_the_third_in_file_order() {
        use serde_json::json;
        // File order: lr, prior, epochs (the last varies fastest); the store sorts them by name.
        let mut runs = Vec::new();
        for (i, (lr, w, e)) in [(1, 5, 2), (1, 5, 4), (1, 9, 2), (1, 9, 4), (3, 5, 2), (3, 5, 4), (3, 9, 2), (3, 9, 4)]
            .into_iter()
            .enumerate()
        {
            let swept = [("t.lr", json!(lr)), ("t.prior", json!(w)), ("t.epochs", json!(e)), ("seed", json!(0))];
            runs.push(view(i as i64, &swept, if i == 2 { None } else { Some(i as f64) }));
        }
        assert_eq!(axis_keys(&runs), ["t.lr", "t.prior", "t.epochs"]);
        assert_eq!(best_run(&runs, Goal::Minimize), Some(0));
        assert_eq!(best_run(&runs, Goal::Maximize), Some(7));
        let sweep = SweepSummary {
            id: "s-1".into(),
            name: "<s>".into(),
            file: "s.yaml".into(),
            method: "grid".into(),
            metric: Some("val/loss".into()),
            goal: Some(Goal::Minimize),
            created_at: "now".into(),
            counts: BTreeMap::new(),
            total: 8,
        };
        let keys = axis_keys(&runs);
        let d = Dashboard {
            sweep,
            metric: "val/loss".into(),
            goal: Goal::Minimize,
            keys,
            runs,
            best: Some(0),
            front: None,
        };
        let html = render(&d);
        assert!(html.contains("Sweep &lt;s&gt;") && !html.contains("<s>"));
        assert_eq!(html.matches("<table class=\"grid\">").count(), 2);
        assert!(html.contains("t.epochs = 2") && html.contains("t.epochs = 4"));
        assert_eq!(html.matches("<div class=\"sample\"").count(), 8);
        assert_eq!(html.matches("<td class=\"cell best\">").count(), 1);
    }
}
