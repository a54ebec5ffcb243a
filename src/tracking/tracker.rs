//! [`Tracker`]: the one tracking API of a training run, fanning each record out to the sinks.
//!
//! Every record goes to the run's journal first (the source of truth), then to W&B (when
//! enabled; it spools to disk and delivers in the background, so it never waits for the
//! network), TensorBoard and the lineage store's metrics (each on a background thread with a
//! bounded queue). The last sink takes the record by value: one copy per record for all sinks.
//! A fourth thread checkpoints the store's write-ahead log, so the metrics commits never wait
//! for that.

use std::path::Path;

use super::background::Background;
use super::journal::{self, Journal};
use super::store_sink::StoreSink;
use super::tensorboard::TensorBoardSink;
use super::wandb::{DeliveryStatus, WandbSink};
use super::{Record, Sink, TrackingError};
use crate::store::{Checkpointer, Store};

/// Records a background sink may fall behind by before `emit` waits for it.
const QUEUE: usize = 4096;

/// The lineage store's metrics sink of run `run_id` as a tracker runs it: a connection of its
/// own to the store at `store`, on a background thread, which leaves checkpointing the
/// write-ahead log to the returned [`Checkpointer`] (keep it until the sink is dropped).
pub fn metrics_sink(store: &Path, run_id: &str) -> Result<(Background, Checkpointer), TrackingError> {
    let connection = Store::open(store)?;
    connection.leave_checkpoints_to_others()?;
    Ok((Background::spawn(StoreSink::new(connection, run_id), QUEUE, store), Checkpointer::spawn(store)?))
}

/// The sinks of one attempt of a run.
pub struct Tracker {
    journal: Journal,
    wandb: Option<WandbSink>,
    tensorboard: Option<Background>,
    metrics: Background,
    /// Declared last: dropped after the metrics sink's last commit, it checkpoints that too.
    _checkpointer: Checkpointer,
}

impl Tracker {
    /// Opens the sinks of run `run_id`: the journal in `run_dir` (created if missing),
    /// TensorBoard event files there when `tensorboard` is set, the metrics of the lineage store
    /// at `store` (with a connection of its own, checkpointed by a [`Checkpointer`]), and
    /// `wandb` when given. A `resuming` attempt first hands the records already in the journal
    /// to the store's sink, so that the store holds every point the journal has, each once,
    /// whatever the dead attempt managed to commit (the attempt's `Start` then supersedes those
    /// after its checkpoint).
    pub fn open(
        run_dir: &Path,
        store: &Path,
        run_id: &str,
        tensorboard: bool,
        wandb: Option<WandbSink>,
        resuming: bool,
    ) -> Result<Self, TrackingError> {
        std::fs::create_dir_all(run_dir).map_err(|source| TrackingError::Io { path: run_dir.to_path_buf(), source })?;
        let (journal, earlier) = Journal::open_with_records(&run_dir.join(journal::FILE))?;
        let tensorboard = tensorboard
            .then(|| Ok::<_, TrackingError>(Background::spawn(TensorBoardSink::new(run_dir)?, QUEUE, run_dir)));
        let (mut metrics, checkpointer) = metrics_sink(store, run_id)?;
        if resuming {
            earlier.into_iter().try_for_each(|record| metrics.push(record))?;
        }
        Ok(Self { journal, wandb, tensorboard: tensorboard.transpose()?, metrics, _checkpointer: checkpointer })
    }

