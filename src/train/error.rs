//! Why a run could not train.

use crate::model::ModelError;
use crate::tracking::TrackingError;

use super::cache::CacheError;
use super::checkpoint::CheckpointError;
use crate::image_set::DataError;

/// Why a run could not train.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The base model is unusable.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// A training image is unusable.
    #[error("{0}")]
    Data(#[from] DataError),
    /// A cache failed.
    #[error("{0}")]
    Cache(#[from] CacheError),
    /// A checkpoint could not be written or read.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// A tracking sink failed.
    #[error("{0}")]
    Tracking(#[from] TrackingError),
    /// Evaluating the model failed.
    #[error("{0}")]
    Eval(#[from] crate::eval::EvalError),
    /// The lineage store failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The settings cannot train (e.g. a resolution the model cannot take).
    #[error("{0}")]
    Settings(String),
    /// The process could not set itself up (e.g. signal handlers).
    #[error("{0}")]
    Process(String),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}

impl TrainError {
    /// Whether the error is the user's input (images, model folder, settings): trying again
    /// with the same input fails the same way.
    pub fn is_bad_input(&self) -> bool {
        match self {
            TrainError::Data(_) | TrainError::Settings(_) => true,
            TrainError::Model(e) => e.is_bad_input(),
            TrainError::Cache(CacheError::Data(_)) => true,
            TrainError::Cache(CacheError::Model(e)) => e.is_bad_input(),
            TrainError::Tracking(e) => e.is_bad_input(),
            TrainError::Store(e) => e.is_bad_input(),
            TrainError::Eval(e) => e.is_bad_input(),
            _ => false,
        }
    }
}
