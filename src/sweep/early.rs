//! Hyperband early termination (W&B Sweeps' `early_terminate: {type: hyperband, min_iter,
//! eta}`): rungs at `min_iter * eta^k` reports of the sweep metric; at each rung, a run whose
//! value is not among the best `ceil(n / eta)` of the `n` runs that reached the rung stops,
//! and its slot goes to the next run.

use super::goal::Goal;
use super::spec::EarlyTerminate;

/// The rule, with the metric's direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyperband {
    /// Rungs and eta.
    pub rule: EarlyTerminate,
    /// The metric's direction.
    pub goal: Goal,
}

impl Hyperband {
    /// The rungs (metric reports) up to `reports`.
    pub fn rungs(&self, reports: usize) -> impl Iterator<Item = usize> + '_ {
        let (min, eta) = (self.rule.min_iter as usize, self.rule.eta as usize);
        std::iter::successors(Some(min), move |r| r.checked_mul(eta)).take_while(move |r| *r <= reports)
    }

    /// The rung at which a run with metric `series` (values in report order) stops, given the
    /// series of the sweep's other runs, or `None` while it stays among the best at every rung
    /// it reached.
    pub fn stop_at(&self, series: &[f64], others: &[Vec<f64>]) -> Option<usize> {
        self.rungs(series.len()).find(|&rung| {
            let mine = series[rung - 1];
            let mut values: Vec<f64> = others.iter().filter(|o| o.len() >= rung).map(|o| o[rung - 1]).collect();
            if values.is_empty() {
                return false;
            }
            values.push(mine);
            values.sort_by(|a, b| self.goal.best_first(*a, *b));
            let keep = values.len().div_ceil(self.rule.eta as usize);
            self.goal.better(values[keep - 1], mine)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(minimize: bool) -> Hyperband {
        let goal = if minimize { Goal::Minimize } else { Goal::Maximize };
        Hyperband { rule: EarlyTerminate { min_iter: 2, eta: 2 }, goal }
    }

    #[test]
    fn rungs_grow_geometrically() {
        assert_eq!(hb(true).rungs(9).collect::<Vec<_>>(), [2, 4, 8]);
    }

    #[test]
    fn the_worse_half_stops_at_a_rung() {
        let others = vec![vec![1.0, 0.5, 0.4, 0.3], vec![1.0, 0.9, 0.8, 0.7]];
        assert_eq!(hb(true).stop_at(&[1.0, 0.6], &others), None, "second best of three at rung 2 stays");
        assert_eq!(hb(true).stop_at(&[1.0, 0.95], &others), Some(2), "worst of three at rung 2 stops");
        assert_eq!(
            hb(true).stop_at(&[1.0, 0.6, 0.6, 0.75], &others),
            Some(4),
            "at rung 4 it is no longer among the best"
        );
        assert_eq!(hb(false).stop_at(&[1.0, 0.95], &others), None, "maximize: 0.95 is best");
        assert_eq!(hb(true).stop_at(&[9.0, 9.0], &[]), None, "alone, nothing to compare with");
    }
}
