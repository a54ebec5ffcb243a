//! Evaluation: scoring a model by what DreamBooth is for, with the metrics of the DreamBooth
//! paper (Ruiz et al. 2022): subject fidelity (DINO, CLIP-I), prompt fidelity (CLIP-T), prior
//! preservation (PRES) and diversity (DIV).
//!
//! - [`generate`]: the images a model makes for the evaluation prompts (fixed seeds);
//! - [`judges`]: the CLIP and DINO models that embed images and texts;
//! - [`metrics`] and [`score`]: the metrics from embeddings, overall and per prompt;
//! - [`evaluator`]: one evaluation from model to scores, and the base model's shared one.
//!
//! Training evaluates at step 0, every `evaluation.every_steps` and at the end; `dbsweep eval`
//! scores checkpoints that already exist. Both record `eval/*` metrics the same way.

pub mod evaluator;
pub mod generate;
pub mod judges;
pub mod metrics;
pub mod score;

use std::path::PathBuf;

/// The metrics an evaluation records (those whose model is configured).
pub const METRICS: [&str; 5] = ["eval/dino", "eval/clip_i", "eval/clip_t", "eval/pres", "eval/div"];

use crate::model::ModelError;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A judging or generating model is unusable, or computing with it failed.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// An evaluation image or the cache could not be read or written.
    #[error("`{path}`: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl EvalError {
    /// Whether the error is the user's (an unusable model folder or image).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, EvalError::Model(e) if e.is_bad_input())
    }
}
