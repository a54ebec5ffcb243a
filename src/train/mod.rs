//! DreamBooth training: the loss (and, as the trainer lands, data, caches, the loop and
//! checkpoints).

pub mod loss;
