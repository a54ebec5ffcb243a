//! Built-in models, so that every command runs with nothing downloaded: `builtin:tiny`, a tiny
//! Stable Diffusion of the real architecture that trains on a laptop CPU (the default), and
//! `builtin:sd15-shape`, SD 1.5's architecture and sizes with random weights, for timing and
//! memory checks of real-size training on a GPU (its images are noise).
//!
//! Their weights are drawn from a fixed seed with the project's own generator, tensor by tensor
//! (each from a stream keyed by the tensor's name), with only IEEE-exact arithmetic (uniform
//! draws scaled by `1/sqrt(fan_in)`, PyTorch's default bound), so the model is bit-identical on
//! every machine. On first use it is written as an ordinary diffusers-layout folder under
//! `ROOT/models/`, and from then on loads like any other model folder.

pub mod eval_models;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{Value, json};

use super::attention::AttentionMode;
use super::check::ModelGeometry;
use super::clip::{ClipTextConfig, ClipTextModel};
use super::error::{ModelError, Result};
use super::lora::targets::Layer;
use super::unet::{UNet2DConditionModel, UNetConfig};
use super::vae::{AutoencoderKL, VaeConfig};
use super::weights;
use crate::rng::Rng;

/// The default model's name.
pub const NAME: &str = "builtin:tiny";

/// A built-in model.
struct Builtin {
    /// The name users write.
    name: &'static str,
    /// Folder name under `ROOT/models/`; bump the version when the architecture or init changes.
    folder: &'static str,
    unet: fn() -> Value,
    vae: fn() -> Value,
    text: fn() -> Value,
}

const MODELS: [Builtin; 2] = [
    Builtin { name: NAME, folder: "builtin-tiny-v1", unet: unet_config, vae: vae_config, text: text_config },
    Builtin {
        name: "builtin:sd15-shape",
        folder: "builtin-sd15-shape-v1",
        unet: sd15_unet_config,
        vae: sd15_vae_config,
        text: sd15_text_config,
    },
];

/// A built-in model's configs, parsed.
struct Configs {
    unet: UNetConfig,
    vae: VaeConfig,
    text: ClipTextConfig,
}

impl Builtin {
    /// The built-in model named `model`, if it is one.
    fn find(model: &str) -> Option<&'static Builtin> {
        MODELS.iter().find(|m| m.name == model)
    }

    /// Its configs, parsed (the built-in JSON always parses: the tests build every model).
    fn configs(&self) -> Configs {
        fn parse<T: serde::de::DeserializeOwned>(config: fn() -> Value) -> T {
            serde_json::from_value(config()).expect("built-in configs parse")
        }
        Configs { unet: parse(self.unet), vae: parse(self.vae), text: parse(self.text) }
    }
}

/// Seed of every weight.
const SEED: u64 = 0xDB5_EE9;

/// The built-in 1000-token CLIP vocabulary and merges.
pub(crate) const VOCAB: &str = include_str!("vocab.json");
/// The merges of [`VOCAB`].
pub(crate) const MERGES: &str = include_str!("merges.txt");

fn unet_config() -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 4,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 32,
        "norm_num_groups": 16,
        "use_linear_projection": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0
    })
}

fn vae_config() -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [16, 16, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": 32,
        "scaling_factor": 0.18215
    })
}

fn text_config() -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 998,
        "eos_token_id": 999,
        "pad_token_id": 999
    })
}

/// `base` with the keys of `fields` replaced.
fn patched(mut base: Value, fields: Value) -> Value {
    for (key, value) in fields.as_object().expect("an object") {
        base[key] = value.clone();
    }
    base
}

/// runwayml/stable-diffusion-v1-5's UNet.
fn sd15_unet_config() -> Value {
    patched(
        unet_config(),
        json!({
            "sample_size": 64,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "attention_head_dim": 8,
            "cross_attention_dim": 768,
            "norm_num_groups": 32
        }),
    )
}

/// SD 1.5's VAE.
fn sd15_vae_config() -> Value {
    patched(
        vae_config(),
        json!({"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512}),
    )
}

/// CLIP ViT-L/14's text encoder (SD 1.5's), with the built-in 1000-token vocabulary.
fn sd15_text_config() -> Value {
    patched(
        text_config(),
        json!({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}),
    )
}

fn scheduler_config() -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "set_alpha_to_one": false,
        "clip_sample": false,
        "timestep_spacing": "leading"
    })
}

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

/// `tokenizer_config.json` of the built-in tokenizer.
pub(crate) fn tokenizer_config() -> Value {
    json!({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "do_lower_case": true
    })
}

