//! After the sweep: comparing runs and choosing the best ([`compare`]), naming checkpoints
//! ([`checkpoint_ref`]), scoring existing checkpoints ([`evaluate`]), exporting one ([`export`]), reproducing a run ([`reproduce`]),
//! freeing disk ([`gc`]), the Pareto front of two metrics ([`pareto`]), and the reports built
//! on the lineage store ([`dashboard`], [`tensorboard`]).

pub mod checkpoint_ref;
pub mod compare;
pub mod dashboard;
pub mod evaluate;
pub mod export;
pub mod gc;
pub mod pareto;
pub mod reproduce;
pub mod tensorboard;
