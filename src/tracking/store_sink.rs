//! The lineage-store sink: scalar points into `metrics`, idempotently.
//!
//! Points are buffered and written in one transaction per flush. A `Start` with a
//! `resume_step` removes the run's points after that step first, so a resumed attempt's points
//! supersede those of the attempt that died; replaying a whole journal therefore leaves every
//! point exactly once, with its latest value. The trainer runs it on a background thread with
//! a connection of its own; replaying borrows a store.

use std::borrow::BorrowMut;

use crate::store::{MetricBatch, Store};

use super::{Record, Sink, TrackingError};

/// Writes a run's scalars into the lineage store (`S`: an owned or a borrowed [`Store`]).
pub struct StoreSink<S> {
    store: S,
    run_id: String,
    pending: MetricBatch,
}

impl<S: BorrowMut<Store>> StoreSink<S> {
    /// A sink for run `run_id`.
    pub fn new(store: S, run_id: &str) -> Self {
        Self { store, run_id: run_id.to_string(), pending: MetricBatch::default() }
    }
}

impl<S: BorrowMut<Store>> Sink for StoreSink<S> {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { resume_step, .. } => {
                self.flush()?;
                self.store.borrow_mut().drop_metrics_after(&self.run_id, resume_step.map_or(-1, |s| s as i64))?;
            }
            Record::Scalar { key, step, value, wall_time } => self.pending.push(key, *step as i64, *value, *wall_time),
            Record::End { .. } => self.flush()?,
            Record::Image { .. } | Record::Text { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        if !self.pending.is_empty() {
            self.store.borrow_mut().upsert_metrics(&self.run_id, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
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

    /// A killed attempt logged steps 1..=6; the resumed one restarts after step 4.
    #[test]
    fn replaying_a_journal_gives_every_point_once_with_the_latest_value() {
        let mut store = Store::in_memory().unwrap();
        let spec = sweep::parse(yaml::parse(Path::new("s.yaml"), "parameters: {seed: {value: 1}}\n").unwrap()).unwrap();
        let plan = Plan::build(spec, Vec::new(), &[]).unwrap();
        let run = store.register(&plan, &CodeVersion::current(), false).unwrap().runs[0].run_id.clone();
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
}