/// The folder `model` names: a built-in model (written under `models_dir` on first use) or a
/// path to a diffusers-layout folder.
pub fn resolve(model: &str, models_dir: &Path) -> Result<PathBuf> {
    if let Some(spec) = Builtin::find(model) {
        return materialize(spec, models_dir);
    }
    if model.starts_with("builtin:") {
        let names: Vec<String> = MODELS.iter().map(|m| format!("`{}`", m.name)).collect();
        return Err(ModelError::Layout {
            folder: PathBuf::from(model),
            what: "this built-in model".into(),
            expected: format!("{} or a model folder", names.join(", ")),
        });
    }
    Ok(PathBuf::from(model))
}

/// Checks the model `model` names without writing or loading anything: a built-in model by
/// its name, a folder as [`super::check::check`] does.
pub fn check(model: &str) -> Result<ModelGeometry> {
    let Some(spec) = Builtin::find(model) else {
        return match resolve(model, Path::new("")) {
            Ok(folder) => super::check::check(&folder),
            Err(e) => Err(e),
        };
    };
    let Configs { unet, vae, .. } = spec.configs();
    let vae_scale_factor = 1 << (vae.block_out_channels.len() - 1);
    Ok(ModelGeometry { vae_scale_factor, size_multiple: vae_scale_factor << (unet.block_out_channels.len() - 1) })
}

/// The linear layers of the UNet and text encoder of the model `model` names (a built-in name
/// or a folder), found from its configs alone.
pub fn linear_layers(model: &str) -> Result<(Vec<Layer>, Vec<Layer>)> {
    let Some(spec) = Builtin::find(model) else {
        return super::check::folder_linear_layers(&resolve(model, Path::new(""))?);
    };
    let (Configs { unet, text, .. }, here) = (spec.configs(), Path::new(spec.name));
    super::check::linear_layers(&unet, here, &text, here)
}

/// The number of values of every weight of the UNet and text encoder of the built-in model
/// `model`, from its configs (nothing is written).
pub fn parameter_sizes(model: &str) -> Result<Vec<usize>> {
    let spec = Builtin::find(model).ok_or_else(|| ModelError::Layout {
        folder: PathBuf::from(model),
        what: "this built-in model".into(),
        expected: "a built-in name".into(),
    })?;
    let (Configs { unet, text, .. }, here) = (spec.configs(), Path::new(spec.name));
    super::check::parameter_sizes(&unet, here, &text, here)
}

/// The folder of the built-in model under `models_dir`, written on first use.
fn materialize(spec: &Builtin, models_dir: &Path) -> Result<PathBuf> {
    write_once(models_dir, spec.folder, "model_index.json", |tmp| write_folder(spec, tmp))
}

/// The folder `name` under `models_dir`, written by `write` on first use; `marker` is the file
/// `write` writes last, whose presence marks a complete folder. Concurrent first uses are safe:
/// each writes a private temporary folder and renames it into place.
pub(crate) fn write_once(
    models_dir: &Path,
    name: &str,
    marker: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = models_dir.join(name);
    if dir.join(marker).exists() {
        return Ok(dir);
    }
    let tmp = models_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write_err =
        |path: &Path, e: &dyn std::fmt::Display| ModelError::Write { path: path.to_path_buf(), message: e.to_string() };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| write_err(&tmp, &e))?;
    write(&tmp)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join(marker).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(write_err(&dir, &e)),
    }
}

fn write_folder(spec: &Builtin, dir: &Path) -> Result<()> {
    let write = |rel: &str, text: String| -> Result<()> {
        let path = dir.join(rel);
        let parent = path.parent().expect("relative path has a parent");
        std::fs::create_dir_all(parent)
            .and_then(|_| std::fs::write(&path, text))
            .map_err(|e| ModelError::Write { path: path.clone(), message: e.to_string() })
    };
    let pretty = |v: Value| serde_json::to_string_pretty(&v).expect("json");
    write("unet/config.json", pretty((spec.unet)()))?;
    write("vae/config.json", pretty((spec.vae)()))?;
    write("text_encoder/config.json", pretty((spec.text)()))?;
    write("scheduler/scheduler_config.json", pretty(scheduler_config()))?;
    write("tokenizer/vocab.json", VOCAB.to_string())?;
    write("tokenizer/merges.txt", MERGES.to_string())?;
    write("tokenizer/tokenizer_config.json", pretty(tokenizer_config()))?;
    let dev = Device::Cpu;
    let here = Path::new(spec.name);
    let Configs { unet: unet_cfg, vae: vae_cfg, text: text_cfg } = spec.configs();
    let unet_vars = VarMap::new();
    UNet2DConditionModel::new(
        VarBuilder::from_varmap(&unet_vars, DType::F32, &dev),
        &unet_cfg,
        here,
        AttentionMode::Full,
    )?;
    let vae_vars = VarMap::new();
    AutoencoderKL::new(VarBuilder::from_varmap(&vae_vars, DType::F32, &dev), &vae_cfg, here)?;
    let text_vars = VarMap::new();
    ClipTextModel::new(VarBuilder::from_varmap(&text_vars, DType::F32, &dev), &text_cfg, here)?;
    for (vars, rel) in [
        (&unet_vars, "unet/diffusion_pytorch_model.safetensors"),
        (&vae_vars, "vae/diffusion_pytorch_model.safetensors"),
        (&text_vars, "text_encoder/model.safetensors"),
    ] {
        initialise(vars)?;
        weights::save(vars, &dir.join(rel))?;
    }
    // Written last: its presence marks a complete folder.
    write("model_index.json", pretty(model_index()))
}

