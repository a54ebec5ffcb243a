//! After the sweep: comparing runs, choosing the best checkpoint, exporting it, and the
//! reports built on the lineage store.

pub mod compare;
pub mod dashboard;
pub mod export;
pub mod reference;
pub mod tensorboard;
