//! Running a sink on its own thread behind a bounded queue, so that writing a record costs the
//! training step a push onto a batch, not the sink's encoding and I/O.
//!
//! Records are delivered in order, in batches: a batch is handed to the thread when it holds
//! [`BATCH`] records, or a multiple of 8 once its oldest record is [`BATCH_AGE`] old, and at
//! every flush. `flush`
//! waits until the worker has written and flushed everything written before it, so checkpoints
//! still mean "durable". The queue holds `capacity` records' worth of batches; only a sink that
//! far behind makes `write` wait (which keeps memory bounded without dropping anything). A
//! sink error is reported by the next `write` or `flush`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Record, Sink, TrackingError};

/// Records per batch handed to the thread (one channel send and wake-up per batch).
pub const BATCH: usize = 64;

/// How old a batch's first record may get before the batch goes at its next multiple of 8.
pub const BATCH_AGE: Duration = Duration::from_millis(100);

enum Message {
    Records(Vec<Record>),
    Flush(SyncSender<()>),
}

/// The first error of the worker, and a flag to test it without locking.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    message: Mutex<Option<String>>,
}

/// A sink moved to a background thread.
pub struct Background {
    sender: Option<SyncSender<Message>>,
    worker: Option<JoinHandle<()>>,
    failure: Arc<Failure>,
    label: PathBuf,
    batch: Vec<Record>,
    batch_started: Instant,
    /// Signalled when a flush started by `start_flush` is done.
    flushing: Option<Receiver<()>>,
}

fn work(mut sink: impl Sink, receiver: Receiver<Message>, failure: Arc<Failure>) {
    let fail = |e: TrackingError| {
        failure.message.lock().expect("failure lock").get_or_insert(e.to_string());
        failure.failed.store(true, Ordering::Release);
    };
    for message in receiver {
        match message {
            Message::Records(records) => {
                for record in &records {
                    if let Err(e) = sink.write(record) {
                        fail(e);
                    }
                }
            }
            Message::Flush(done) => {
                if let Err(e) = sink.flush() {
                    fail(e);
                }
                let _ = done.send(());
            }
        }
    }
    if let Err(e) = sink.flush() {
        fail(e);
    }
}

impl Background {
    /// Moves `sink` (writing under `label`, for error messages) to a thread with a queue of
    /// about `capacity` records.
    pub fn spawn(sink: impl Sink + Send + 'static, capacity: usize, label: &Path) -> Self {
        let (sender, receiver) = sync_channel(capacity.div_ceil(BATCH).max(1));
        let failure = Arc::new(Failure::default());
        let worker_failure = Arc::clone(&failure);
        let worker = std::thread::Builder::new()
            .name("dbsweep-sink".into())
            .spawn(move || work(sink, receiver, worker_failure))
            .expect("spawning a thread");
        Self {
            sender: Some(sender),
            worker: Some(worker),
            failure,
            label: label.to_path_buf(),
            batch: Vec::with_capacity(BATCH),
            batch_started: Instant::now(),
            flushing: None,
        }
    }

    fn check(&self) -> Result<(), TrackingError> {
        if !self.failure.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.failure.message.lock().expect("failure lock").take() {
            Some(message) => {
                self.failure.failed.store(false, Ordering::Release);
                Err(TrackingError::Invalid { path: self.label.clone(), message })
            }
            None => Ok(()),
        }
    }

    fn send(&self, message: Message) -> Result<(), TrackingError> {
        let stopped =
            || TrackingError::Invalid { path: self.label.clone(), message: "the sink's thread stopped".into() };
        self.sender.as_ref().ok_or_else(stopped)?.send(message).map_err(|_| stopped())
    }

    /// Hands the current batch to the thread.
    fn send_batch(&mut self) -> Result<(), TrackingError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.send(Message::Records(batch))
    }

    /// Takes `record` by value: [`Sink::write`] without the clone, for the last sink a record
    /// goes to.
    pub fn push(&mut self, record: Record) -> Result<(), TrackingError> {
        self.check()?;
        if self.batch.is_empty() {
            self.batch_started = Instant::now();
        }
        self.batch.push(record);
        // The clock is read on every eighth record only (a clock read costs as much as the push).
        let len = self.batch.len();
        if len >= BATCH || (len.is_multiple_of(8) && self.batch_started.elapsed() >= BATCH_AGE) {
            self.send_batch()?;
        }
        Ok(())
    }
}

impl Sink for Background {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        self.push(record.clone())
    }

    fn start_flush(&mut self) -> Result<(), TrackingError> {
        self.send_batch()?;
        let (done, wait) = sync_channel(1);
        self.send(Message::Flush(done))?;
        self.flushing = Some(wait);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        // Records written after `start_flush` need a flush of their own.
        if self.flushing.is_none() || !self.batch.is_empty() {
            self.start_flush()?;
        }
        if let Some(wait) = self.flushing.take() {
            let _ = wait.recv();
        }
        self.check()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.send_batch();
        self.sender.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A sink that is slow and remembers what it got.
    struct Slow(Arc<Mutex<Vec<u64>>>);

    impl Sink for Slow {
        fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
            std::thread::sleep(Duration::from_millis(5));
            if let Record::Scalar { step, .. } = record {
                self.0.lock().unwrap().push(*step);
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), TrackingError> {
            Ok(())
        }
    }

    fn scalar(step: u64) -> Record {
        Record::Scalar { key: "k".into(), step, value: 1.0, wall_time: 0.0 }
    }

    #[test]
    fn writes_do_not_wait_for_a_slow_sink_and_flush_delivers_everything_in_order() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut bg = Background::spawn(Slow(Arc::clone(&got)), 64, Path::new("slow"));
        let start = Instant::now();
        for step in 0..20 {
            bg.write(&scalar(step)).unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(50), "20 writes took {:?}", start.elapsed());
        bg.flush().unwrap();
        assert_eq!(*got.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    struct Failing;

    impl Sink for Failing {
        fn write(&mut self, _: &Record) -> Result<(), TrackingError> {
            Err(TrackingError::Invalid { path: "x".into(), message: "disk full".into() })
        }
        fn flush(&mut self) -> Result<(), TrackingError> {
            Ok(())
        }
    }

    #[test]
    fn a_sink_error_surfaces_at_the_next_flush() {
        let mut bg = Background::spawn(Failing, 4, Path::new("tb"));
        bg.write(&scalar(1)).unwrap();
        let err = bg.flush().unwrap_err().to_string();
        assert!(err.contains("disk full") && err.starts_with("`tb`"), "{err}");
    }

    #[test]
    fn a_part_batch_reaches_the_sink_once_it_is_old_and_everything_at_drop() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut bg = Background::spawn(Slow(Arc::clone(&got)), 4096, Path::new("slow"));
        bg.write(&scalar(0)).unwrap();
        std::thread::sleep(BATCH_AGE + Duration::from_millis(20));
        for step in 1..8 {
            bg.write(&scalar(step)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().unwrap().len() < 8 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*got.lock().unwrap(), (0..8).collect::<Vec<_>>(), "an old batch goes without a flush");
        bg.write(&scalar(8)).unwrap();
        drop(bg);
        assert_eq!(*got.lock().unwrap(), (0..9).collect::<Vec<_>>(), "dropping delivers the rest");
    }
}
