//! transformers' `CLIPModel` for the CLIP-I and CLIP-T metrics: the vision tower with its
//! projection (image embeddings), the text tower with its projection (text embeddings) and the
//! tokenizer, from one folder.
//!
//! Image embedding: `visual_projection(post_layernorm(encoder(pre_layrnorm(embeddings))[:, 0]))`
//! (sic `pre_layrnorm`, as the checkpoints name it). Text embedding:
//! `text_projection(last_hidden_state[b, eos])` where `eos` is, as in transformers, the first
//! position of `text_config.eos_token_id`, or, for legacy configs whose `eos_token_id` is 2, the
//! position of the largest id. Neither is normalised. Both towers share [`ClipEncoder`]; the
//! text tower is the trainable [`ClipTextModel`], loaded frozen.
//!
//! Sub-config keys that transformers 4 left out take `CLIPTextConfig` / `CLIPVisionConfig`
//! defaults; a `text_config_dict` / `vision_config_dict` replaces `text_config` /
//! `vision_config` entirely, as transformers does (its defaults fill the gaps, not the other
//! section).

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::config_path;
use super::patch::PatchEmbedding;
use super::preprocess::Preprocessor;
use super::weights::{self, Source};
use crate::model::clip::{Activation, ClipEncoder, ClipEncoderSpec, ClipTextConfig, ClipTextModel};
use crate::model::error::{ModelError, Result};
use crate::model::json;
use crate::model::nn::{LayerNorm, Linear, linear};
use crate::model::tokenizer::ClipTokenizer;

/// `text_config` of a `CLIPConfig`.
#[derive(Clone, Debug, Default, Deserialize)]
struct TextSection {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    eos_token_id: Option<i64>,
}

/// `vision_config` of a `CLIPConfig`.
#[derive(Clone, Debug, Default, Deserialize)]
struct VisionSection {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_channels: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

/// `config.json` of a `CLIPModel`.
#[derive(Debug, Default, Deserialize)]
struct ClipConfig {
    text_config: Option<TextSection>,
    text_config_dict: Option<TextSection>,
    vision_config: Option<VisionSection>,
    vision_config_dict: Option<VisionSection>,
    projection_dim: Option<usize>,
}

/// Where the text embedding is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EosRule {
    /// The first position holding this id (0 if none).
    First(u32),
    /// The first position of the largest id (configs with `eos_token_id` 2).
    Argmax,
}

impl EosRule {
    fn position(self, ids: &[u32]) -> usize {
        match self {
            EosRule::First(eos) => ids.iter().position(|&id| id == eos).unwrap_or(0),
            EosRule::Argmax => {
                // The first maximum, as torch.argmax returns.
                let max = ids.iter().copied().max().unwrap_or(0);
                ids.iter().position(|&id| id == max).unwrap_or(0)
            }
        }
    }
}

/// The vision tower's shape.
#[derive(Clone, Copy, Debug)]
struct VisionSpec {
    encoder: ClipEncoderSpec,
    channels: usize,
    image_size: usize,
    patch_size: usize,
}

/// `vision_model.*`: embeddings, `pre_layrnorm`, encoder, `post_layernorm`.
#[derive(Clone, Debug)]
struct VisionTower {
    class_embedding: Tensor,
    patch: PatchEmbedding,
    positions: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
    image_size: usize,
}

impl VisionTower {
    fn new(vb: VarBuilder, spec: &VisionSpec) -> CResult<Self> {
        let (d, eps) = (spec.encoder.hidden_size, spec.encoder.eps);
        let grid = spec.image_size / spec.patch_size;
        let emb = vb.pp("embeddings");
        Ok(Self {
            class_embedding: emb.get(d, "class_embedding")?.reshape((1, 1, d))?,
            patch: PatchEmbedding::new(emb.pp("patch_embedding"), spec.channels, d, spec.patch_size, false)?,
            positions: emb.pp("position_embedding").get((grid * grid + 1, d), "weight")?.unsqueeze(0)?,
            pre_layrnorm: LayerNorm::new(d, eps, vb.pp("pre_layrnorm"))?,
            encoder: ClipEncoder::new(vb.pp("encoder"), &spec.encoder)?,
            post_layernorm: LayerNorm::new(d, eps, vb.pp("post_layernorm"))?,
            image_size: spec.image_size,
        })
    }

