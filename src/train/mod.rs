//! DreamBooth training of one run, in parts:
//!
//! - [`attempt`]: one attempt in this process, from the store's record to its end (stop
//!   requests, device, the attempt's status);
//! - [`trainer`]: the loop; [`prepare`] sets a run up (model, data, caches, optimiser,
//!   resume, tracking), [`step`] does one optimiser step, [`validate`] validates,
//!   [`evaluate`] scores the model by the DreamBooth paper's metrics, and
//!   [`checkpoint`] writes, verifies, restores and prunes checkpoints;
//! - [`preflight`]: what can be checked of a run's settings before it is launched;
//! - the pieces they use: [`data`] (images), [`example`] (images as training examples), [`cache`] (class images, latents, text
//!   embeddings shared by runs), [`loss`], [`lr_schedule`], [`optimizer`], [`precision`].

pub mod attempt;
pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod example;
pub mod job;
pub mod loss;
pub mod lr_schedule;
pub mod optimizer;
pub mod precision;
pub mod preflight;
pub mod prepare;
pub mod step;
pub mod trainer;
pub mod validate;

pub use error::TrainError;
pub use job::{Notice, TrainJob, TrainOutcome};
