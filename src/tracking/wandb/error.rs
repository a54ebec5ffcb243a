//! [`WandbError`]: why talking to W&B, or reading what is spooled for it, failed.
//!
//! No message ever holds the API key: messages are built from operation names, URLs without
//! credentials, status codes and server replies passed through [`ApiKey::redact`].
//!
//! [`ApiKey::redact`]: super::ApiKey::redact

use std::path::PathBuf;

/// Why a W&B operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WandbError {
    /// Online mode (or `sync`) needs an API key and none was found.
    #[error(
        "no W&B API key for `{host}`: set WANDB_API_KEY, add a `machine {host}` entry to ~/.netrc \
         (or the file $NETRC names), or set tracking.wandb.mode: offline"
    )]
    NoApiKey {
        /// The host the key is for.
        host: String,
    },
    /// `WANDB_BASE_URL` (or a proxy variable) is not a usable URL.
    #[error("{variable} `{url}`: {message}")]
    BadUrl {
        /// The variable.
        variable: &'static str,
        /// The URL, with any user information removed.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The server answered with a status that W&B's retry policy never retries.
    #[error("{operation}: the server answered HTTP {status}{detail}")]
    Rejected {
        /// `UpsertBucket`, `file_stream`, `upload media/...`.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// `: ` and the start of the reply, or empty.
        detail: String,
    },
    /// Every retry failed.
    #[error("{operation}: gave up after {attempts} attempts; last: {last}")]
    Unreachable {
        /// The operation.
        operation: String,
        /// Requests made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The server's reply could not be used (GraphQL errors, unexpected JSON, TLS failure).
    #[error("{operation}: {message}")]
    Protocol {
        /// The operation.
        operation: String,
        /// What is wrong.
        message: String,
    },
    /// Delivery was stopped (the sink is finishing) before the operation succeeded.
    #[error("{operation}: stopped before the server answered")]
    Cancelled {
        /// The operation.
        operation: String,
    },
    /// Another process is delivering this run.
    #[error(
        "`{path}` is locked by another process delivering this run (training or `dbsweep sync`); try again when it ends"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// A spool file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A spool file is damaged.
    #[error("`{path}`: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl WandbError {
    /// Whether trying again later cannot help (a rejected key, a missing project, a bad URL),
    /// as opposed to an unreachable or overloaded server.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, WandbError::Unreachable { .. } | WandbError::Cancelled { .. } | WandbError::Busy { .. })
    }
}

/// A closure mapping an I/O error on `path` to [`WandbError::Io`].
pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> WandbError + '_ {
    move |source| WandbError::Io { path: path.to_path_buf(), source }
}