    /// The encoder output [batch, 1 + patches, hidden] (before `post_layernorm`).
    fn forward(&self, pixels: &Tensor) -> CResult<Tensor> {
        let (n, _, h, w) = pixels.dims4()?;
        if (h, w) != (self.image_size, self.image_size) {
            candle_core::bail!("input image size ({h}*{w}) doesn't match model ({0}*{0})", self.image_size);
        }
        let patches = self.patch.forward(pixels)?;
        let cls = self.class_embedding.broadcast_as((n, 1, patches.dim(2)?))?;
        let xs = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.positions)?;
        self.encoder.forward(&self.pre_layrnorm.forward(&xs)?, false)
    }
}

/// A CLIP model: image and text embeddings in one space.
pub struct ClipModel {
    vision: VisionTower,
    visual_projection: Linear,
    text: ClipTextModel,
    text_projection: Linear,
    tokenizer: ClipTokenizer,
    eos: EosRule,
    preprocessor: Preprocessor,
    device: Device,
    projection_dim: usize,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel").field("projection_dim", &self.projection_dim).finish_non_exhaustive()
    }
}

impl ClipModel {
    /// Loads the `CLIPModel` folder `folder` (config.json, model.safetensors,
    /// preprocessor_config.json, tokenizer.json or vocab.json + merges.txt) onto `device`.
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        Self::load_with(folder, device, Source::File)
    }

    /// [`ClipModel::load`], its weights from `source`.
    pub(crate) fn load_with(folder: &Path, device: &Device, source: Source) -> Result<Self> {
        let config = config_path(folder)?;
        let raw: ClipConfig = json::read(&config)?;
        let text_section = raw.text_config_dict.or(raw.text_config).unwrap_or_default();
        let vision_section = raw.vision_config_dict.or(raw.vision_config).unwrap_or_default();
        let text_config = text_config(&text_section);
        let vision = vision_spec(&vision_section, &config)?;
        let projection_dim = raw.projection_dim.unwrap_or(512);
        let eos = match text_section.eos_token_id.unwrap_or(49407) {
            2 => EosRule::Argmax,
            id => EosRule::First(
                u32::try_from(id)
                    .map_err(|_| ModelError::config_key(&config, "text_config.eos_token_id", "must be a token id"))?,
            ),
        };

        let preprocessor = Preprocessor::from_folder(folder)?;
        preprocessor.expect_size((vision.image_size, vision.image_size), &config)?;
        if !folder.join("tokenizer.json").is_file() && !folder.join("vocab.json").is_file() {
            return Err(ModelError::Missing { path: folder.join("tokenizer.json") });
        }
        let tokenizer = ClipTokenizer::load(folder)?;
        if tokenizer.max_len() > text_config.max_position_embeddings {
            return Err(ModelError::config_key(
                &config,
                "text_config.max_position_embeddings",
                format!(
                    "is {}, shorter than the tokenizer's model_max_length {}",
                    text_config.max_position_embeddings,
                    tokenizer.max_len()
                ),
            ));
        }

        let (vision_tower, visual_projection, text, text_projection) =
            weights::build(&folder.join("model.safetensors"), device, source, |vb| {
                let text = ClipTextModel::new(vb.clone(), &text_config, &config)?;
                let text_projection = linear(text_config.hidden_size, projection_dim, false, vb.pp("text_projection"))?;
                let tower = VisionTower::new(vb.pp("vision_model"), &vision)?;
                let visual_projection =
                    linear(vision.encoder.hidden_size, projection_dim, false, vb.pp("visual_projection"))?;
                Ok((tower, visual_projection, text, text_projection))
            })?;
        Ok(Self {
            vision: vision_tower,
            visual_projection,
            text,
            text_projection,
            tokenizer,
            eos,
            preprocessor,
            device: device.clone(),
            projection_dim,
        })
    }

    /// The image processor of the folder.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The width of both embeddings (`projection_dim`).
    pub fn dim(&self) -> usize {
        self.projection_dim
    }

    /// The vision encoder's last hidden state [batch, 1 + patches, hidden] (before
    /// `post_layernorm`) of `pixels` [batch, 3, image_size, image_size].
    pub fn vision_last_hidden_state(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.vision.forward(&pixels.to_device(&self.device)?)?)
    }

    /// The image embeddings [batch, projection_dim] of `pixels` [batch, 3, image_size,
    /// image_size] (not normalised).
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        let cls = self.vision_last_hidden_state(pixels)?.i((.., 0))?;
        Ok(self.visual_projection.forward(&self.vision.post_layernorm.forward(&cls)?)?)
    }

    /// The padded token ids of each prompt, as the text tower reads them.
    pub fn input_ids(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        prompts.iter().map(|p| self.tokenizer.encode(p)).collect()
    }

    /// The text embeddings [prompts, projection_dim] (not normalised).
    pub fn text_embeds(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Ok(Tensor::zeros((0, self.projection_dim), DType::F32, &self.device)?);
        }
        let ids = self.input_ids(prompts)?;
        let (n, seq) = (ids.len(), self.tokenizer.max_len());
        let rows: Vec<u32> = ids.iter().enumerate().map(|(b, row)| (b * seq + self.eos.position(row)) as u32).collect();
        let input = Tensor::from_vec(ids.concat(), (n, seq), &self.device)?;
        let hidden = self.text.forward(&input)?;
        let pooled = hidden.reshape((n * seq, hidden.dim(2)?))?.index_select(&Tensor::new(rows, &self.device)?, 0)?;
        Ok(self.text_projection.forward(&pooled)?)
    }
}

