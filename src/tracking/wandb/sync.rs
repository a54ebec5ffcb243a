//! [`sync`]: delivers what a run folder's spool still holds (offline runs, runs whose server was
//! unreachable, runs killed before their data went out), every history row exactly once and in
//! order, resuming where the last delivery stopped. [`pending`] says what is left without
//! touching the network.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::api::Api;
use super::deliver::{self, Deliverer};
use super::endpoint::Endpoint;
use super::signal::Signal;
use super::spool::{self, DeliveryState, SpoolReader};
use super::{RetryPolicy, WandbError};

/// Settings of [`sync`].
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Retries of every request.
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
    /// Most rows in one file_stream request.
    pub max_rows_per_request: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            max_rows_per_request: 1000,
        }
    }
}

/// What [`sync`] delivered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// History rows sent.
    pub rows_sent: u64,
    /// Files uploaded.
    pub files_uploaded: u64,
    /// Attempts marked complete.
    pub attempts_completed: u32,
    /// Files that could not be uploaded, with why (they are not retried).
    pub skipped: Vec<String>,
}

/// What a run folder's spool still holds for W&B.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pending {
    /// Spool files (attempts).
    pub attempts: usize,
    /// Entries (rows, files, run and end markers) not yet acknowledged.
    pub entries: u64,
}

/// What `run_dir`'s spool still holds (all zero when it has no spool).
pub fn pending(run_dir: &Path) -> Result<Pending, WandbError> {
    let files = spool::files(&run_dir.join(spool::DIR))?;
    let mut pending = Pending { attempts: files.len(), entries: 0 };
    for (_, path) in files {
        let done = DeliveryState::load(&spool::state_path(&path))?.entries_done;
        let mut reader = SpoolReader::open(&path)?;
        let mut total: u64 = 0;
        while reader.next()?.is_some() {
            total += 1;
        }
        pending.entries += total.saturating_sub(done);
    }
    Ok(pending)
}

/// Delivers `run_dir`'s spool to the W&B server that `env` names (`WANDB_BASE_URL`,
/// `WANDB_API_KEY` or netrc). Sends nothing, and needs no key, when nothing is pending; fails
/// with [`WandbError::Busy`] while a training process or another sync delivers the run.
pub fn sync(run_dir: &Path, env: &[(String, String)], options: &SyncOptions) -> Result<SyncReport, WandbError> {
    if pending(run_dir)?.entries == 0 {
        return Ok(SyncReport::default());
    }
    let endpoint = Endpoint::from_env(env)?;
    let key = endpoint.api_key(env).ok_or_else(|| WandbError::NoApiKey { host: endpoint.host().to_string() })?;
    let dir = run_dir.join(spool::DIR);
    let _lock = deliver::lock(&dir)?;
    let signal = Arc::new(Signal::default());
    let mut api = Api::new(endpoint, key, options.retry.clone(), options.request_timeout, signal);
    let mut deliverer = Deliverer::new(&mut api, run_dir, options.max_rows_per_request);
    let result = deliverer.deliver_all(None);
    let progress = deliverer.progress().clone();
    if let Err(e) = &result {
        deliver::log(&dir, &format!("sync stopped: {e}"));
    }
    result?;
    Ok(SyncReport {
        rows_sent: progress.rows_sent,
        files_uploaded: progress.files_uploaded,
        attempts_completed: progress.completed,
        skipped: progress.skipped,
    })
}
