//! The SQLite lineage store: sweeps, runs, where every setting came from, metrics,
//! checkpoints, artifacts, data fingerprints, code versions and every status change.
//!
//! One [`Store`] owns one connection, configured in [`Store::open`] (WAL, busy timeout,
//! foreign keys) and migrated before use. Every write is one transaction, so a crash leaves
//! either all of an operation or none of it. Invariant: a finished run's lineage rows are never
//! rewritten; a re-run is a new run linked to the old one by `parent_run_id`.

mod checkpointer;
mod claim;
mod code_version;
mod error;
mod lifecycle;
mod migrations;
mod query;
mod register;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use checkpointer::Checkpointer;
pub use claim::Claim;
pub use code_version::CodeVersion;
pub use error::StoreError;
pub use lifecycle::{CheckpointRow, MetricBatch, StoredRun};
pub use migrations::{MIGRATIONS, current_version};
pub use query::{EventRow, MetricSummary, ParamRow, RunRecord, RunRow, SweepRef, SweepSummary};
pub use register::{Outcome, RegisteredRun, Registration};
pub use status::RunStatus;

/// File name of the lineage store inside the output root.
pub const DB_FILE: &str = "dbsweep.sqlite";

/// SQL expression for "now" as ISO 8601 UTC with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// An open, migrated lineage store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        Self::configure(conn, path)
    }

    /// Opens the store at `path` if it exists (for commands that only read).
    pub fn open_existing(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        Self::configure(conn, path).map(Some)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::configure(Connection::open_in_memory()?, Path::new(":memory:"))
    }

    fn configure(mut conn: Connection, path: &Path) -> Result<Store, StoreError> {
        conn.busy_timeout(Duration::from_secs(30))?;
        // WAL: readers (`dbsweep ls` from another shell) never block the writer. NORMAL
        // synchronous mode in WAL survives a killed process; only power loss can drop the
        // last commits, never corrupt the file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrations::migrate(&mut conn)?;
        Ok(Store { conn, path: path.to_path_buf() })
    }

    /// Stops this connection's commits from checkpointing the write-ahead log; a
    /// [`Checkpointer`] does it instead.
    pub fn leave_checkpoints_to_others(&self) -> Result<(), StoreError> {
        Ok(self.conn.pragma_update(None, "wal_autocheckpoint", 0)?)
    }

    /// Copies what it can of the write-ahead log into the database without waiting for
    /// anyone (SQLite's passive checkpoint).
    pub fn checkpoint_wal(&self) -> Result<(), StoreError> {
        Ok(self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests;
