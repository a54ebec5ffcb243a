//! Frozen image and text embedding models for the DreamBooth evaluation metrics (DINO, CLIP-I,
//! CLIP-T; arXiv 2208.12242), loaded from folders written by transformers' `save_pretrained`:
//! `CLIPModel` ([`clip`]), `ViTModel` ([`vit`], e.g. facebook/dino-vits16) and `Dinov2Model`
//! ([`dinov2`]). Nothing is downloaded.
//!
//! Parity with PyTorch + transformers is the point, so each piece follows transformers' PIL
//! path exactly: the preprocessing ([`preprocess`], with Pillow's resize in [`resize`] and
//! transformers' RGB conversion in [`decode`]) gives the same pixel values bit for bit, and the
//! models ([`backbone`], [`clip`]) the same embeddings to float rounding. These are our own
//! modules, not candle-transformers': its DINOv2 expects timm's tensor names (fused qkv) and
//! interpolates positions differently, its CLIP fixes the activation and epsilon, and the crate
//! would add minutes of compilation.
//!
//! Weights are loaded once, as constants (module `weights`): the models are never trained.

pub mod backbone;
pub mod bicubic;
pub mod clip;
pub mod decode;
pub mod dinov2;
pub mod patch;
pub mod preprocess;
pub mod resize;
pub mod vit;
mod weights;

use weights::Source;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

pub use clip::ClipModel;
pub use preprocess::Preprocessor;
pub use vit::VitModel;

use crate::model::error::{ModelError, Result};
use crate::model::json;

/// The model families [`load`] supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `CLIPModel` (`model_type` `clip`).
    Clip,
    /// `ViTModel` (`vit`).
    Vit,
    /// `Dinov2Model` (`dinov2`).
    Dinov2,
}

/// The keys of `config.json` that name the architecture.
#[derive(Debug, Default, Deserialize)]
struct Header {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
}

/// The folder's `config.json`.
fn config_path(folder: &Path) -> Result<PathBuf> {
    let path = folder.join("config.json");
    if path.is_file() { Ok(path) } else { Err(ModelError::Missing { path }) }
}

/// The architecture of the transformers folder `folder`, from its `config.json`: its
/// `model_type`, or else its `architectures`.
pub fn architecture(folder: &Path) -> Result<Architecture> {
    let path = config_path(folder)?;
    let header: Header = json::read(&path)?;
    let by_type = match header.model_type.as_deref() {
        Some("clip") => Some(Architecture::Clip),
        Some("vit") => Some(Architecture::Vit),
        Some("dinov2") => Some(Architecture::Dinov2),
        Some("dinov2_with_registers") => {
            return Err(ModelError::config_key(
                &path,
                "model_type",
                "`dinov2_with_registers` is not supported (register tokens); use a facebook/dinov2-* model",
            ));
        }
        _ => None,
    };
    let by_class = || {
        header.architectures.iter().flatten().find_map(|a| match a.as_str() {
            "CLIPModel" => Some(Architecture::Clip),
            "ViTModel" => Some(Architecture::Vit),
            "Dinov2Model" => Some(Architecture::Dinov2),
            _ => None,
        })
    };
    by_type.or_else(by_class).ok_or_else(|| {
        let found = header.model_type.as_deref().map_or("none".to_string(), |t| format!("`{t}`"));
        ModelError::config_key(
            &path,
            "model_type",
            format!(
                "{found} is not supported; expected clip (CLIPModel), vit (ViTModel, e.g. facebook/dino-vits16) \
                 or dinov2 (Dinov2Model, e.g. facebook/dinov2-small)"
            ),
        )
    })
}

/// An evaluation model.
#[derive(Debug)]
pub enum EmbeddingModel {
    /// CLIP: image and text embeddings (CLIP-I, CLIP-T). Boxed: it holds the tokenizer.
    Clip(Box<ClipModel>),
    /// ViT, e.g. DINO ViT-S/16: CLS embeddings (DINO).
    Vit(VitModel),
    /// DINOv2: CLS embeddings.
    Dinov2(VitModel),
}