/// `CLIPTextConfig` with its defaults.
fn text_config(s: &TextSection) -> ClipTextConfig {
    ClipTextConfig {
        vocab_size: s.vocab_size.unwrap_or(49408),
        hidden_size: s.hidden_size.unwrap_or(512),
        intermediate_size: s.intermediate_size.unwrap_or(2048),
        num_hidden_layers: s.num_hidden_layers.unwrap_or(12),
        num_attention_heads: s.num_attention_heads.unwrap_or(8),
        max_position_embeddings: s.max_position_embeddings.unwrap_or(77),
        hidden_act: s.hidden_act.clone().unwrap_or_else(|| "quick_gelu".into()),
        layer_norm_eps: s.layer_norm_eps.unwrap_or(1e-5),
    }
}

/// `CLIPVisionConfig` with its defaults, checked.
fn vision_spec(s: &VisionSection, config: &Path) -> Result<VisionSpec> {
    let key = |k: &str| format!("vision_config.{k}");
    let hidden = s.hidden_size.unwrap_or(768);
    let heads = s.num_attention_heads.unwrap_or(12);
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(ModelError::config_key(config, &key("num_attention_heads"), "must divide hidden_size"));
    }
    let (image_size, patch_size) = (s.image_size.unwrap_or(224), s.patch_size.unwrap_or(32));
    if patch_size == 0 || image_size < patch_size {
        return Err(ModelError::config_key(config, &key("patch_size"), "must be positive and at most image_size"));
    }
    let activation = Activation::parse(s.hidden_act.as_deref().unwrap_or("quick_gelu"), config)?;
    Ok(VisionSpec {
        encoder: ClipEncoderSpec {
            hidden_size: hidden,
            intermediate_size: s.intermediate_size.unwrap_or(3072),
            layers: s.num_hidden_layers.unwrap_or(12),
            heads,
            eps: s.layer_norm_eps.unwrap_or(1e-5),
            activation,
        },
        channels: s.num_channels.unwrap_or(3),
        image_size,
        patch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_position_follows_transformers() {
        let ids = [49406, 320, 1929, 49407, 49407, 49407];
        assert_eq!(EosRule::First(49407).position(&ids), 3);
        assert_eq!(EosRule::Argmax.position(&ids), 3);
        // A pad id equal to eos: still the first; a missing eos: position 0.
        assert_eq!(EosRule::First(7).position(&[1, 2, 7, 7]), 2);
        assert_eq!(EosRule::First(9).position(&[1, 2, 3]), 0);
        // The legacy rule takes the largest id, even if it is not the end token.
        assert_eq!(EosRule::Argmax.position(&[5, 60000, 3, 60000]), 1);
    }
}
