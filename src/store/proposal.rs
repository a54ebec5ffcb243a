//! The runs of a bayes sweep, registered one at a time as they are proposed: what a proposal
//! reads (the sweep's runs with their configurations and metric reports, in one snapshot)
//! and how it is written (the run, its place in the sweep and the proposal's inputs, in one
//! transaction).
//!
//! Invariant: a bayes sweep's positions are 0, 1, 2... without gaps, one proposal each. A
//! proposal is written only at the position its reader saw as the next one: if another process
//! proposed there first, the write is refused and the caller reads again, so two orchestrators
//! sharing a sweep never propose twice.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::claim::RETRYABLE;
use super::register::{Placer, SweepProvenance, code_version_id, value_at};
use super::{CodeVersion, NOW, Outcome, RunStatus, Store, StoreError};
use crate::exit::Kind;
use crate::sweep::ConfigHash;
use crate::sweep::bayes::How;

/// A run of a sweep as a proposal sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRun {
    /// Its position in the sweep.
    pub position: i64,
    /// Run id.
    pub run_id: String,
    /// Its status.
    pub status: RunStatus,
    /// For a failed run: whether it will be tried again.
    pub retryable: bool,
    /// Its resolved configuration.
    pub config: Value,
    /// The values of the sweep metric it reported, in step order.
    pub series: Vec<f64>,
}

/// A run to register at the next position of a bayes sweep, and what its proposal saw.
#[derive(Clone, Debug)]
pub struct NewProposal<'a> {
    /// The sweep.
    pub sweep_id: &'a str,
    /// The position its reader saw as the next one.
    pub position: i64,
    /// The run's resolved configuration (canonical JSON).
    pub config: &'a Value,
    /// The run's identity (see [`crate::sweep::Fingerprints`]).
    pub config_hash: ConfigHash,
    /// How the point was chosen.
    pub how: How,
    /// The runs it learned from, with the value standing for each, in position order.
    pub observed: &'a [(String, f64)],
    /// The runs without a value yet (the constant liar counted them as the worst).
    pub pending: &'a [String],
    /// The runs that will never have a value: never proposed again, not used otherwise.
    pub excluded: &'a [String],
}

/// What [`Store::register_proposal`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The run is the sweep's at the position.
    Run {
        /// Run id.
        run_id: String,
        /// Whether the run is new or an existing run of the same configuration.
        outcome: Outcome,
    },
    /// Another process proposed at that position first: read the sweep again.
    PositionTaken,
}

/// A recorded proposal, for `dbsweep show`.
#[derive(Clone, Debug, Serialize)]
pub struct ProposalRecord {
    /// The sweep that proposed the run.
    pub sweep_id: String,
    /// The run's position in it.
    pub position: i64,
    /// `random` (the random phase), `tpe` or `fallback` (every TPE candidate was taken).
    pub how: String,
    /// TPE's candidate rank (0 = its best; higher when better ones were taken).
    pub tpe_rank: Option<u32>,
    /// Results in TPE's good group.
    pub good: Option<u32>,
    /// In words.
    pub description: String,
    /// The sweep metric, and which of a run's values stood for it (`best` or `last`).
    pub metric: Option<String>,
    /// See [`ProposalRecord::metric`].
    pub metric_use: String,
    /// The runs it learned from, with their values, in position order.
    pub observed: Vec<ObservedRun>,
    /// The runs without a value yet.
    pub pending: Vec<String>,
    /// The runs that will never have a value.
    pub excluded: Vec<String>,
    /// When (UTC).
    pub created_at: String,
}

/// A run a proposal learned from.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ObservedRun {
    /// Run id.
    pub run_id: String,
    /// The value standing for it.
    pub value: f64,
}

fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("proposal inputs serialize")
}

