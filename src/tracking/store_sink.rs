//! The lineage-store sink: scalar points into `metrics`, idempotently.
//!
//! Points are buffered and written in one transaction per flush. A `Start` with a
//! `resume_step` removes the run's points after that step first, so a resumed attempt's points
//! supersede those of the attempt that died; replaying a whole journal therefore leaves every
//! point exactly once, with its latest value.

use crate::store::{MetricPoint, Store};

use super::{Record, Sink, TrackingError};

/// Writes a run's scalars into the lineage store.
pub struct StoreSink<'a> {
    store: &'a mut Store,
    run_id: String,
    pending: Vec<MetricPoint>,
}

impl<'a> StoreSink<'a> {
    /// A sink for run `run_id`.
    pub fn new(store: &'a mut Store, run_id: &str) -> Self {
        Self { store, run_id: run_id.to_string(), pending: Vec::new() }
    }

    /// The store, for writes that are not records (checkpoints, artifacts).
    pub fn store_mut(&mut self) -> &mut Store {
        self.store
    }
}

impl Sink for StoreSink<'_> {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { resume_step, .. } => {
                self.flush()?;
                self.store.drop_metrics_after(&self.run_id, resume_step.map_or(-1, |s| s as i64))?;
            }
            Record::Scalar { key, step, value, wall_time } => self.pending.push(MetricPoint {
                key: key.clone(),
                step: *step as i64,
                value: *value,
                wall_time: *wall_time,
            }),
            Record::End { .. } => self.flush()?,
            Record::Image { .. } | Record::Text { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        if !self.pending.is_empty() {
            self.store.upsert_metrics(&self.run_id, &self.pending)?;
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
