//! DreamBooth training of one run, in parts:
//!
//! - [`attempt`]: one attempt in this process, from the store's record to its end (stop
//!   requests, device, the attempt's status);
//! - [`trainer`]: the loop; [`prepare`] sets a run up (model, data, caches, optimiser,
//!   resume, tracking), [`trainable`] is what it trains (every weight, or LoRA adapters) and
//!   the modules a step computes with, [`step`] does one optimiser step ([`step_inputs`] is
//!   the test hook that gives it PyTorch's inputs), [`validate`] validates,
//!   [`evaluate`] scores the model by the DreamBooth paper's metrics, and
//!   [`checkpoint`] writes, verifies, restores and prunes checkpoints;
//! - [`preflight`]: what can be checked of a run's settings before it is launched;
//! - the pieces they use: [`data`] (images), [`example`] (images as training examples), [`cache`] (class images, latents, text
//!   embeddings shared by runs), [`loss`], [`lr_schedule`], [`optimizer`] (with [`quantize`] for
//!   8-bit moments), [`precision`].

pub mod adamw_host;
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
pub mod quantize;
pub mod step;
pub mod step_inputs;
pub mod trainable;
pub mod trainer;
pub mod validate;

pub use error::TrainError;
pub use job::{Notice, TrainJob, TrainOutcome};
