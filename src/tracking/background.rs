//! Running a sink on its own thread behind a bounded queue, so that writing a record costs the
//! training step a channel send, not the sink's encoding and I/O.
//!
//! Records are delivered in order. `flush` waits until the worker has written and flushed
//! everything sent before it, so checkpoints still mean "durable". The queue holds
//! `capacity` records; only a sink that many records behind makes `write` wait (which keeps
//! memory bounded without dropping anything). A sink error is reported by the next `write`
//! or `flush`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Record, Sink, TrackingError};

enum Message {
    Record(Record),
    Flush(SyncSender<()>),
}

/// A sink moved to a background thread.
pub struct Background {
    sender: Option<SyncSender<Message>>,
    worker: Option<JoinHandle<()>>,
    failure: Arc<Mutex<Option<String>>>,
    label: PathBuf,
}

fn work(mut sink: impl Sink, receiver: Receiver<Message>, failure: Arc<Mutex<Option<String>>>) {
    let fail = |e: TrackingError| {
        failure.lock().expect("failure lock").get_or_insert(e.to_string());
    };
    for message in receiver {
        match message {
            Message::Record(record) => {
                if let Err(e) = sink.write(&record) {
                    fail(e);
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
    /// `capacity` records.
    pub fn spawn(sink: impl Sink + Send + 'static, capacity: usize, label: &Path) -> Self {
        let (sender, receiver) = sync_channel(capacity.max(1));
        let failure = Arc::new(Mutex::new(None));
        let worker_failure = Arc::clone(&failure);
        let worker = std::thread::Builder::new()
            .name("dbsweep-sink".into())
            .spawn(move || work(sink, receiver, worker_failure))
            .expect("spawning a thread");
        Self { sender: Some(sender), worker: Some(worker), failure, label: label.to_path_buf() }
    }

    fn check(&self) -> Result<(), TrackingError> {
        match self.failure.lock().expect("failure lock").take() {
            Some(message) => Err(TrackingError::Invalid { path: self.label.clone(), message }),
            None => Ok(()),
        }
    }

    fn send(&self, message: Message) -> Result<(), TrackingError> {
        let stopped =
            || TrackingError::Invalid { path: self.label.clone(), message: "the sink's thread stopped".into() };
        self.sender.as_ref().ok_or_else(stopped)?.send(message).map_err(|_| stopped())
    }
}

impl Sink for Background {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        self.check()?;
        self.send(Message::Record(record.clone()))
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        let (done, wait) = sync_channel(1);
        self.send(Message::Flush(done))?;
        let _ = wait.recv();
        self.check()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
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
}
