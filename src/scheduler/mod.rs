//! The scheduler: runs a sweep's runs to their end, each in its own training process, on one
//! of two backends.
//!
//! - [`dispatch()`]: the one loop (claims through the lineage store, retries, immediate-failure
//!   counting, fail-fast, stop escalation, Hyperband early termination, the summary) behind the
//!   [`dispatch::Backend`] trait, with [`propose`] making a bayes sweep's runs as slots free up;
//! - [`local`]: child processes on this machine's slots ([`slots`], [`gpus`]);
//! - [`slurm`]: one batch job per attempt on a Slurm cluster;
//! - [`process`]: processes and their logs; [`events`]: what the loop reports.
//!
//! It never prints: it emits [`Event`]s that the command line shows as plain or JSON lines.

pub mod dispatch;
pub mod events;
pub mod gpus;
pub mod local;
pub mod process;
pub mod propose;
pub mod slots;
pub mod slurm;

pub use dispatch::{Backend, DispatchOptions, StopCount, Summary, dispatch};
pub use events::Event;
pub use slots::{GpuSelection, Slot};
