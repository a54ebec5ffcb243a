//! The runs of a bayes sweep are created while it runs: when a slot is free and no run of the
//! sweep is left to claim, the dispatcher asks the [`Proposer`] for the next one.
//!
//! A proposal reads the sweep's runs in one snapshot and sorts them, in position order, into
//! what the searcher learns from and what it only avoids:
//!
//! - finished runs, and runs Hyperband stopped early, are observations: the value of the sweep
//!   metric over what they reported (`metric.use`: the best, or the last; a stopped run's
//!   reports end where it was stopped);
//! - pending, running and interrupted runs, and failed runs that will be retried, have no value
//!   yet but will: the constant liar counts them as the worst;
//! - failed runs that will not be retried (retries used up, or bad input), and finished runs
//!   that never reported the metric, are excluded: never proposed again, and not used
//!   otherwise (a failure says nothing about the metric).
//!
//! The proposed run is registered at the next position in one transaction, with what the
//! proposal saw; if another process proposed at that position first, the proposal is made
//! again from the new state. Proposals stop at `run_cap` runs, once a run reached
//! `metric.target`, or when a finite space has no point left.
//!
//! A proposal is a pure function of the sweep's seed, its position and that snapshot. With one
//! slot and one orchestrator, each is made once every earlier run has ended, so its snapshot
//! (and the proposal) is the same whether or not the sweep was interrupted and resumed, as long
//! as runs report the same values (training resumes exactly). With several slots the snapshot
//! depends on which runs have ended, that is on timing.

use super::events::Event;
use crate::store::{CodeVersion, NewProposal, Registered, RunStatus, Store, StoreError, SweepRun};
use crate::sweep::Fingerprints;
use crate::sweep::bayes::{History, Observation, Point, Searcher};

/// Most times a proposal is made again because another process proposed first.
const MAX_RACES: usize = 100;

/// Makes a bayes sweep's runs, one at a time.
#[derive(Debug)]
pub struct Proposer {
    searcher: Searcher,
    /// How proposals ended, once they did.
    ended: Option<End>,
}

/// Why a sweep proposes no more runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The search is complete: the target was reached, or the space has no point left.
    Complete,
    /// A proposal could not become a run; the runs it would have been remain to be proposed.
    Failed,
}

/// A snapshot sorted for the searcher, with the run ids behind each part.
#[derive(Default)]
struct Sorted {
    observations: Vec<Observation>,
    observed: Vec<(String, f64)>,
    pending: Vec<Point>,
    pending_ids: Vec<String>,
    excluded: Vec<Point>,
    excluded_ids: Vec<String>,
}

impl Proposer {
    /// The proposer of a sweep searched by `searcher`.
    pub fn new(searcher: Searcher) -> Proposer {
        Proposer { searcher, ended: None }
    }

    /// Registers the next run of `sweep_id` (failed runs get `max_retries` retries) and
    /// reports it; `false` when no run is to be proposed now (the cap, the target, an exhausted
    /// space, or a point that cannot become a run, each reported once).
    pub fn next(
        &mut self,
        store: &mut Store,
        sweep_id: &str,
        max_retries: u32,
        report: &mut dyn FnMut(Event),
    ) -> Result<bool, StoreError> {
        if self.ended.is_some() {
            return Ok(false);
        }
        for _ in 0..MAX_RACES {
            let runs = store.sweep_snapshot(sweep_id, &self.searcher.metric().name, max_retries)?;
            let position = runs.len() as u64;
            if position >= self.searcher.run_cap() {
                return Ok(false);
            }
            let sorted = self.sort(&runs);
            if let Some((run, value)) = sorted.observed.iter().find(|(_, v)| self.searcher.reaches_target(*v)) {
                let metric = self.searcher.metric();
                let target = metric.target.unwrap_or_default();
                let why = format!("run {run} reached the target {} {target} ({value})", metric.name);
                return Ok(self.end(End::Complete, why, report));
            }
            let history =
                History { observations: &sorted.observations, pending: &sorted.pending, excluded: &sorted.excluded };
            let Some(proposal) = self.searcher.propose(position, &history) else {
                return Ok(self.end(End::Complete, "every point of the space has a run".into(), report));
            };
            let config = match self.searcher.config(&proposal.point) {
                Ok(config) => config,
                Err(e) => {
                    let why =
                        format!("the proposed `{}` is refused: expected {}, found {}", e.key, e.expected, e.found);
                    return Ok(self.end(End::Failed, why, report));
                }
            };
            let config_hash = match Fingerprints::default().hash(&config) {
                Ok(hash) => hash,
                Err((key, e)) => return Ok(self.end(End::Failed, format!("`{key}`: {e}"), report)),
            };
            let new = NewProposal {
                sweep_id,
                position: position as i64,
                config: &config,
                config_hash,
                how: proposal.how,
                observed: &sorted.observed,
                pending: &sorted.pending_ids,
                excluded: &sorted.excluded_ids,
            };
            if let Registered::Run { run_id, .. } = store.register_proposal(&new, &CodeVersion::current())? {
                report(Event::Proposed {
                    run: run_id,
                    position: position as usize,
                    how: proposal.how.describe(),
                    results: sorted.observed.len(),
                    pending: sorted.pending_ids.len(),
                });
                return Ok(true);
            }
        }
        Ok(self.end(End::Failed, format!("other processes kept proposing first ({MAX_RACES} times)"), report))
    }

