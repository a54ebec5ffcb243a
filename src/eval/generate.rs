//! The images an evaluation scores: `images_per_prompt` per prompt template (the subject
//! phrase in place of `{}`), and as many from the class prompt alone (for PRES), each with a
//! fixed seed so the same model always makes the same images. They are written as PNG files
//! carrying their prompt and seed, and judged from those files, as a script reading them would.

use std::path::{Path, PathBuf};

use crate::config::evaluation::{EvaluationConfig, fill};
use crate::model::pipeline::{SampleRequest, StableDiffusion};
use crate::model::{ModelError, png};

/// One prompt of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalPrompt {
    /// What the model generates from (the subject phrase in the template).
    pub prompt: String,
    /// What CLIP-T compares the images with (the class phrase in the template).
    pub text: String,
}

/// The prompts of an evaluation with `settings`.
pub fn prompts(settings: &EvaluationConfig) -> Vec<EvalPrompt> {
    settings
        .templates()
        .iter()
        .map(|t| EvalPrompt { prompt: fill(t, &settings.subject_phrase), text: fill(t, &settings.class_phrase) })
        .collect()
}

/// The files of one evaluation's images.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// Per prompt, its images in seed order.
    pub by_prompt: Vec<Vec<PathBuf>>,
    /// The images of the class prompt alone.
    pub class: Vec<PathBuf>,
}

/// The files of an evaluation with `settings` in `dir`: each prompt's images as `pNN-I.png`,
/// the class prompt's as `class-I.png`.
pub fn files(settings: &EvaluationConfig, dir: &Path) -> Generated {
    let n = settings.images_per_prompt as usize;
    let by_prompt = (0..settings.templates().len())
        .map(|k| (0..n).map(|i| dir.join(format!("p{k:02}-{i}.png"))).collect())
        .collect();
    Generated { by_prompt, class: (0..n).map(|i| dir.join(format!("class-{i}.png"))).collect() }
}

/// Generates every image of an evaluation with `model` into `dir` (created), named as
/// [`files`] says, image `I` of each prompt with seed `settings.seed + I`, at `size` pixels.
pub fn generate(
    model: &StableDiffusion,
    settings: &EvaluationConfig,
    class_prompt: &str,
    size: usize,
    dir: &Path,
) -> Result<Generated, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Write { path: dir.to_path_buf(), message: e.to_string() })?;
    let make = |prompt: &str, paths: &[PathBuf]| -> Result<(), ModelError> {
        let (steps, count) = (settings.steps as usize, settings.images_per_prompt as usize);
        let req = SampleRequest::seeded(prompt, steps, settings.guidance, settings.seed, count, size);
        let images = png::to_rgb8(&model.sample(&req)?.images)?;
        for (i, (image, path)) in images.iter().zip(paths).enumerate() {
            let seed = settings.seed + i as u64;
            png::write(path, image, &[("prompt", prompt.to_string()), ("seed", seed.to_string())])?;
        }
        Ok(())
    };
    let generated = files(settings, dir);
    for (p, paths) in prompts(settings).iter().zip(&generated.by_prompt) {
        make(&p.prompt, paths)?;
    }
    make(class_prompt, &generated.class)?;
    Ok(generated)
}
