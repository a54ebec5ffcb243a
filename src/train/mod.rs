//! DreamBooth training: the loss, the optimiser, learning-rate schedules and training data
//! (the loop, caches and checkpoints build on these).

pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod loss;
pub mod lr_schedule;
pub mod optimizer;
pub mod precision;
pub mod trainer;