    /// Runs the sweep has yet to propose (for its summary): none once the search is complete,
    /// else up to `run_cap` beyond the `registered` runs.
    pub fn unproposed(&self, registered: usize) -> usize {
        match self.ended {
            Some(End::Complete) => 0,
            Some(End::Failed) | None => (self.searcher.run_cap() as usize).saturating_sub(registered),
        }
    }

    fn end(&mut self, end: End, reason: String, report: &mut dyn FnMut(Event)) -> bool {
        report(Event::ProposalsEnded { reason });
        self.ended = Some(end);
        false
    }

    /// Sorts `runs` (in position order) into observations, pending and excluded points.
    fn sort(&self, runs: &[SweepRun]) -> Sorted {
        let mut s = Sorted::default();
        for run in runs {
            let point = self.searcher.point_of(&run.config);
            let id = run.run_id.clone();
            match run.status {
                RunStatus::Finished | RunStatus::Stopped => match self.searcher.value(&run.series) {
                    Some(value) => {
                        s.observations.push(Observation { point, value });
                        s.observed.push((id, value));
                    }
                    None => {
                        s.excluded.push(point);
                        s.excluded_ids.push(id);
                    }
                },
                RunStatus::Failed if !run.retryable => {
                    s.excluded.push(point);
                    s.excluded_ids.push(id);
                }
                RunStatus::Pending | RunStatus::Running | RunStatus::Interrupted | RunStatus::Failed => {
                    s.pending.push(point);
                    s.pending_ids.push(id);
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::config::yaml;
    use crate::sweep::{self, Plan};

    fn proposer(metric: &str) -> Proposer {
        let text = format!(
            "method: bayes\nrun_cap: 9\nmetric: {{{metric}}}\nparameters:\n  train.learning_rate: {{distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}}\n"
        );
        let spec = sweep::parse(yaml::parse(Path::new("b.yaml"), &text).unwrap()).unwrap();
        let plan = Plan::build(spec, Vec::new(), &[]).unwrap();
        Proposer::new(Searcher::from_stored(&plan.spec, plan.base.json).unwrap())
    }

    fn run(position: i64, status: RunStatus, retryable: bool, series: &[f64]) -> SweepRun {
        SweepRun {
            position,
            run_id: format!("r{position}"),
            status,
            retryable,
            config: json!({"train": {"learning_rate": 1e-5 * (position + 1) as f64}}),
            series: series.to_vec(),
        }
    }

    #[test]
    fn runs_are_sorted_by_what_they_can_tell() {
        let runs = [
            run(0, RunStatus::Finished, false, &[0.9, 0.4, 0.6]),
            run(1, RunStatus::Stopped, false, &[0.8]),
            run(2, RunStatus::Failed, true, &[0.3]),
            run(3, RunStatus::Failed, false, &[0.1]),
            run(4, RunStatus::Running, false, &[0.5]),
            run(5, RunStatus::Interrupted, false, &[]),
            run(6, RunStatus::Pending, false, &[]),
            run(7, RunStatus::Finished, false, &[]),
        ];
        let best = proposer("name: val/loss, goal: minimize").sort(&runs);
        let ids = |v: &[String]| v.join(" ");
        assert_eq!(best.observed, [("r0".to_string(), 0.4), ("r1".to_string(), 0.8)], "finished and stopped runs");
        assert_eq!(ids(&best.pending_ids), "r2 r4 r5 r6", "retried, running, interrupted and pending runs");
        assert_eq!(ids(&best.excluded_ids), "r3 r7", "failed for good, or never reported the metric");
        assert_eq!(best.observations[1].point.0, [json!(2e-5)], "each with its point");
        let last = proposer("name: val/loss, goal: minimize, use: last").sort(&runs);
        assert_eq!(last.observed[0], ("r0".to_string(), 0.6), "use: last");
        let max = proposer("name: eval/dino, goal: maximize").sort(&runs);
        assert_eq!(max.observed[0], ("r0".to_string(), 0.9), "best by the goal");
    }
}
