//! The lineage-store sink: scalar points into `metrics`, idempotently.
//!
//! Points are staged in the store as they come, 512 at a time, inside a transaction that each
//! flush commits: the inserts overlap the rest of the run's work, and readers see every point
//! up to the last flush. A `Start` with a `resume_step` removes the run's points after that
//! step first, so a resumed attempt's points supersede those of the attempt that died;
//! replaying a whole journal through the sink (as a resumed attempt's tracker does) therefore
//! leaves every point exactly once, with its latest value. The sink has a connection of its
//! own, on a background thread (its transaction holds the store's write lock until the flush,
//! which the trainer does after every step); points staged when the sink is dropped without a
//! flush are rolled back with its connection (the journal still has them).

use crate::store::{MetricBatch, Store};

use super::{Record, Sink, TrackingError};

/// Points gathered before they are staged in the store.
const STAGE: usize = 512;

/// Writes a run's scalars into the lineage store.
pub struct StoreSink {
    store: Store,
    pending: MetricBatch,
}

impl StoreSink {
    /// A sink for run `run_id`, writing through `store`'s connection.
    pub fn new(store: Store, run_id: &str) -> Self {
        Self { store, pending: MetricBatch::new(run_id) }
    }

    /// Stages the pending points.
    fn stage(&mut self) -> Result<(), TrackingError> {
        if !self.pending.is_empty() {
            self.store.stage_metrics(&mut self.pending)?;
        }
        Ok(())
    }
}

impl Sink for StoreSink {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { resume_step, .. } => {
                self.stage()?;
                let after = resume_step.map_or(-1, |s| s as i64);
                self.store.drop_metrics_after(self.pending.run_id(), after)?;
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
        Ok(self.store.commit_metrics()?)
    }
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

    /// A store file in a fresh folder, holding one registered run: the folder (kept while the
    /// test runs), the file, the store and the run's id.
    fn store_with_a_run() -> (tempfile::TempDir, std::path::PathBuf, Store, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut store = Store::open(&path).unwrap();
        let spec = sweep::parse(yaml::parse(Path::new("s.yaml"), "parameters: {seed: {value: 1}}\n").unwrap()).unwrap();
        let plan = Plan::build(spec, Vec::new(), &[]).unwrap();
        let run = store.register(&plan, &CodeVersion::current(), false).unwrap().runs[0].run_id.clone();
        (dir, path, store, run)
    }

    /// A killed attempt logged steps 1..=6; the resumed one restarts after step 4.
    #[test]
    fn replaying_a_journal_gives_every_point_once_with_the_latest_value() {
        let (_dir, path, store, run) = store_with_a_run();
        let mut records = vec![start(None)];
        records.extend((1..=6).map(|s| scalar(s, s as f64)));
        records.push(start(Some(4)));
        records.extend((5..=8).map(|s| scalar(s, 100.0 + s as f64)));
        for _ in 0..2 {
            let mut sink = StoreSink::new(Store::open(&path).unwrap(), &run);
            records.iter().for_each(|r| sink.write(r).unwrap());
            sink.flush().unwrap();
            let series = store.metric_series(&run, "train/loss").unwrap();
            let expected: Vec<(i64, f64)> =
                (1..=8).map(|s| (s, if s <= 4 { s as f64 } else { 100.0 + s as f64 })).collect();
            assert_eq!(series, expected);
        }
    }

    #[test]
    fn staged_points_are_seen_from_the_flush_on_and_dropped_without_one() {
        let (_dir, path, mut store, run) = store_with_a_run();
        let mut sink = StoreSink::new(Store::open(&path).unwrap(), &run);
        // More than one stage's worth: the first 512 are written in an open transaction.
        for s in 1..=600 {
            sink.write(&scalar(s, s as f64)).unwrap();
        }
        assert!(store.metric_series(&run, "train/loss").unwrap().is_empty(), "nothing is seen before the flush");
        sink.flush().unwrap();
        assert_eq!(store.metric_series(&run, "train/loss").unwrap().len(), 600);
        // Dropped with staged points: they are rolled back, and the store takes writes again.
        for s in 601..=1200 {
            sink.write(&scalar(s, 0.0)).unwrap();
        }
        drop(sink);
        store.start_attempt(&run, "host", "cpu").unwrap();
        assert_eq!(store.metric_series(&run, "train/loss").unwrap().len(), 600);
    }
}