    /// Logs `record` to every sink, in order with the records before it.
    pub fn emit(&mut self, record: Record) -> Result<(), TrackingError> {
        self.journal.write(&record)?;
        if let Some(wandb) = &mut self.wandb {
            wandb.write(&record)?;
        }
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.write(&record)?;
        }
        self.metrics.push(record)
    }

    /// Has the lineage store commit the metrics logged so far, where a scheduler's early
    /// termination and `dbsweep ls` read them, without waiting for it (the commit is a moment
    /// later, on the sink's thread; a failure surfaces at the next `emit` or `flush`). The
    /// journal stays the durable record.
    pub fn publish_metrics(&mut self) -> Result<(), TrackingError> {
        self.metrics.start_flush()
    }

    /// Makes everything logged so far durable in every sink (checkpoints, the end of a run).
    /// The background sinks flush while the journal syncs.
    pub fn flush(&mut self) -> Result<(), TrackingError> {
        self.metrics.start_flush()?;
        self.background().try_for_each(|s| s.start_flush())?;
        self.journal.flush()?;
        self.metrics.flush()?;
        self.background().try_for_each(|s| s.flush())
    }

    /// Ends the attempt's tracking: gives W&B its bounded time to deliver (see
    /// [`super::wandb::WandbOptions::finish_timeout`]) and says how that went (`None` without
    /// W&B). Dropping the tracker does the same without saying.
    pub fn finish(mut self) -> Option<DeliveryStatus> {
        self.wandb.take().map(WandbSink::finish)
    }

    /// The sinks besides the journal and the metrics.
    fn background(&mut self) -> impl Iterator<Item = &mut dyn Sink> {
        let tb = self.tensorboard.as_mut().map(|s| s as &mut dyn Sink);
        let wandb = self.wandb.as_mut().map(|s| s as &mut dyn Sink);
        tb.into_iter().chain(wandb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;
    use crate::store::CodeVersion;
    use crate::sweep::{self, Plan};

    /// A store at `db` with one registered run; the store and the run's id.
    fn store_with_a_run(db: &Path) -> (Store, String) {
        let mut store = Store::open(db).unwrap();
        let spec = sweep::parse(yaml::parse(Path::new("s.yaml"), "parameters: {seed: {value: 1}}\n").unwrap()).unwrap();
        let plan = Plan::build(spec, Vec::new(), &[]).unwrap();
        let run = store.register(&plan, &CodeVersion::current(), false).unwrap().runs[0].run_id.clone();
        (store, run)
    }

    fn start(run: &str, resume_step: Option<u64>) -> Record {
        let metrics = vec!["train/loss".into()];
        Record::Start {
            run_id: run.into(),
            attempt: 1,
            hparams: Default::default(),
            metrics,
            resume_step,
            wall_time: 1.0,
        }
    }

    fn losses(steps: std::ops::RangeInclusive<u64>) -> Vec<Record> {
        steps
            .map(|step| Record::Scalar { key: "train/loss".into(), step, value: step as f64, wall_time: 2.0 })
            .collect()
    }

    #[test]
    fn a_resuming_tracker_replays_the_journal_into_the_store_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let (mut store, run) = store_with_a_run(&db);
        let run_dir = dir.path().join("run");
        let mut first = Tracker::open(&run_dir, &db, &run, false, None, false).unwrap();
        std::iter::once(start(&run, None)).chain(losses(1..=3)).for_each(|r| first.emit(r).unwrap());
        first.flush().unwrap();
        drop(first);
        // The store loses the points; the second attempt resumes after step 2.
        store.drop_metrics_after(&run, -1).unwrap();
        let mut second = Tracker::open(&run_dir, &db, &run, false, None, true).unwrap();
        second.emit(start(&run, Some(2))).unwrap();
        second.flush().unwrap();
        assert_eq!(store.metric_series(&run, "train/loss").unwrap(), [(1, 1.0), (2, 2.0)]);
    }

    #[test]
    fn each_record_reaches_the_journal_the_store_and_tensorboard() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let (store, run) = store_with_a_run(&db);
        let run_dir = dir.path().join("run");
        let mut tracker = Tracker::open(&run_dir, &db, &run, true, None, false).unwrap();
        let start = start(&run, None);
        let points = losses(1..=3);
        tracker.emit(start.clone()).unwrap();
        points.iter().for_each(|p| tracker.emit(p.clone()).unwrap());
        tracker.publish_metrics().unwrap();
        // Published points are committed a moment later, without a flush.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.metric_series(&run, "train/loss").unwrap().len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(store.metric_series(&run, "train/loss").unwrap(), [(1, 1.0), (2, 2.0), (3, 3.0)]);
        tracker.flush().unwrap();
        let mut expected = vec![start];
        expected.extend(points);
        assert_eq!(journal::read(&run_dir.join(journal::FILE)).unwrap(), expected);
        let events: Vec<_> = std::fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("tfevents"))
            .collect();
        assert_eq!(events.len(), 1);
        let bytes = std::fs::read(&events[0]).unwrap();
        let tags = bytes.windows(b"train/loss".len()).filter(|w| *w == b"train/loss").count();
        assert_eq!(tags, 3, "one TensorBoard scalar event per point");
    }
}
