//! Checking a Stable Diffusion folder without loading its weights: every config parses, every
//! weight the modules ask for is in the safetensors files with its shape, the tokenizer and
//! the noise schedule load. It costs the reading of a few headers (the weights stay on disk),
//! so a sweep is checked before any run is launched.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use super::attention::AttentionMode;
use super::clip::{ClipTextConfig, ClipTextModel};
use super::error::{ModelError, Result};
use super::lora::targets::{Layer, layers};
use super::noise_schedule::{NoiseSchedule, SchedulerConfig};
use super::pipeline::component;
use super::tokenizer::ClipTokenizer;
use super::unet::{UNet2DConditionModel, UNetConfig};
use super::vae::{AutoencoderKL, VaeConfig};
use super::{json, weights};

/// What a checked folder tells about the images it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelGeometry {
    /// Pixels per latent cell (8 for Stable Diffusion).
    pub vae_scale_factor: usize,
    /// Image sizes must be multiples of this many pixels.
    pub size_multiple: usize,
}

/// Weight names with their shapes.
type Shapes = Vec<(String, Vec<usize>)>;

/// Records the name and shape of every weight a module asks for, handing out zero-sized
/// broadcasts of that shape (nothing is allocated).
#[derive(Clone, Default)]
struct ShapeRecorder(Arc<Mutex<Shapes>>);

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().expect("recorder lock").push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}` asked for without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The weights a module built by `build` asks for, by name and shape.
fn wanted(build: impl FnOnce(VarBuilder<'static>) -> Result<()>) -> Result<Shapes> {
    let recorder = ShapeRecorder::default();
    build(VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu))?;
    let names = std::mem::take(&mut *recorder.0.lock().expect("recorder lock"));
    Ok(names)
}

/// The linear layers of the UNet and of the text encoder that `unet` and `text` describe
/// (read from `unet_path` and `text_path`, named in errors), found without any weights.
pub fn linear_layers(
    unet: &UNetConfig,
    unet_path: &Path,
    text: &ClipTextConfig,
    text_path: &Path,
) -> Result<(Vec<Layer>, Vec<Layer>)> {
    let vb = || VarBuilder::from_backend(Box::new(ShapeRecorder::default()), DType::F32, Device::Cpu);
    let mut unet = UNet2DConditionModel::new(vb(), unet, unet_path, AttentionMode::Full)?;
    let mut text = ClipTextModel::new(vb(), text, text_path)?;
    Ok((layers(&mut unet), layers(&mut text)))
}

/// The number of values of every weight of the UNet and the text encoder that `unet` and
/// `text` describe (read from `unet_path` and `text_path`), found without any weights.
pub fn parameter_sizes(
    unet: &UNetConfig,
    unet_path: &Path,
    text: &ClipTextConfig,
    text_path: &Path,
) -> Result<Vec<usize>> {
    let mut shapes = wanted(|vb| UNet2DConditionModel::new(vb, unet, unet_path, AttentionMode::Full).map(drop))?;
    shapes.extend(wanted(|vb| ClipTextModel::new(vb, text, text_path).map(drop))?);
    Ok(shapes.into_iter().map(|(_, dims)| dims.iter().product()).collect())
}

/// The linear layers of the UNet and text encoder of the diffusers folder `folder`.
pub fn folder_linear_layers(folder: &Path) -> Result<(Vec<Layer>, Vec<Layer>)> {
    let unet_path = component(folder, "unet/config.json")?;
    let text_path = component(folder, "text_encoder/config.json")?;
    linear_layers(&json::read(&unet_path)?, &unet_path, &json::read(&text_path)?, &text_path)
}

/// Checks the diffusers folder `folder` as [`super::pipeline::StableDiffusion::load`] would
/// load it, without loading the weights.
pub fn check(folder: &Path) -> Result<ModelGeometry> {
    if !folder.is_dir() {
        return Err(ModelError::Layout {
            folder: folder.to_path_buf(),
            what: "the folder".into(),
            expected: "a diffusers model folder (or `builtin:tiny`, `builtin:sd15-shape`)".into(),
        });
    }
    let unet_path = component(folder, "unet/config.json")?;
    let unet: UNetConfig = json::read(&unet_path)?;
    let names = wanted(|vb| UNet2DConditionModel::new(vb, &unet, &unet_path, AttentionMode::Full).map(drop))?;
    weights::check(&names, &component(folder, "unet/diffusion_pytorch_model.safetensors")?)?;

    let text_path = component(folder, "text_encoder/config.json")?;
    let text: ClipTextConfig = json::read(&text_path)?;
    let names = wanted(|vb| ClipTextModel::new(vb, &text, &text_path).map(drop))?;
    weights::check(&names, &component(folder, "text_encoder/model.safetensors")?)?;

    let vae_path = component(folder, "vae/config.json")?;
    let vae: VaeConfig = json::read(&vae_path)?;
    let names = wanted(|vb| AutoencoderKL::new(vb, &vae, &vae_path).map(drop))?;
    weights::check(&names, &component(folder, "vae/diffusion_pytorch_model.safetensors")?)?;

    ClipTokenizer::load(&folder.join("tokenizer"))?;
    let sched_path = component(folder, "scheduler/scheduler_config.json")?;
    NoiseSchedule::new(json::read::<SchedulerConfig>(&sched_path)?, &sched_path)?;
    let vae_scale_factor = 1 << (vae.block_out_channels.len().max(1) - 1);
    let size_multiple = vae_scale_factor << (unet.block_out_channels.len().max(1) - 1);
    Ok(ModelGeometry { vae_scale_factor, size_multiple })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn a_good_folder_passes_and_a_broken_one_is_named() {
        let geometry = check(&fixture("sd1")).unwrap();
        assert_eq!(geometry.vae_scale_factor, 2);
        let broken = tempfile::tempdir().unwrap();
        for entry in walk(&fixture("sd1")) {
            let rel = entry.strip_prefix(fixture("sd1")).unwrap();
            let target = broken.path().join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
        // A weights file with one tensor too few: its name and shape are reported.
        let unet = broken.path().join("unet/diffusion_pytorch_model.safetensors");
        let mut tensors = candle_core::safetensors::load(&unet, &Device::Cpu).unwrap();
        tensors.remove("conv_in.bias").unwrap();
        candle_core::safetensors::save(&tensors, &unet).unwrap();
        let err = check(broken.path()).unwrap_err().to_string();
        assert!(err.contains("diffusion_pytorch_model.safetensors") && err.contains("conv_in.bias"), "{err}");
        std::fs::remove_file(broken.path().join("vae/config.json")).unwrap();
        std::fs::copy(fixture("sd1/unet/diffusion_pytorch_model.safetensors"), &unet).unwrap();
        let err = check(broken.path()).unwrap_err().to_string();
        assert!(err.contains("vae/config.json"), "{err}");
        assert!(check(&broken.path().join("nowhere")).is_err());
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
        out
    }
}
