//! dbsweep: declarative DreamBooth sweeps.
//!
//! The crate is layered; a module uses only modules above it in this list, and data flows down
//! it one way:
//!
//! - [`config`]: YAML files with positions, figment layers (defaults < experiment file < sweep
//!   `base:` < `DBSWEEP_*` environment < `--set` flags), the typed schema and its validation.
//! - [`sweep`]: sweep files (W&B Sweeps syntax), grid and random expansion, run ids and
//!   config hashes, the metric's goal, Hyperband.
//! - [`store`]: the SQLite lineage store (migrations, sweeps, runs, provenance, metrics,
//!   checkpoints, artifacts, claims and state transitions).
//! - [`scheduler`]: one dispatch loop over two backends (processes on GPU or CPU slots, Slurm
//!   jobs) that run `dbsweep train` for each run: claims, retries, interruption, early
//!   termination. It starts training processes; it never calls into training.
//! - [`model`]: Stable Diffusion on candle (trainable UNet and CLIP, VAE, tokenizer, sampler).
//! - [`tracking`]: one record type and one sink trait for the journal, SQLite, TensorBoard, W&B.
//! - [`eval`]: scoring a model by the DreamBooth paper's metrics (DINO, CLIP-I, CLIP-T, PRES).
//! - [`train`]: DreamBooth training of one run, logging through [`tracking`].
//! - [`report`]: after the sweep: compare, best checkpoint, export, reproduce, gc, dashboard.
//! - [`cli`]: the thin command-line layer over the above: it parses, calls one layer, and
//!   prints.
//!
//! Beside them, used by any layer and using none: [`exit`] (the exit-code table: layers say
//! what kind of end they had, only it knows the numbers), [`rng`] (the project's own seeded
//! generator, identical on every machine), [`image_set`] (image folders and their
//! fingerprints), [`atomic_file`], and the process settings [`allocator`] and [`threads`].
#![warn(missing_docs)]

pub mod allocator;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod eval;
pub mod exit;
pub mod image_set;
pub mod model;
pub mod report;
pub mod rng;
pub mod scheduler;
pub mod store;
pub mod sweep;
pub mod threads;
pub mod tracking;
pub mod train;
