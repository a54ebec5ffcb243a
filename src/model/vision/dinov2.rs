//! transformers' `Dinov2Model` (facebook/dinov2-*): a ViT with layer scale, an optional SwiGLU
//! MLP, a mask token (unused here) and position embeddings interpolated (bicubic) to the patch
//! grid of the input, since the processor crops smaller images (224) than the config's
//! `image_size` (518).
//!
//! Checkpoints name the attention `encoder.layer.N.attention.attention.{query,key,value}` and
//! `attention.output.dense`, the SwiGLU MLP `mlp.weights_in` / `mlp.weights_out`; transformers
//! 5 names the modules `attention.{q,k,v,o}_proj` and `mlp.{gate,up,down}_proj`, which load too.
//! `Dinov2WithRegistersModel` (register tokens) is refused by [`super::load`].

use std::path::Path;

use candle_core::Device;
use serde::Deserialize;

use super::backbone::{CommonConfig, Layout, MlpKind, SwiGluNames};
use super::config_path;
use super::vit::VitModel;
use super::weights::Source;
use crate::model::error::{ModelError, Result};
use crate::model::json;

/// The checkpoint layout, then transformers 5's module names.
pub const LAYOUTS: [Layout; 2] = [
    Layout {
        layers: "encoder.layer",
        norm1: "norm1",
        norm2: "norm2",
        qkvo: [
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        ],
        fc: ["mlp.fc1", "mlp.fc2"],
        swiglu: Some(SwiGluNames::Fused("mlp.weights_in", "mlp.weights_out")),
        scales: Some(["layer_scale1.lambda1", "layer_scale2.lambda1"]),
    },
    Layout {
        layers: "encoder.layer",
        norm1: "norm1",
        norm2: "norm2",
        qkvo: ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"],
        fc: ["mlp.fc1", "mlp.fc2"],
        swiglu: Some(SwiGluNames::Split("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
        scales: Some(["layer_scale1.lambda1", "layer_scale2.lambda1"]),
    },
];

/// `config.json` of a `Dinov2Model`; absent keys take `Dinov2Config`'s defaults.
#[derive(Debug, Default, Deserialize)]
struct Dinov2Config {
    #[serde(flatten)]
    common: CommonConfig,
    mlp_ratio: Option<f64>,
    use_swiglu_ffn: Option<bool>,
}

/// Loads the `Dinov2Model` folder `folder` (config.json, model.safetensors,
/// preprocessor_config.json) onto `device`.
pub fn load(folder: &Path, device: &Device) -> Result<VitModel> {
    load_with(folder, device, Source::File)
}

/// [`load`], its weights from `source`.
pub(crate) fn load_with(folder: &Path, device: &Device, source: Source) -> Result<VitModel> {
    let config = config_path(folder)?;
    let raw: Dinov2Config = json::read(&config)?;
    let ratio = raw.mlp_ratio.unwrap_or(4.0);
    if !(ratio > 0.0 && ratio.is_finite()) {
        return Err(ModelError::config_key(&config, "mlp_ratio", "must be positive"));
    }
    let mlp = mlp_kind(raw.common.hidden_size(), ratio, raw.use_swiglu_ffn.unwrap_or(false));
    let spec = raw.common.spec(&config, 1e-6, 14, mlp, true)?;
    VitModel::load(folder, device, source, &spec, &LAYOUTS, "dinov2")
}

/// The feed-forward: `int(hidden_size * mlp_ratio)` wide, or for SwiGLU two thirds of that
/// rounded up to a multiple of 8, `(int(h * 2 / 3) + 7) // 8 * 8`.
fn mlp_kind(hidden: usize, ratio: f64, swiglu: bool) -> MlpKind {
    let inner = (hidden as f64 * ratio) as usize;
    if swiglu { MlpKind::SwiGlu((((inner * 2) as f64 / 3.0) as usize).div_ceil(8) * 8) } else { MlpKind::Plain(inner) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_widths_follow_transformers() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/dinov2/config.json");
        let raw: Dinov2Config = json::read(&config).unwrap();
        assert_eq!((raw.common.hidden_size(), raw.mlp_ratio, raw.use_swiglu_ffn), (32, Some(4.0), Some(false)));
        let spec = raw.common.spec(&config, 1e-6, 14, MlpKind::Plain(128), true).unwrap();
        assert_eq!((spec.eps, spec.patch_size, spec.image_size, spec.layer_scale), (1e-6, 8, (40, 40), true));
        assert_eq!(mlp_kind(32, 4.0, false), MlpKind::Plain(128));
        // facebook/dinov2-giant (hidden 1536, SwiGLU): weights_in is [8192, 1536].
        assert_eq!(mlp_kind(1536, 4.0, true), MlpKind::SwiGlu(4096));
        // int(int(40 * 4) * 2 / 3) = 106, rounded up to 112; a float ratio truncates.
        assert_eq!(mlp_kind(40, 4.0, true), MlpKind::SwiGlu(112));
        assert_eq!(mlp_kind(10, 2.55, false), MlpKind::Plain(25));
    }
}
