//! One evaluation: generate the images, embed them and the real instance images with the
//! judging models, and score. The base model's evaluation (step 0) is the same for every run of
//! a sweep with the same base model, settings and images, so it is computed once and kept in
//! the shared cache, as class images are.

use std::path::{Path, PathBuf};

use super::EvalError;
use super::generate::{Generated, files, generate, prompts};
use super::judges::Judges;
use super::metrics::Embedding;
use super::score::{Embeddings, Scores, score};
use crate::config::evaluation::EvaluationConfig;
use crate::image_set::ImageSet;
use crate::model::pipeline::StableDiffusion;

/// What one evaluation made: its scores and the images they came from.
#[derive(Clone, Debug)]
pub struct Evaluated {
    /// The scores.
    pub scores: Scores,
    /// The images, by prompt, and the class prompt's.
    pub images: Generated,
    /// Whether the scores came from the shared cache (nothing was generated).
    pub cached: bool,
}

/// What a judging model made of some images (`None`: the model is not configured).
type Embedded = Result<Option<Vec<Embedding>>, EvalError>;

/// The judging models and the real instance images' embeddings, loaded once per run.
pub struct Evaluator {
    settings: EvaluationConfig,
    judges: Judges,
    real: Embeddings,
    instance_fingerprint: String,
}

impl Evaluator {
    /// Loads the models `settings` names (built-in ones under `models_dir`) on `device` and
    /// embeds the images of `instance` once.
    pub fn new(
        settings: &EvaluationConfig,
        instance: &ImageSet,
        models_dir: &Path,
        device: &candle_core::Device,
    ) -> Result<Self, EvalError> {
        let judges = Judges::load(settings, models_dir, device)?;
        let real = Embeddings {
            dino_real: judges.dino_images(&instance.files)?,
            clip_real: judges.clip_images(&instance.files)?,
            ..Embeddings::default()
        };
        Ok(Self { settings: settings.clone(), judges, real, instance_fingerprint: instance.fingerprint.clone() })
    }

    /// Generates with `model` into `dir` and scores (`class_prompt` makes the PRES images, at
    /// `size` pixels).
    pub fn evaluate(
        &self,
        model: &StableDiffusion,
        class_prompt: &str,
        size: usize,
        dir: &Path,
    ) -> Result<Evaluated, EvalError> {
        let images = generate(model, &self.settings, class_prompt, size, dir)?;
        let scores = self.score(&images)?;
        Ok(Evaluated { scores, images, cached: false })
    }

    /// Scores images already generated.
    pub fn score(&self, images: &Generated) -> Result<Scores, EvalError> {
        let prompts = prompts(&self.settings);
        let texts: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
        let by_prompt = |embed: &dyn Fn(&[PathBuf]) -> Embedded| {
            images.by_prompt.iter().map(|files| embed(files)).collect::<Result<Option<Vec<_>>, _>>()
        };
        let e = Embeddings {
            dino_generated: by_prompt(&|f| self.judges.dino_images(f))?,
            clip_generated: by_prompt(&|f| self.judges.clip_images(f))?,
            clip_text: self.judges.clip_texts(&texts)?,
            dino_class: self.judges.dino_images(&images.class)?,
            ..self.real.clone()
        };
        let pairs: Vec<(String, String)> = prompts.into_iter().map(|p| (p.prompt, p.text)).collect();
        Ok(score(&pairs, &e))
    }

    /// The base model's evaluation, from the shared cache under `cache_root` or computed
    /// into it once (`model_key` names the base model; concurrent runs wait for one another).
    pub fn baseline(
        &self,
        model: &StableDiffusion,
        model_key: &str,
        class_prompt: &str,
        size: usize,
        cache_root: &Path,
    ) -> Result<Evaluated, EvalError> {
        let identity = serde_json::json!({
            "model": model_key,
            "settings": self.settings,
            "judges": self.judges.identity(),
            "instance": self.instance_fingerprint,
            "class_prompt": class_prompt,
            "size": size,
        });
        let key = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(identity.to_string().as_bytes()));
        let dir = cache_root.join("eval").join(&key[..24]);
        let io = |path: &Path, e: std::io::Error| EvalError::Io { path: path.to_path_buf(), message: e.to_string() };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        lock.lock().map_err(|e| io(&lock_path, e))?;
        let scores_path = dir.join("scores.json");
        let expected = files(&self.settings, &dir);
        if let Ok(text) = std::fs::read_to_string(&scores_path)
            && let Ok(scores) = serde_json::from_str::<Scores>(&text)
            && expected.by_prompt.iter().flatten().chain(&expected.class).all(|f| f.exists())
        {
            return Ok(Evaluated { scores, images: expected, cached: true });
        }
        let evaluated = self.evaluate(model, class_prompt, size, &dir)?;
        let text = serde_json::to_vec_pretty(&evaluated.scores).expect("scores serialize");
        crate::atomic_file::write(&scores_path, &text).map_err(|e| io(&scores_path, e))?;
        Ok(evaluated)
    }
}
