//! [`Checkpointer`]: copies the write-ahead log into the database file from a thread of its own.
//!
//! SQLite normally checkpoints inside the commit that takes the log past 1000 pages: the
//! committing thread copies every page and waits for two `fsync`s. For the metrics sink, whose
//! commits sit on the path from a training step to its points being stored, that was the largest
//! single cost (`cargo bench --bench tracking`). A store handed to a checkpointer stops
//! checkpointing in its commits ([`Store::leave_checkpoints_to_others`]); the checkpointer's own
//! connection runs passive checkpoints (which never block a writer or reader) on a timer, so the
//! log stays small.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Store, StoreError};

/// How often the log is checkpointed.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// A thread checkpointing one store until dropped.
pub struct Checkpointer {
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the store at `path` every `INTERVAL`, with a connection of its own.
    pub fn spawn(path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let (stop, stopped) = sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("dbsweep-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    // A busy log (another checkpoint running) is checkpointed next time.
                    let _ = store.checkpoint_wal();
                }
                let _ = store.checkpoint_wal();
            })
            .expect("spawning a thread");
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