impl Store {
    /// Every run of sweep `sweep_id` with its configuration and its reports of `metric`, read
    /// in one snapshot; a failed run is `retryable` if `max_retries` allow another attempt.
    pub fn sweep_snapshot(
        &mut self,
        sweep_id: &str,
        metric: &str,
        max_retries: u32,
    ) -> Result<Vec<SweepRun>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut runs: Vec<SweepRun> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT s.position, r.id, r.status, {RETRYABLE}, r.config_json FROM sweep_runs s JOIN runs r ON r.id = s.run_id
                 WHERE s.sweep_id = ?1 ORDER BY s.position"
            ))?;
            let rows = stmt.query_map(params![sweep_id, max_retries, Kind::BadInput.code()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (position, run_id, status, retryable, config) = row?;
                let config = serde_json::from_str(&config)
                    .map_err(|e| StoreError::Corrupt { what: "run configuration", detail: e.to_string() })?;
                out.push(SweepRun { position, run_id, status, retryable, config, series: Vec::new() });
            }
            out
        };
        {
            let mut series =
                tx.prepare_cached("SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step")?;
            for run in &mut runs {
                run.series = series.query_map(params![run.run_id, metric], |r| r.get(0))?.collect::<Result<_, _>>()?;
            }
        }
        tx.commit()?;
        Ok(runs)
    }

    /// Registers the run `p` proposes at its position of its sweep, in one transaction: the run
    /// (an existing run of the same configuration is reused, as a sweep's registration does),
    /// with the settings' provenance the sweep recorded, its place in the sweep, and the
    /// proposal's inputs. Refused when the position is no longer the next one.
    pub fn register_proposal(&mut self, p: &NewProposal, code: &CodeVersion) -> Result<Registered, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: i64 =
            tx.query_row("SELECT COUNT(*) FROM sweep_runs WHERE sweep_id = ?1", [p.sweep_id], |r| r.get(0))?;
        let taken = tx
            .query_row(
                "SELECT 1 FROM proposals WHERE sweep_id = ?1 AND position = ?2",
                params![p.sweep_id, p.position],
                |_| Ok(()),
            )
            .optional()?;
        if next != p.position || taken.is_some() {
            return Ok(Registered::PositionTaken);
        }
        let provenance: Option<String> =
            tx.query_row("SELECT provenance_json FROM sweeps WHERE id = ?1", [p.sweep_id], |r| r.get(0))?;
        let provenance: SweepProvenance = match provenance {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt { what: "sweep provenance", detail: e.to_string() })?,
            None => SweepProvenance::default(),
        };
        let code_id = code_version_id(&tx, code)?;
        let rows = provenance.settings.iter().map(|s| s.row(value_at(p.config, &s.key).to_string()));
        let seed = p.config["seed"].as_u64().unwrap_or(0);
        let reason = format!("proposed by sweep {} at #{}: {}", p.sweep_id, p.position, p.how.describe());
        let (run_id, _, outcome) =
            Placer::new(&tx, code_id, false)?.place(p.config_hash, || p.config.to_string(), seed, rows, &reason)?;
        let (rank, good) = match p.how {
            How::Tpe { rank, below } => (Some(rank as i64), Some(below as i64)),
            How::Random | How::Fallback => (None, None),
        };
        let observed: Vec<ObservedRun> =
            p.observed.iter().map(|(run_id, value)| ObservedRun { run_id: run_id.clone(), value: *value }).collect();
        tx.execute(
            &format!(
                "INSERT INTO proposals (sweep_id, position, run_id, how, tpe_rank, good, observed_json, pending_json, excluded_json, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW})"
            ),
            params![
                p.sweep_id,
                p.position,
                run_id,
                p.how.as_str(),
                rank,
                good,
                json_text(&observed),
                json_text(&p.pending),
                json_text(&p.excluded)
            ],
        )?;
        tx.execute(
            "INSERT INTO sweep_runs (sweep_id, run_id, position) VALUES (?1, ?2, ?3)",
            params![p.sweep_id, run_id, p.position],
        )?;
        tx.commit()?;
        Ok(Registered::Run { run_id, outcome })
    }

    /// The proposals that made run `id` (one per bayes sweep that proposed it).
    pub fn proposals_of(&self, id: &str) -> Result<Vec<ProposalRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.sweep_id, p.position, p.how, p.tpe_rank, p.good, s.metric_name,
                    COALESCE(json_extract(s.spec_json, '$.metric.use'), 'best'),
                    p.observed_json, p.pending_json, p.excluded_json, p.created_at
             FROM proposals p JOIN sweeps s ON s.id = p.sweep_id WHERE p.run_id = ?1 ORDER BY p.sweep_id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?),
                (r.get::<_, Option<u32>>(3)?, r.get::<_, Option<u32>>(4)?),
                (r.get::<_, Option<String>>(5)?, r.get::<_, String>(6)?),
                (r.get::<_, String>(7)?, r.get::<_, String>(8)?, r.get::<_, String>(9)?, r.get::<_, String>(10)?),
            ))
        })?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt { what: "proposal", detail: e.to_string() };
        let mut out = Vec::new();
        for row in rows {
            let ((sweep_id, position, how), (tpe_rank, good), (metric, metric_use), (observed, pending, excluded, at)) =
                row?;
            let described = match (how.as_str(), tpe_rank, good) {
                ("tpe", Some(rank), Some(below)) => How::Tpe { rank: rank as usize, below: below as usize },
                ("random", ..) => How::Random,
                _ => How::Fallback,
            };
            out.push(ProposalRecord {
                sweep_id,
                position,
                how,
                tpe_rank,
                good,
                description: described.describe(),
                metric,
                metric_use,
                observed: serde_json::from_str(&observed).map_err(corrupt)?,
                pending: serde_json::from_str(&pending).map_err(corrupt)?,
                excluded: serde_json::from_str(&excluded).map_err(corrupt)?,
                created_at: at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::yaml;
    use crate::sweep::bayes::{History, Searcher};
    use crate::sweep::{self, Fingerprints, Plan};

    const BAYES: &str = "name: b\nmethod: bayes\nrun_cap: 3\nmetric: {name: val/loss, goal: minimize}\nparameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n  train.epochs: {values: [1, 2]}\n";

    fn plan() -> Plan {
        let spec = sweep::parse(yaml::parse(Path::new("b.yaml"), BAYES).unwrap()).unwrap();
        Plan::build(spec, Vec::new(), &["train.batch_size=2".into()]).unwrap()
    }

    fn code() -> CodeVersion {
        CodeVersion { version: "0.0.0-test".into(), git_commit: "abc".into(), git_dirty: false }
    }

    /// Registers the point proposed at `position` with no history, as read at `position`.
    fn propose(store: &mut Store, plan: &Plan, position: i64, observed: &[(String, f64)]) -> Registered {
        let searcher = Searcher::from_stored(&plan.spec, plan.base.json.clone()).unwrap();
        let proposal = searcher.propose(position as u64, &History::default()).unwrap();
        let config = searcher.config(&proposal.point).unwrap();
        let p = NewProposal {
            sweep_id: &plan.sweep_id,
            position,
            config: &config,
            config_hash: Fingerprints::default().hash(&config).unwrap(),
            how: proposal.how,
            observed,
            pending: &["x".to_string()],
            excluded: &[],
        };
        store.register_proposal(&p, &code()).unwrap()
    }

    #[test]
    fn a_bayes_sweep_registers_its_runs_one_position_at_a_time() {
        let mut store = Store::in_memory().unwrap();
        let plan = plan();
        let reg = store.register(&plan, &code(), false).unwrap();
        assert!(reg.sweep_created && reg.runs.is_empty(), "no run before it is proposed");
        assert_eq!(store.sweep(&plan.sweep_id).unwrap().method, "bayes");
        assert_eq!(propose(&mut store, &plan, 1, &[]), Registered::PositionTaken, "position 0 comes first");
        let Registered::Run { run_id, outcome } = propose(&mut store, &plan, 0, &[]) else { panic!("registered") };
        assert_eq!(outcome, Outcome::New);
        assert_eq!(run_id, plan.runs[0].run_id, "the run `plan` showed");
        assert_eq!(propose(&mut store, &plan, 0, &[]), Registered::PositionTaken, "one proposal per position");
        let seen = [(run_id.clone(), 0.5)];
        let Registered::Run { run_id: second, .. } = propose(&mut store, &plan, 1, &seen) else { panic!() };
        // The run records its settings as a sweep's runs do, and what its proposal saw.
        let rec = store.run(&second).unwrap();
        let params: Vec<(&str, &str, bool)> =
            rec.params.iter().map(|p| (p.key.as_str(), p.source.as_str(), p.swept)).collect();
        assert_eq!(
            params,
            [
                ("train.batch_size", "flag", false),
                ("train.epochs", "sweep", true),
                ("train.learning_rate", "sweep", true)
            ]
        );
        assert_eq!(rec.params[1].detail, "b.yaml:7:3");
        assert_eq!(rec.sweeps[0].position, 1);
        let p = &rec.proposals[0];
        assert_eq!(
            (p.position, p.how.as_str(), p.metric.as_deref(), p.metric_use.as_str()),
            (1, "random", Some("val/loss"), "best")
        );
        assert_eq!(p.observed, [ObservedRun { run_id, value: 0.5 }]);
        assert_eq!(p.pending, ["x"]);
        assert!(
            rec.events[0].reason.contains("proposed by sweep b-") && rec.events[0].reason.contains("#1"),
            "{:?}",
            rec.events
        );
        // A snapshot: every run with its configuration and its reports of the metric.
        let mut batch = crate::store::MetricBatch::new(&second);
        for (step, value) in [(2, 0.7), (1, 0.9)] {
            batch.push("val/loss", step, value, 1.0);
        }
        store.stage_metrics(&mut batch).unwrap();
        store.commit_metrics().unwrap();
        let runs = store.sweep_snapshot(&plan.sweep_id, "val/loss", 2).unwrap();
        assert_eq!(runs.iter().map(|r| r.position).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(runs[1].series, [0.9, 0.7], "in step order");
        assert!(runs[0].series.is_empty() && runs[0].status == RunStatus::Pending && !runs[0].retryable);
        assert_eq!(runs[1].config, rec.config);
    }

    #[test]
    fn two_writers_at_one_position_register_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let plan = plan();
        Store::open(&path).unwrap().register(&plan, &code(), false).unwrap();
        let results: Vec<Registered> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..4).map(|_| s.spawn(|| propose(&mut Store::open(&path).unwrap(), &plan, 0, &[]))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| matches!(r, Registered::Run { .. })).count(), 1, "{results:?}");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.sweep_runs(&plan.sweep_id).unwrap().len(), 1);
    }
}
