//! TensorBoard: the project's own event-file writer and the [`Sink`](crate::tracking::Sink)
//! that feeds it.
//!
//! Layout on disk, for a sweep root `ROOT` with run folders below it:
//!
//! - `ROOT/events.out.tfevents.*`: the HParams experiment summary ([`write_experiment`]) and the
//!   custom-scalars layout ([`write_layout`]), so `tensorboard --logdir ROOT` compares every run
//!   below it in the HPARAMS tab and draws the CUSTOM SCALARS tab.
//! - `ROOT/<run>/events.out.tfevents.*`: one file per attempt of the run, written by
//!   [`TensorBoardSink`]. Each attempt's file starts with a purge marker, so a resumed run's
//!   curves continue from the resume step instead of doubling back.
//!
//! Invariants: an event file is created with `create_new` and never truncated or rewritten;
//! its first record is `file_version: "brain.Event:2"`; a new file's name sorts after every
//! event file already in its folder (TensorBoard reads them in name order).
//!
//! Files, one job each: `proto` the protobuf messages (prost derive, no `protoc`),
//! [`record`] the TFRecord framing with masked CRC32C, [`writer`] the buffered event file,
//! `summary` the summary values, [`hparams`] and [`layout`] the plugins' summaries, and `sink`
//! the mapping from [`Record`](crate::tracking::Record)s. Checked against the real TensorBoard
//! (2.21) by `tests/tensorboard.rs`.

pub mod hparams;
pub mod layout;
mod proto;
pub mod record;
mod sink;
mod summary;
pub mod writer;

pub use hparams::{ExperimentSummary, HParamColumn, HParamType, write_experiment};
pub use layout::{Layout, LayoutCategory, LayoutChart, write_layout};
pub use sink::TensorBoardSink;
pub use writer::{DEFAULT_FLUSH_INTERVAL, EventFileWriter};
