//! Errors of the lineage store.

use std::path::PathBuf;

/// What went wrong in the lineage store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("lineage store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database could not be opened or created.
    #[error("cannot open the lineage store `{path}`: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A newer dbsweep wrote this database.
    #[error("the lineage store has schema version {found}, but this dbsweep knows up to {supported}; upgrade dbsweep")]
    SchemaTooNew {
        /// The database's version.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// A store that must be migrated was opened only to read.
    #[error(
        "the lineage store `{path}` has schema version {found}, this dbsweep reads version {supported}: a command \
         that writes (e.g. `dbsweep submit`) must open it once where it can be written, or use the dbsweep that wrote it"
    )]
    ReadOnlyMigration {
        /// The database file.
        path: PathBuf,
        /// The database's version.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// No run or sweep with this id.
    #[error("no {what} `{id}` in the lineage store{}", hint.as_ref().map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default())]
    NotFound {
        /// "run" or "sweep".
        what: &'static str,
        /// The id asked for.
        id: String,
        /// The closest existing id, if any is close.
        hint: Option<String>,
    },
    /// A run's stored configuration does not fit this dbsweep's settings schema.
    #[error("run `{run}` has a configuration this dbsweep cannot read: {detail}")]
    UnreadableConfig {
        /// Run id.
        run: String,
        /// Why.
        detail: String,
    },
    /// A stored value could not be read back.
    #[error("lineage store holds an unreadable {what}: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be read.
        detail: String,
    },
}

impl StoreError {
    /// Whether the error is the user's: an unknown id, a store written by a newer dbsweep, or a
    /// run this dbsweep cannot read.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::SchemaTooNew { .. }
                | StoreError::ReadOnlyMigration { .. }
                | StoreError::UnreadableConfig { .. }
        )
    }
}
