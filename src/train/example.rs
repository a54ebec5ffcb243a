//! Training examples: each image's cached latent distributions, or its file when it is cropped
//! at random at every use.

use std::path::PathBuf;

use candle_core::Tensor;

use super::cache::TensorCache;
use super::error::TrainError;
use crate::config::ExperimentConfig;
use crate::image_set::ImageSet;
use crate::model::pipeline::StableDiffusion;

/// One training image: its cached latent distributions (centre crop), or, with random
/// crops, the file to crop and encode afresh at every use.
pub enum Example {
    /// Latent mean and log-variance, stacked, of the image and (with random flips) its mirror.
    Cached {
        /// The image's.
        plain: Tensor,
        /// The mirrored image's.
        flipped: Option<Tensor>,
    },
    /// The file, cropped at random at every use.
    RandomCrop(PathBuf),
}

impl Example {
    /// The examples of `set` under the run's cropping and flipping settings, latents from
    /// (or into) `latents`.
    pub fn encode_all(
        set: &ImageSet,
        cfg: &ExperimentConfig,
        model: &StableDiffusion,
        latents: &mut TensorCache,
    ) -> Result<Vec<Example>, TrainError> {
        let device = &model.device;
        set.files
            .iter()
            .zip(&set.hashes)
            .map(|(file, sha)| {
                if !cfg.data.center_crop {
                    return Ok(Example::RandomCrop(file.clone()));
                }
                let plain = latents.latent(model, file, sha, cfg.data.resolution, false, device)?;
                let flipped = cfg
                    .data
                    .random_flip
                    .then(|| latents.latent(model, file, sha, cfg.data.resolution, true, device))
                    .transpose()?;
                Ok(Example::Cached { plain, flipped })
            })
            .collect()
    }
}
