//! The lineage-store sink: scalar points into `metrics`, idempotently.
//!
//! Points are staged in the store as they come, 512 at a time, inside a transaction that each
//! flush commits: the inserts overlap the rest of the run's work, and readers see every point
//! up to the last flush. A `Start` with a `resume_step` removes the run's points after that
//! step first, so a resumed attempt's points supersede those of the attempt that died;
//! replaying a whole journal therefore leaves every point exactly once, with its latest value.
//! The trainer runs it on a background thread with a connection of its own (the transaction
//! holds the store's write lock until the flush, which the trainer does after every step);
//! replaying borrows a store.

use std::borrow::BorrowMut;

use crate::store::{MetricBatch, Store};

use super::{Record, Sink, TrackingError};

/// Points gathered before they are staged in the store.
const STAGE: usize = 512;

/// Writes a run's scalars into the lineage store (`S`: an owned or a borrowed [`Store`]).
pub struct StoreSink<S: BorrowMut<Store>> {
    store: S,
    run_id: String,
    pending: MetricBatch,
}

impl<S: BorrowMut<Store>> StoreSink<S> {
    /// A sink for run `run_id`.
    pub fn new(store: S, run_id: &str) -> Self {
        Self { store, run_id: run_id.to_string(), pending: MetricBatch::default() }
    }

    /// Stages the pending points.
    fn stage(&mut self) -> Result<(), TrackingError> {
        if !self.pending.is_empty() {
            self.store.borrow_mut().stage_metrics(&self.run_id, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

impl<S: BorrowMut<Store>> Sink for StoreSink<S> {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { resume_step, .. } => {
                self.stage()?;
                self.store.borrow_mut().drop_metrics_after(&self.run_id, resume_step.map_or(-1, |s| s as i64))?;
            }
            Record::Scalar { key, step, value, wall_time } => {
                self.pending.push(key, *step as i64, *value, *wall_time);
                if self.pending.len() >= STAGE {
                    self.stage()?;
                }
            }
            Record::End { .. } => self.flush()?,
            Record::Image { .. } | Record::Text { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        self.stage()?;
        Ok(self.store.borrow_mut().commit_metrics()?)
    }
}

impl<S: BorrowMut<Store>> Drop for StoreSink<S> {
    /// Points staged but not flushed are rolled back, so a borrowed store is left without an
    /// open transaction (the journal still has them).
    fn drop(&mut self) {
        self.store.borrow_mut().discard_metrics();
    }
}

/// Rebuilds run `run_id`'s metrics in `store` from its journal records.
pub fn replay(store: &mut Store, run_id: &str, records: &[Record]) -> Result<(), TrackingError> {
    let mut sink = StoreSink::new(store, run_id);
    for record in records {
        sink.write(record)?;
    }
    sink.flush()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::yaml;
    use crate::store::CodeVersion;
    use crate::sweep::{self, Plan};

    fn start(resume_step: Option<u64>) -> Record {
        Record::Start {
            run_id: "r".into(),
            attempt: 1,
            hparams: Default::default(),
            metrics: vec![],
            resume_step,
            wall_time: 0.0,
        }
    }

    fn scalar(step: u64, value: f64) -> Record {
        Record::Scalar { key: "train/loss".into(), step, value, wall_time: 0.0 }
    }

    /// A store holding one registered run, and the run's id.
    fn store_with_a_run(store: &mut Store) -> String {
        let spec = sweep::parse(yaml::parse(Path::new("s.yaml"), "parameters: {seed: {value: 1}}\n").unwrap()).unwrap();
        let plan = Plan::build(spec, Vec::new(), &[]).unwrap();
        store.register(&plan, &CodeVersion::current(), false).unwrap().runs[0].run_id.clone()
    }

    /// A killed attempt logged steps 1..=6; the resumed one restarts after step 4.
    #[test]
    fn replaying_a_journal_gives_every_point_once_with_the_latest_value() {
        let mut store = Store::in_memory().unwrap();
        let run = store_with_a_run(&mut store);
        let mut records = vec![start(None)];
        records.extend((1..=6).map(|s| scalar(s, s as f64)));
        records.push(start(Some(4)));
        records.extend((5..=8).map(|s| scalar(s, 100.0 + s as f64)));
        for _ in 0..2 {
            replay(&mut store, &run, &records).unwrap();
            let series = store.metric_series(&run, "train/loss").unwrap();
            let expected: Vec<(i64, f64)> =
                (1..=8).map(|s| (s, if s <= 4 { s as f64 } else { 100.0 + s as f64 })).collect();
            assert_eq!(series, expected);
        }
    }

    #[test]
    fn staged_points_are_seen_from_the_flush_on_and_a_dropped_sink_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store_with_a_run(&mut store);
        let reader = Store::open(&path).unwrap();
        let mut sink = StoreSink::new(Store::open(&path).unwrap(), &run);
        // More than one stage's worth: the first 512 are written in an open transaction.
        for s in 1..=600 {
            sink.write(&scalar(s, s as f64)).unwrap();
        }
        assert!(reader.metric_series(&run, "train/loss").unwrap().is_empty(), "nothing is seen before the flush");
        sink.flush().unwrap();
        assert_eq!(reader.metric_series(&run, "train/loss").unwrap().len(), 600);
        // A sink on a borrowed store, dropped with staged points: they are rolled back and the
        // store takes other writes again.
        let mut borrowed = StoreSink::new(&mut store, &run);
        for s in 601..=1200 {
            borrowed.write(&scalar(s, 0.0)).unwrap();
        }
        drop(borrowed);
        store.start_attempt(&run, "host", "cpu").unwrap();
        assert_eq!(reader.metric_series(&run, "train/loss").unwrap().len(), 600);
        assert_eq!(reader.run(&run).unwrap().attempt, 1);
    }
}