/// Loads the transformers folder `folder` (`config.json`, `model.safetensors`,
/// `preprocessor_config.json`, and for CLIP its tokenizer) onto `device`. A missing or
/// malformed file, a missing or mis-shaped tensor and an unsupported architecture are errors
/// naming the file (and key).
pub fn load(folder: &Path, device: &Device) -> Result<EmbeddingModel> {
    load_with(folder, device, Source::File)
}

/// Checks the transformers folder `folder` as [`load`] would load it (configs, image processor,
/// tokenizer, every tensor's name and shape), without reading the weights: before a run starts.
pub fn check(folder: &Path) -> Result<Architecture> {
    load_with(folder, &Device::Cpu, Source::Header).map(|m| m.architecture())
}

/// Writes `model.safetensors` into `folder` (whose configs, preprocessor and tokenizer files
/// are there) with random weights drawn from `seed`: exactly the tensors [`load`] reads, so
/// the folder then loads as any transformers folder does. For the built-in evaluation models.
pub fn write_random_weights(folder: &Path, seed: u64) -> Result<()> {
    load_with(folder, &Device::Cpu, Source::Random(seed)).map(drop)
}

fn load_with(folder: &Path, device: &Device, source: Source) -> Result<EmbeddingModel> {
    if !folder.is_dir() {
        return Err(ModelError::Missing { path: folder.to_path_buf() });
    }
    Ok(match architecture(folder)? {
        Architecture::Clip => EmbeddingModel::Clip(Box::new(ClipModel::load_with(folder, device, source)?)),
        Architecture::Vit => EmbeddingModel::Vit(vit::load_with(folder, device, source)?),
        Architecture::Dinov2 => EmbeddingModel::Dinov2(dinov2::load_with(folder, device, source)?),
    })
}

impl EmbeddingModel {
    /// The model family.
    pub fn architecture(&self) -> Architecture {
        match self {
            EmbeddingModel::Clip(_) => Architecture::Clip,
            EmbeddingModel::Vit(_) => Architecture::Vit,
            EmbeddingModel::Dinov2(_) => Architecture::Dinov2,
        }
    }

    /// The image processor of the folder.
    pub fn preprocessor(&self) -> &Preprocessor {
        match self {
            EmbeddingModel::Clip(m) => m.preprocessor(),
            EmbeddingModel::Vit(m) | EmbeddingModel::Dinov2(m) => m.preprocessor(),
        }
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        match self {
            EmbeddingModel::Clip(m) => m.device(),
            EmbeddingModel::Vit(m) | EmbeddingModel::Dinov2(m) => m.device(),
        }
    }

    /// The CLIP model, for text embeddings.
    pub fn as_clip(&self) -> Option<&ClipModel> {
        match self {
            EmbeddingModel::Clip(m) => Some(m),
            _ => None,
        }
    }

    /// The width of the image embeddings.
    pub fn dim(&self) -> usize {
        match self {
            EmbeddingModel::Clip(m) => m.dim(),
            EmbeddingModel::Vit(m) | EmbeddingModel::Dinov2(m) => m.dim(),
        }
    }

    /// The image embeddings [batch, dim] of preprocessed `pixels` [batch, 3, h, w]: CLIP's
    /// projected embedding, or the CLS embedding of ViT / DINOv2.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        match self {
            EmbeddingModel::Clip(m) => m.image_embeds(pixels),
            EmbeddingModel::Vit(m) | EmbeddingModel::Dinov2(m) => m.cls(pixels),
        }
    }

    /// The image embeddings [files, dim] of image files, preprocessed and embedded `batch` at
    /// a time.
    pub fn embed_files(&self, files: &[PathBuf], batch: usize) -> Result<Tensor> {
        let parts = files
            .chunks(batch.max(1))
            .map(|chunk| self.image_embeds(&self.preprocessor().batch(chunk, self.device())?))
            .collect::<Result<Vec<_>>>()?;
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), candle_core::DType::F32, self.device())?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}
