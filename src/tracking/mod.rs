//! Tracking: one record type for everything a run logs, and one sink trait that the journal,
//! the lineage store, TensorBoard and Weights & Biases implement.
//!
//! The trainer produces [`Record`]s; it never talks to a sink directly. The run's journal is
//! the source of truth: every other sink can be rebuilt by replaying it, which is how nothing
//! logged is ever lost when a process dies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod background;
pub mod journal;
pub mod store_sink;
pub mod tensorboard;
pub mod tracker;
pub mod wandb;

/// How an attempt of a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// Trained to the end.
    Success,
    /// Stopped by an error.
    Failure,
    /// Stopped on request (Ctrl-C, early termination, a lost orchestrator).
    Interrupted,
}

/// One thing a run logs. `wall_time` is seconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An attempt starts. `resume_step` is the step it continues after: points of earlier
    /// attempts with a larger step are superseded.
    Start {
        /// Run id.
        run_id: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// Hyperparameters shown to compare runs (dotted key to value).
        hparams: BTreeMap<String, Value>,
        /// Scalar keys that are metrics of the run (the sweep metric first).
        metrics: Vec<String>,
        /// Resumed after this step, if resumed.
        resume_step: Option<u64>,
        /// When.
        wall_time: f64,
    },
    /// A scalar point.
    Scalar {
        /// Key, e.g. `train/loss`.
        key: String,
        /// Optimiser step.
        step: u64,
        /// Value (JSON has no NaN or infinity: they are written as null and read back as NaN).
        #[serde(deserialize_with = "nullable_f64")]
        value: f64,
        /// When.
        wall_time: f64,
    },
    /// A PNG image already written inside the run folder.
    Image {
        /// Key, e.g. `validation/a photo of sks dog/0`.
        key: String,
        /// Optimiser step.
        step: u64,
        /// Path of the PNG, relative to the run folder.
        path: PathBuf,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// When.
        wall_time: f64,
    },
    /// A text (prompts, the resolved config).
    Text {
        /// Key.
        key: String,
        /// Optimiser step.
        step: u64,
        /// The text (Markdown in TensorBoard).
        text: String,
        /// When.
        wall_time: f64,
    },
    /// The attempt ended.
    End {
        /// How.
        status: EndStatus,
        /// When.
        wall_time: f64,
    },
}

fn nullable_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Why a sink could not take a record.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("`{path}`: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An input file (e.g. a dashboard layout) is not valid.
    #[error("`{path}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The lineage store failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// Weights & Biases settings are unusable, or its spool could not be written.
    #[error("{0}")]
    Wandb(#[from] wandb::WandbError),
}

impl TrackingError {
    /// Whether the error is the user's: W&B without an API key, or with an unusable URL, or an
    /// invalid input file.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            TrackingError::Invalid { .. }
                | TrackingError::Wandb(wandb::WandbError::NoApiKey { .. } | wandb::WandbError::BadUrl { .. })
        )
    }
}

/// A destination for records. Sinks are written to in record order; `flush` makes everything
/// written so far durable (or delivered).
pub trait Sink {
    /// Takes one record.
    fn write(&mut self, record: &Record) -> Result<(), TrackingError>;
    /// Makes every record written so far durable.
    fn flush(&mut self) -> Result<(), TrackingError>;
    /// Starts making every record written so far durable without waiting (a sink on its own
    /// thread); the next [`flush`](Self::flush) completes it. Flushing several sinks as
    /// "start each, then flush each" lets their `fsync`s overlap.
    fn start_flush(&mut self) -> Result<(), TrackingError> {
        Ok(())
    }
}

/// Seconds since the Unix epoch, as tracking records carry it.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
