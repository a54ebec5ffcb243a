//! The scheduler: slots (GPUs or CPU cores), one child process per run, claims through the
//! lineage store, retries, interruption and resume. It never prints: it emits [`Event`]s that
//! the command line shows as plain or JSON lines.

pub mod events;
pub mod gpus;
pub mod runner;
pub mod slots;
pub mod slurm;

pub use events::Event;
pub use runner::{RunOptions, StopCount, Summary, run};
pub use slots::{GpuSelection, Slot};
