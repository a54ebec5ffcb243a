//! The SQLite lineage store: sweeps, runs, where every setting came from, metrics,
//! checkpoints, artifacts, data fingerprints, code versions, every status change and what each
//! bayes proposal saw.
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
mod proposal;
mod query;
mod register;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use checkpointer::Checkpointer;
pub use claim::{CLAIM_EXPIRY_SECONDS, Claim, HEARTBEAT, Holder, host_name};
pub use code_version::CodeVersion;
pub use error::StoreError;
pub use lifecycle::{CheckpointRow, MetricBatch, StoredRun};
pub use migrations::{MIGRATIONS, current_version};
pub use proposal::{NewProposal, ObservedRun, ProposalRecord, Registered, SweepRun};
pub use query::{EventRow, MetricSummary, ParamRow, RunRecord, RunRow, StoredSweep, SweepRef, SweepSummary};
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

/// `path` as the path of an SQLite `file:` URI: absolute, with `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for b in absolute.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            _ if b.is_ascii() => out.push(*b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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

    /// Opens the existing store at `path` only to read (`None` when there is none): for commands
    /// that change nothing, so they work on archived results, a read-only filesystem or a root
    /// shared with people who cannot write it. Where SQLite cannot write beside the file, the
    /// store is opened read-only through its existing write-ahead-log files, or else as an
    /// immutable file (nothing can be changing it then).
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let open_error = |source| StoreError::Open { path: path.to_path_buf(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let uri = |query: &str| format!("file:{}?{query}", uri_path(path));
        let conn = Connection::open_with_flags(uri("mode=ro"), flags).map_err(open_error)?;
        let conn = match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0)) {
            Ok(_) => conn,
            // No write access beside it for SQLite's shared-memory file: read it as a plain file.
            Err(_) => Connection::open_with_flags(uri("immutable=1"), flags).map_err(open_error)?,
        };
        conn.busy_timeout(Duration::from_secs(30))?;
        let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found != current_version() {
            return Err(StoreError::ReadOnlyMigration {
                path: path.to_path_buf(),
                found,
                supported: current_version(),
            });
        }
        Ok(Some(Store { conn, path: path.to_path_buf() }))
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
        // Foreign keys are turned on by migrating (see `migrations::migrate`).
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

    /// Whether this connection can only read (see [`Store::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
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
