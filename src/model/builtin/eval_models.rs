//! The built-in evaluation models, `builtin:clip-tiny` (a `CLIPModel`) and `builtin:dino-tiny`
//! (a `ViTModel` in the layout of facebook/dino-vits16): tiny, random, written once under
//! `ROOT/models/` as ordinary transformers folders (`config.json`, `model.safetensors`,
//! `preprocessor_config.json`, and CLIP's tokenizer), so the whole evaluation path runs with
//! nothing downloaded. Their scores carry no meaning: point `evaluation.clip_model` and
//! `evaluation.dino_model` at real models for that.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{MERGES, VOCAB, tokenizer_config, write_once};
use crate::model::error::{ModelError, Result};
use crate::model::vision;

/// The built-in CLIP model's name.
pub const CLIP_TINY: &str = "builtin:clip-tiny";
/// The built-in DINO model's name.
pub const DINO_TINY: &str = "builtin:dino-tiny";

/// Seed of the built-in evaluation models' weights.
const SEED: u64 = 0xE7A1;

/// The folder that `model` (an evaluation model setting) names: a built-in evaluation model,
/// written under `models_dir` on first use, or the folder itself.
pub fn resolve(model: &str, models_dir: &Path) -> Result<PathBuf> {
    match model {
        CLIP_TINY => write_once(models_dir, "builtin-clip-tiny-v1", "model.safetensors", write_clip),
        DINO_TINY => write_once(models_dir, "builtin-dino-tiny-v1", "model.safetensors", write_dino),
        other if other.starts_with("builtin:") => Err(ModelError::Layout {
            folder: PathBuf::from(other),
            what: "this built-in evaluation model".into(),
            expected: format!("`{CLIP_TINY}`, `{DINO_TINY}` or a transformers model folder"),
        }),
        folder => Ok(PathBuf::from(folder)),
    }
}

/// Checks the evaluation model `model` names without writing or reading weights: a built-in
/// name (`None`: nothing to check), or a folder checked by [`vision::check`] (its family).
pub fn check(model: &str) -> Result<Option<vision::Architecture>> {
    match model {
        CLIP_TINY | DINO_TINY => Ok(None),
        other => resolve(other, Path::new("")).and_then(|folder| vision::check(&folder)).map(Some),
    }
}

fn write(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).expect("json");
    std::fs::write(&path, text).map_err(|e| ModelError::Write { path, message: e.to_string() })
}

/// A tiny CLIPModel over the built-in 1000-token vocabulary, 32 px images.
fn write_clip(dir: &Path) -> Result<()> {
    write(
        dir,
        "config.json",
        &json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": 16,
            "logit_scale_init_value": 2.6592,
            "text_config": {
                "model_type": "clip_text_model", "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37,
                "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 998, "eos_token_id": 999,
                "pad_token_id": 999
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_channels": 3, "image_size": 32, "patch_size": 8,
                "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5
            }
        }),
    )?;
    write(
        dir,
        "preprocessor_config.json",
        &json!({
            "image_processor_type": "CLIPImageProcessor", "do_resize": true, "size": {"shortest_edge": 32},
            "resample": 3, "do_center_crop": true, "crop_size": {"height": 32, "width": 32}, "do_rescale": true,
            "rescale_factor": 1.0 / 255.0, "do_normalize": true, "do_convert_rgb": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]
        }),
    )?;
    let text = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| ModelError::Write { path, message: e.to_string() })
    };
    text("vocab.json", VOCAB)?;
    text("merges.txt", MERGES)?;
    write(dir, "tokenizer_config.json", &tokenizer_config())?;
    vision::write_random_weights(dir, SEED)
}

/// A tiny ViTModel in dino-vits16's layout (no pooler), 32 px images.
fn write_dino(dir: &Path) -> Result<()> {
    write(
        dir,
        "config.json",
        &json!({
            "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 37, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
            "image_size": 32, "patch_size": 8, "num_channels": 3, "qkv_bias": true
        }),
    )?;
    write(
        dir,
        "preprocessor_config.json",
        &json!({
            "image_processor_type": "ViTImageProcessor", "do_resize": true, "size": {"height": 32, "width": 32},
            "resample": 2, "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]
        }),
    )?;
    vision::write_random_weights(dir, SEED ^ 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_evaluation_models_load_as_transformers_folders_and_are_identical_everywhere() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for name in [CLIP_TINY, DINO_TINY] {
            let (x, y) = (resolve(name, a.path()).unwrap(), resolve(name, b.path()).unwrap());
            let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
            assert_eq!(bytes(&x), bytes(&y), "{name} is the same everywhere");
            let model = vision::load(&x, &candle_core::Device::Cpu).unwrap();
            assert_eq!(model.architecture() == vision::Architecture::Clip, name == CLIP_TINY);
        }
        assert!(resolve("builtin:clip-huge", a.path()).unwrap_err().to_string().contains(CLIP_TINY));
    }
}
