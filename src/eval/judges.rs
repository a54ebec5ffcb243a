//! The judging models of an evaluation: a CLIP model (image and text embeddings) and a DINO
//! model (ViT or DINOv2 CLS embeddings), loaded once, each optional.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use super::EvalError;
use super::metrics::Embedding;
use crate::config::evaluation::EvaluationConfig;
use crate::model::builtin::eval_models;
use crate::model::vision::{self, Architecture, EmbeddingModel};
use crate::model::{ModelError, json as model_json};

/// Images embedded at once.
const BATCH: usize = 8;

/// The models that score an evaluation.
pub struct Judges {
    clip: Option<EmbeddingModel>,
    dino: Option<EmbeddingModel>,
    identity: Value,
}

/// Loads the model `setting` names (built-in ones under `models_dir`) and checks it is one of
/// `allowed`, naming `key` otherwise.
fn load(
    key: &str,
    setting: &str,
    allowed: &[Architecture],
    models_dir: &Path,
    device: &Device,
) -> Result<(EmbeddingModel, Value), EvalError> {
    let folder = eval_models::resolve(setting, models_dir)?;
    let architecture = vision::architecture(&folder)?;
    if !allowed.contains(&architecture) {
        let config = folder.join("config.json");
        let expected = if allowed.contains(&Architecture::Clip) { "a CLIPModel" } else { "a ViTModel or Dinov2Model" };
        let message = format!("{key} needs {expected} folder; this is a {architecture:?} model");
        return Err(ModelError::config_key(&config, "model_type", message).into());
    }
    let model = vision::load(&folder, device)?;
    // What identifies the model for the shared baseline: its folder and its weights' size and
    // modification time (the weights are not hashed: real ones are gigabytes).
    let weights = std::fs::metadata(folder.join("model.safetensors")).ok();
    let stamp = weights.map(|m| (m.len(), m.modified().ok().map(|t| format!("{t:?}"))));
    let config: Value = model_json::read(&folder.join("config.json"))?;
    Ok((model, json!({"setting": setting, "folder": folder, "weights": stamp, "config": config})))
}

impl Judges {
    /// Loads the models `settings` names onto `device` (none when unset).
    pub fn load(settings: &EvaluationConfig, models_dir: &Path, device: &Device) -> Result<Self, EvalError> {
        let clip = settings
            .clip_model
            .as_deref()
            .map(|m| load("evaluation.clip_model", m, &[Architecture::Clip], models_dir, device))
            .transpose()?;
        let dino = settings
            .dino_model
            .as_deref()
            .map(|m| load("evaluation.dino_model", m, &[Architecture::Vit, Architecture::Dinov2], models_dir, device))
            .transpose()?;
        let identity = json!({
            "clip": clip.as_ref().map(|(_, id)| id),
            "dino": dino.as_ref().map(|(_, id)| id),
        });
        Ok(Self { clip: clip.map(|(m, _)| m), dino: dino.map(|(m, _)| m), identity })
    }

    /// DINO embeddings of image `files` (`None` without a DINO model).
    pub fn dino_images(&self, files: &[PathBuf]) -> Result<Option<Vec<Embedding>>, EvalError> {
        self.dino.as_ref().map(|m| rows(m.embed_files(files, BATCH)?)).transpose()
    }

    /// CLIP image embeddings of image `files` (`None` without a CLIP model).
    pub fn clip_images(&self, files: &[PathBuf]) -> Result<Option<Vec<Embedding>>, EvalError> {
        self.clip.as_ref().map(|m| rows(m.embed_files(files, BATCH)?)).transpose()
    }

    /// CLIP text embeddings of `texts` (`None` without a CLIP model).
    pub fn clip_texts(&self, texts: &[String]) -> Result<Option<Vec<Embedding>>, EvalError> {
        let Some(clip) = self.clip.as_ref().and_then(EmbeddingModel::as_clip) else { return Ok(None) };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        rows(clip.text_embeds(&refs)?).map(Some)
    }

    /// What identifies these models (for the shared baseline's cache key).
    pub fn identity(&self) -> &Value {
        &self.identity
    }
}

/// The rows of a [n, d] embedding tensor.
fn rows(t: Tensor) -> Result<Vec<Embedding>, EvalError> {
    Ok(t.to_dtype(candle_core::DType::F32).and_then(|t| t.to_vec2::<f32>()).map_err(ModelError::from)?)
}
