//! The Pareto front of a sweep's checkpoints in two metrics (e.g. subject fidelity
//! `eval/dino` against prompt fidelity `eval/clip_t`): the points no other point beats in both.
//! A point is a run at a step where both metrics were recorded; the base model's point (step 0)
//! is reported beside the front.

use serde::Serialize;

use super::compare::CompareError;
use crate::store::Store;
use crate::sweep::Goal;

/// The goal of a metric when none is given: lower is better for losses, drifts and PRES (a
/// preserved prior scores low), higher for the other `eval/*` scores.
pub fn default_goal(metric: &str) -> Goal {
    let lower = metric.contains("loss") || metric.contains("drift") || metric == "eval/pres";
    if lower || !metric.starts_with("eval/") { Goal::Minimize } else { Goal::Maximize }
}

/// A metric and its goal, as `--pareto` names them: `eval/dino` or `eval/pres:min`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Axis {
    /// The metric.
    pub metric: String,
    /// Its goal.
    pub goal: Goal,
}

impl std::str::FromStr for Axis {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (metric, goal) = match text.rsplit_once(':') {
            Some((m, "max")) => (m, Goal::Maximize),
            Some((m, "min")) => (m, Goal::Minimize),
            Some((_, other)) => return Err(format!("`{text}`: `{other}` is not min or max")),
            None => (text, default_goal(text)),
        };
        if metric.trim().is_empty() {
            return Err(format!("`{text}`: expected a metric name such as eval/dino"));
        }
        Ok(Axis { metric: metric.to_string(), goal })
    }
}

/// A run at a step, with both metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Run id.
    pub run_id: String,
    /// The step (0: the base model).
    pub step: i64,
    /// The first metric.
    pub x: f64,
    /// The second metric.
    pub y: f64,
    /// Whether a checkpoint of the run is at this step.
    pub checkpoint: bool,
}

/// A sweep's points in two metrics and which of them form the front.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Front {
    /// The two metrics.
    pub axes: [Axis; 2],
    /// Every point after step 0, the front's first.
    pub points: Vec<Point>,
    /// How many of `points` (from the start) are on the front, ordered by the first metric.
    pub front: usize,
    /// The base model's point (step 0), when recorded.
    pub base: Option<Point>,
    /// The rule, in words.
    pub rule: String,
}

/// Whether `a` is at least as good as `b` in both metrics and better in one.
fn dominates(a: &Point, b: &Point, axes: &[Axis; 2]) -> bool {
    let (gx, gy) = (axes[0].goal, axes[1].goal);
    let at_least = !gx.better(b.x, a.x) && !gy.better(b.y, a.y);
    at_least && (gx.better(a.x, b.x) || gy.better(a.y, b.y))
}

/// The front of `points`: the points no other dominates (ties all kept), the front first
/// (ordered best first by the first metric), then the rest in their order.
pub fn front_of(mut points: Vec<Point>, axes: &[Axis; 2]) -> (Vec<Point>, usize) {
    let on: Vec<bool> = points.iter().map(|p| !points.iter().any(|q| dominates(q, p, axes))).collect();
    let mut indexed: Vec<(bool, Point)> = on.into_iter().zip(points.drain(..)).collect();
    indexed.sort_by(|(a_on, a), (b_on, b)| {
        b_on.cmp(a_on).then_with(|| if *a_on { axes[0].goal.best_first(a.x, b.x) } else { std::cmp::Ordering::Equal })
    });
    let front = indexed.iter().filter(|(on, _)| *on).count();
    (indexed.into_iter().map(|(_, p)| p).collect(), front)
}

/// The front of sweep `sweep` (id or name) in `axes`, from the metrics the store holds.
pub fn front(store: &Store, sweep: &str, axes: [Axis; 2]) -> Result<Front, CompareError> {
    let summary = store.sweep(sweep)?;
    let mut points = Vec::new();
    let mut base = None;
    for run in store.sweep_runs(&summary.id)? {
        let xs = store.metric_series(&run.id, &axes[0].metric)?;
        let ys = store.metric_series(&run.id, &axes[1].metric)?;
        let checkpoints: Vec<i64> = store.checkpoints(&run.id)?.iter().map(|c| c.step).collect();
        for (step, x) in xs {
            let Some(&(_, y)) = ys.iter().find(|(s, _)| *s == step) else { continue };
            let point = Point { run_id: run.id.clone(), step, x, y, checkpoint: checkpoints.contains(&step) };
            if step == 0 {
                base.get_or_insert(point);
            } else {
                points.push(point);
            }
        }
    }
    if points.is_empty() {
        return Err(CompareError::UnknownMetric {
            sweep: summary.id,
            metric: format!("{} with {}", axes[0].metric, axes[1].metric),
            known: "(no step after 0 has both; `dbsweep eval SWEEP` scores existing checkpoints)".into(),
        });
    }
    let (points, front) = front_of(points, &axes);
    let word = |a: &Axis| format!("{} {}", if a.goal == Goal::Maximize { "higher" } else { "lower" }, a.metric);
    let rule = format!(
        "runs at steps where no other run's point has {} and {} at least as good and one better ({} of {} points)",
        word(&axes[0]),
        word(&axes[1]),
        front,
        points.len()
    );
    Ok(Front { axes, points, front, base, rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(run: &str, x: f64, y: f64) -> Point {
        Point { run_id: run.into(), step: 1, x, y, checkpoint: true }
    }

    #[test]
    fn the_front_keeps_exactly_the_undominated_points() {
        let axes = ["eval/dino".parse::<Axis>().unwrap(), "eval/clip_t".parse::<Axis>().unwrap()];
        assert_eq!(axes[0].goal, Goal::Maximize);
        let points = vec![p("a", 0.9, 0.1), p("b", 0.5, 0.5), p("c", 0.4, 0.4), p("d", 0.1, 0.9), p("e", 0.5, 0.5)];
        let (ordered, n) = front_of(points, &axes);
        let ids: Vec<&str> = ordered[..n].iter().map(|p| p.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "e", "d"], "best first by DINO; equal points both stay");
        assert_eq!(ordered[n].run_id, "c", "c is beaten by b in both");
        let pres: Axis = "eval/pres".parse().unwrap();
        assert_eq!(pres.goal, Goal::Minimize);
        assert_eq!("eval/dino:min".parse::<Axis>().unwrap().goal, Goal::Minimize);
        assert!("eval/dino:best".parse::<Axis>().is_err());
    }
}
