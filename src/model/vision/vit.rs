//! transformers' `ViTModel` as the DINO metric uses it (facebook/dino-vits16: no pooler in the
//! checkpoint, `gelu`, layer norms before attention and MLP).
//!
//! Checkpoints name the blocks `encoder.layer.N.{attention.attention.{query,key,value},
//! attention.output.dense, intermediate.dense, output.dense, layernorm_{before,after}}`, which
//! `save_pretrained` still writes; transformers 5 names the modules `layers.N.{attention.
//! {q,k,v,o}_proj, mlp.fc1, mlp.fc2, ...}` (its `conversion_mapping.py`), and a file with those
//! names loads too. A `pooler.*` in the file is ignored.
//!
//! [`VitModel`], the loaded encoder with its image processor, is also what DINOv2 folders load
//! into ([`super::dinov2`]).

use std::path::Path;

use candle_core::{Device, IndexOp, Tensor};
use serde::Deserialize;

use super::backbone::{Backbone, BackboneSpec, CommonConfig, Layout, MlpKind};
use super::config_path;
use super::preprocess::Preprocessor;
use super::weights::{self, Source};
use crate::model::error::Result;
use crate::model::json;

/// The checkpoint layout, then transformers 5's module names.
pub const LAYOUTS: [Layout; 2] = [
    Layout {
        layers: "encoder.layer",
        norm1: "layernorm_before",
        norm2: "layernorm_after",
        qkvo: [
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        ],
        fc: ["intermediate.dense", "output.dense"],
        swiglu: None,
        scales: None,
    },
    Layout {
        layers: "layers",
        norm1: "layernorm_before",
        norm2: "layernorm_after",
        qkvo: ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"],
        fc: ["mlp.fc1", "mlp.fc2"],
        swiglu: None,
        scales: None,
    },
];

/// `config.json` of a `ViTModel`; absent keys take `ViTConfig`'s defaults.
#[derive(Debug, Default, Deserialize)]
struct VitConfig {
    #[serde(flatten)]
    common: CommonConfig,
    intermediate_size: Option<usize>,
}

/// Loads the `ViTModel` folder `folder` (config.json, model.safetensors,
/// preprocessor_config.json) onto `device`.
pub fn load(folder: &Path, device: &Device) -> Result<VitModel> {
    load_with(folder, device, Source::File)
}

/// [`load`], its weights from `source`.
pub(crate) fn load_with(folder: &Path, device: &Device, source: Source) -> Result<VitModel> {
    let config = config_path(folder)?;
    let raw: VitConfig = json::read(&config)?;
    let mlp = MlpKind::Plain(raw.intermediate_size.unwrap_or(3072));
    let spec = raw.common.spec(&config, 1e-12, 16, mlp, false)?;
    VitModel::load(folder, device, source, &spec, &LAYOUTS, "vit")
}

/// A ViT-family image encoder loaded from a transformers folder, with its image processor.
#[derive(Clone, Debug)]
pub struct VitModel {
    backbone: Backbone,
    preprocessor: Preprocessor,
    device: Device,
}

impl VitModel {
    /// Loads `model.safetensors` of `folder` as described by `spec`,
    /// trying each of `layouts` in turn (see [`Layout::pick`](super::backbone::Layout::pick)); weights saved under a head
    /// model's prefix (`base_prefix`, e.g. `vit.` for `ViTForImageClassification`) are found too.
    pub(crate) fn load(
        folder: &Path,
        device: &Device,
        source: Source,
        spec: &BackboneSpec,
        layouts: &[Layout],
        base_prefix: &str,
    ) -> Result<Self> {
        let preprocessor = Preprocessor::from_folder(folder)?;
        if !spec.interpolate {
            preprocessor.expect_size(spec.image_size, &config_path(folder)?)?;
        }
        let backbone = weights::build(&folder.join("model.safetensors"), device, source, |vb| {
            let vb = if !vb.contains_tensor("embeddings.cls_token")
                && vb.contains_tensor(&format!("{base_prefix}.embeddings.cls_token"))
            {
                vb.pp(base_prefix)
            } else {
                vb
            };
            let layout = Layout::pick(&vb, layouts);
            Ok(Backbone::new(vb, spec, &layout)?)
        })?;
        Ok(Self { backbone, preprocessor, device: device.clone() })
    }

    /// The image processor of the folder.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The last hidden state [batch, 1 + patches, hidden] (after the final layernorm).
    pub fn last_hidden_state(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.backbone.forward(&pixels.to_device(&self.device)?)?)
    }

    /// The CLS embeddings [batch, hidden] of `pixels` [batch, 3, h, w]: row 0 of the last
    /// hidden state, the DINO / DINOv2 image embedding.
    pub fn cls(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.last_hidden_state(pixels)?.i((.., 0))?.contiguous()?)
    }

    /// The embedding width.
    pub fn dim(&self) -> usize {
        self.backbone.dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clip::Activation;

    #[test]
    fn the_fixture_config_and_the_defaults() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/vit/config.json");
        let raw: VitConfig = json::read(&config).unwrap();
        let spec = raw.common.spec(&config, 1e-12, 16, MlpKind::Plain(37), false).unwrap();
        assert_eq!((spec.hidden_size, spec.layers, spec.heads, spec.eps), (32, 2, 2, 1e-6));
        assert_eq!((spec.patch_size, spec.image_size, spec.qkv_bias), (8, (32, 32), true));
        assert_eq!(raw.intermediate_size, Some(37));
        // An empty config is ViT-Base/16 at 224 with eps 1e-12.
        let raw: VitConfig = serde_json::from_str("{}").unwrap();
        let spec = raw.common.spec(&config, 1e-12, 16, MlpKind::Plain(3072), false).unwrap();
        assert_eq!((spec.hidden_size, spec.layers, spec.heads, spec.eps), (768, 12, 12, 1e-12));
        assert_eq!((spec.patch_size, spec.image_size, spec.activation), (16, (224, 224), Activation::Gelu));
        let raw: VitConfig = serde_json::from_str(r#"{"patch_size": [16, 8]}"#).unwrap();
        assert!(raw.common.spec(&config, 1e-12, 16, MlpKind::Plain(1), false).is_err());
    }
}
