//! dbsweep: declarative DreamBooth sweeps.
//!
//! The crate is layered, and data flows one way:
//!
//! - [`config`]: YAML files with positions, figment layers (defaults < experiment file < sweep
//!   `base:` < `DBSWEEP_*` environment < `--set` flags), the typed schema and its validation.
//! - [`sweep`]: sweep files (W&B Sweeps syntax), grid and random expansion, run ids and
//!   config hashes.
//! - [`store`]: the SQLite lineage store (migrations, sweeps, runs, provenance, metrics,
//!   checkpoints, artifacts, state transitions).
//! - [`scheduler`]: slots (GPUs, CPU cores), one process per run, retries, interruption.
//! - [`model`]: Stable Diffusion on candle (trainable UNet and CLIP, VAE, tokenizer, sampler).
//! - [`train`]: DreamBooth training.
//! - [`tracking`]: one record type and one sink trait for the journal, SQLite, TensorBoard, W&B.
//! - [`report`]: after the sweep: compare, best checkpoint, export, dashboard.
//! - [`cli`]: the thin command-line layer over the above; [`exit`] maps every error to the
//!   documented exit codes.
//!
//! [`rng`] is the project's own seeded random generator, identical on every machine.
#![warn(missing_docs)]

pub mod allocator;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod exit;
pub mod model;
pub mod report;
pub mod rng;
pub mod scheduler;
pub mod store;
pub mod sweep;
pub mod tracking;
pub mod train;
