//! Why a command failed, and what kind of failure that is (the exit code follows from the
//! kind, in [`crate::exit`]).

use crate::config::ConfigError;
use crate::exit::Kind;
use crate::model::ModelError;
use crate::report::checkpoint_ref::RefError;
use crate::report::compare::CompareError;
use crate::report::export::ExportError;
use crate::report::reproduce::ReproduceError;
use crate::store::StoreError;
use crate::tracking::TrackingError;
use crate::train::TrainError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sweep or configuration file, variable or flag is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The lineage store failed or lacks what was asked for.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// A model folder is unusable, or computing with it failed.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// A tensor computation failed.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Training failed.
    #[error("{0}")]
    Train(#[from] TrainError),
    /// Delivering tracking data (W&B) failed.
    #[error("{0}")]
    Tracking(#[from] TrackingError),
    /// Runs cannot be compared or ranked.
    #[error("{0}")]
    Compare(#[from] CompareError),
    /// A checkpoint reference does not name a usable checkpoint.
    #[error("{0}")]
    Reference(#[from] RefError),
    /// A run cannot be reproduced.
    #[error("{0}")]
    Reproduce(#[from] ReproduceError),
    /// Checkpoints could not be scored.
    #[error("{0}")]
    Evaluate(#[from] crate::report::evaluate::EvaluateError),
    /// An export could not be written.
    #[error("{0}")]
    Export(#[from] ExportError),
    /// `dbsweep sync` could not deliver some files (each was reported).
    #[error("{0} file(s) could not be delivered to W&B (listed above)")]
    Undelivered(usize),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        let bad_input = match self {
            Error::Config(_) | Error::Usage(_) | Error::Export(_) => true,
            Error::Store(e) => e.is_bad_input(),
            Error::Model(e) => e.is_bad_input(),
            Error::Train(e) => e.is_bad_input(),
            Error::Tracking(e) => e.is_bad_input(),
            Error::Compare(e) => e.is_bad_input(),
            Error::Reference(e) => e.is_bad_input(),
            Error::Reproduce(e) => e.is_bad_input(),
            Error::Evaluate(e) => e.is_bad_input(),
            Error::Tensor(_) | Error::Output(_) | Error::Undelivered(_) => false,
        };
        if bad_input { Kind::BadInput } else { Kind::Failed }
    }
}