/// Deterministic initialisation of every variable of `vars` (see [`initial_values`]).
fn initialise(vars: &VarMap) -> Result<()> {
    let data = vars.data().lock().expect("variable map lock");
    for (name, var) in data.iter() {
        let dims = var.dims().to_vec();
        var.set(&Tensor::from_vec(initial_values(name, &dims), dims, var.device())?)?;
    }
    Ok(())
}

/// The built-in models' value of tensor `name` of shape `dims`: a 1-D `*.weight` (a norm's
/// scale) is 1, any other 1-D tensor (a bias) 0, every other tensor uniform in
/// `±1/sqrt(fan_in)` from a stream keyed by its name, so every built-in model is the same
/// everywhere.
pub(crate) fn initial_values(name: &str, dims: &[usize]) -> Vec<f32> {
    let n: usize = dims.iter().product();
    if dims.len() <= 1 {
        return vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n];
    }
    let fan_in: usize = dims[1..].iter().product();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let mut rng = Rng::new(SEED ^ xxhash_rust::xxh3::xxh3_64(name.as_bytes()));
    (0..n).map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pipeline::StableDiffusion;

    #[test]
    fn materialises_once_loads_and_is_identical_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve(NAME, dir.path()).unwrap();
        let modified =
            std::fs::metadata(a.join("unet/diffusion_pytorch_model.safetensors")).unwrap().modified().unwrap();
        assert_eq!(resolve(NAME, dir.path()).unwrap(), a);
        let again = std::fs::metadata(a.join("unet/diffusion_pytorch_model.safetensors")).unwrap().modified().unwrap();
        assert_eq!(modified, again, "second use does not rewrite");
        let model = StableDiffusion::load(&a, &Device::Cpu, AttentionMode::Full).unwrap();
        assert_eq!(model.vae_scale_factor(), 8);
        assert_eq!(model.default_size(), 32);
        // Pinned: a change here changes every built-in result users have recorded.
        let w = model.unet_vars.data().lock().unwrap()["conv_in.weight"].as_tensor().clone();
        let sum: f64 = w.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|&x| x as f64).sum();
        let other = tempfile::tempdir().unwrap();
        let b =
            StableDiffusion::load(&resolve(NAME, other.path()).unwrap(), &Device::Cpu, AttentionMode::Full).unwrap();
        let w2 = b.unet_vars.data().lock().unwrap()["conv_in.weight"].as_tensor().clone();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&w), flat(&w2));
        assert!(sum.abs() > 0.0 && sum.is_finite());
        assert_eq!(format!("{sum:.6}"), PINNED_CONV_IN_SUM);
    }

    const PINNED_CONV_IN_SUM: &str = "-1.089110";

    /// Hands out zero-sized broadcasts of the asked shapes and counts their elements, so a
    /// full-size architecture can be built without allocating its weights.
    struct CountingBackend(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl candle_nn::var_builder::SimpleBackend for CountingBackend {
        fn get(
            &self,
            s: candle_core::Shape,
            _: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.fetch_add(s.elem_count(), std::sync::atomic::Ordering::Relaxed);
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("unexpected unchecked get of {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    /// Parameters of the model `build` makes.
    fn parameters(build: impl FnOnce(VarBuilder<'static>) -> Result<()>) -> usize {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backend = Box::new(CountingBackend(std::sync::Arc::clone(&count)));
        build(VarBuilder::from_backend(backend, DType::F32, Device::Cpu)).unwrap();
        count.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn sd15_shape_has_the_parameter_counts_of_stable_diffusion_1_5() {
        let spec = Builtin::find("builtin:sd15-shape").unwrap();
        let here = Path::new(spec.name);
        let Configs { unet, vae, text } = spec.configs();
        // diffusers' counts for runwayml/stable-diffusion-v1-5 (`sum(p.numel())`); the text
        // encoder's token table has 1000 rows here instead of 49408.
        let unet_n = parameters(|vb| UNet2DConditionModel::new(vb, &unet, here, AttentionMode::Full).map(drop));
        assert_eq!(unet_n, 859_520_964);
        assert_eq!(parameters(|vb| AutoencoderKL::new(vb, &vae, here).map(drop)), 83_653_863);
        assert_eq!(parameters(|vb| ClipTextModel::new(vb, &text, here).map(drop)), 123_060_480 - 48_408 * 768);
    }
}
