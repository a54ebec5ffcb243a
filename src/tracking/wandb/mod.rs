//! Weights & Biases: a [`Sink`](crate::tracking::Sink) that speaks W&B's own HTTP protocol (the
//! one wandb-core 0.31 speaks), and [`sync`], which delivers what could not be sent.
//!
//! # Data flow
//!
//! ```text
//! trainer --write--> WandbSink --append--> RUN/wandb-spool/NNNN.jsonl   (checksummed, append-only)
//!                        |                        |
//!                        +--ring (never blocks)-->+--> delivery thread --HTTP--> W&B
//!                                                 |         |
//!                                                 |         +--> NNNN.state.json (what the server has)
//!                                                 +--> `dbsweep sync` (same delivery code, later)
//! ```
//!
//! The spool is a write-ahead log: every record is turned into its W&B form (history rows,
//! media files to upload, the end marker) and appended to the spool by `write` on the training
//! thread, before anything touches the network. The delivery thread reads the spool, not a
//! queue of records, so there is nothing to lose when it falls behind: the only thing `write`
//! hands it is a coalescing wake-up (a bounded, one-slot doorbell: ringing a rung bell is a
//! no-op). Memory stays bounded however slow the server is, `write` costs one `write(2)` of a
//! short line, and a process killed at any point leaves a spool that [`sync`] can finish.
//!
//! # Invariants
//!
//! - Each spool file (`NNNN.jsonl`, one per attempt, numbered in creation order) is only ever
//!   appended to by the attempt that created it; a torn last line is ignored, a corrupt line
//!   followed by valid ones is an error.
//! - `NNNN.state.json` records how many entries of `NNNN.jsonl` the server has acknowledged, the
//!   history offset the attempt's first row got, and whether its `complete` was accepted. It is
//!   replaced atomically (temp file, `fsync`, rename, `fsync` of the folder) after every
//!   acknowledged request and never moves backwards, so a row is sent again only when a process
//!   died between the server's answer and that rename (the same offset is then re-sent, which
//!   the file_stream API treats as a replacement).
//! - History offsets are contiguous across attempts: an attempt's first row goes at the largest
//!   of the server's `historyLineCount` and the end of the previous attempt's rows.
//! - Only one process delivers a run at a time (`wandb-spool/lock`, an OS file lock).
//! - The API key lives in [`ApiKey`], whose `Debug` and `Display` print `***`; it is sent only
//!   to the base URL (never to upload URLs) and written nowhere.
//!
//! # Resumed attempts
//!
//! W&B keeps every history line it was sent. An attempt resumed after step `s` asks
//! `RunResumeStatus` for the run's `historyLineCount` and appends after it, re-sending its own
//! rows for steps `> s`. Rows the dead attempt had sent for steps `> s` therefore stay in the
//! run's history, followed by the new attempt's rows for the same steps; the summary holds the
//! newest values. (Removing them would need W&B's `rewindRun`, which is not used.) An attempt
//! that restarts from scratch likewise appends its rows, from step 0, after the server's lines.
//!
//! Files, one job each: [`secret`] the key type, [`endpoint`] the base URL, key and proxy from
//! an explicit environment, `netrc`, [`retry`] W&B's retry policy, `http` requests with
//! retries, `graphql` the query texts and replies, `api` the W&B calls, `history` rows and the
//! summary, `spool` the files on disk, `signal` the wake-up between threads, `deliver` the
//! delivery loop shared by the sink and [`sync`], [`sink`] the sink, `sync` the later delivery.

mod api;
mod deliver;
pub mod endpoint;
mod error;
mod graphql;
mod history;
mod http;
mod netrc;
pub mod retry;
pub mod secret;
mod signal;
pub mod sink;
mod spool;
mod sync;

pub use deliver::DeliveryStatus;
pub use endpoint::{DEFAULT_BASE_URL, Endpoint};
pub use error::WandbError;
pub use retry::RetryPolicy;
pub use secret::ApiKey;
pub use sink::{WandbOptions, WandbSink, credentials};
pub use spool::DIR as SPOOL_DIR;
pub use sync::{Pending, SyncOptions, SyncReport, pending, sync};
