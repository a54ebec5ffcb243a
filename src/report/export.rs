//! Exporting a run's checkpoint for other tools:
//!
//! - `diffusers`: a complete diffusers-layout model folder, the fine-tuned UNet (and text
//!   encoder, when it was trained) over the base model's VAE, tokenizer, scheduler and configs,
//!   so diffusers' `StableDiffusionPipeline.from_pretrained` and dbsweep itself load it; a LoRA
//!   run's adapters are merged into the weights;
//! - `diffusers-lora`: a LoRA run's adapters as `pytorch_lora_weights.safetensors` in a new
//!   folder, what `StableDiffusionPipeline.load_lora_weights` loads (alpha in its metadata);
//! - `kohya`: the adapters as one `RUN_ID.safetensors` in kohya-ss's layout, what
//!   AUTOMATIC1111, ComfyUI and sd-scripts load.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::Device;

use super::checkpoint_ref::CheckpointRef;
use crate::config::TrainMethod;
use crate::model::attention::AttentionMode;
use crate::model::lora::files;
use crate::model::pipeline::StableDiffusion;
use crate::model::weights;
use crate::train::checkpoint;
use crate::train::trainable::{TEXT_LORA_FILE, UNET_FILE, UNET_LORA_FILE};

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A whole diffusers model folder.
    Diffusers,
    /// A LoRA run's adapters for diffusers' `load_lora_weights`.
    DiffusersLora,
    /// A LoRA run's adapters in kohya-ss's layout.
    Kohya,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "diffusers" => Ok(Format::Diffusers),
            "diffusers-lora" => Ok(Format::DiffusersLora),
            "kohya" => Ok(Format::Kohya),
            other => Err(format!("--format {other}: expected diffusers, diffusers-lora or kohya")),
        }
    }
}

/// Why an export failed, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("export `{path}`: {message}")]
pub struct ExportError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError { path: path.to_path_buf(), message: e.to_string() }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(to).map_err(|e| err(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| err(from, e))? {
        let entry = entry.map_err(|e| err(from, e))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| err(&entry.path(), e))?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| err(&target, e))?;
        }
    }
    Ok(())
}

/// Writes the checkpoint `r` of a run on the base model folder `base` as `format` into the new
/// folder `out` (which must not exist); returns the main file or folder written. The folder
/// appears whole or not at all (temporary folder, renamed).
pub fn export(base: &Path, r: &CheckpointRef, format: Format, out: &Path) -> Result<PathBuf, ExportError> {
    if out.exists() {
        return Err(err(out, "already exists; choose a new folder"));
    }
    let lora = r.config.train.method == TrainMethod::Lora;
    if format != Format::Diffusers && !lora {
        return Err(err(
            out,
            format!(
                "run {} trained every weight (train.method full), so it has no adapters to export; use --format diffusers",
                r.run_id
            ),
        ));
    }
    let tmp = out.with_extension("tmp-export");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = match format {
        Format::Diffusers if lora => merged(base, r, &tmp)?,
        Format::Diffusers => diffusers(base, &r.folder, &tmp)?,
        Format::DiffusersLora | Format::Kohya => adapters(r, format, &tmp)?,
    };
    std::fs::rename(&tmp, out).map_err(|e| err(out, e))?;
    Ok(match written.strip_prefix(&tmp) {
        Ok(inside) if !inside.as_os_str().is_empty() => out.join(inside),
        _ => out.to_path_buf(),
    })
}

/// A full run's checkpoint over a copy of `base` in `to`.
fn diffusers(base: &Path, checkpoint: &Path, to: &Path) -> Result<PathBuf, ExportError> {
    if !checkpoint.join(UNET_FILE).exists() {
        return Err(err(checkpoint, "no unet.safetensors: not a dbsweep checkpoint"));
    }
    copy_tree(base, to)?;
    let replace = |from: &str, target: &str| -> Result<(), ExportError> {
        let source = checkpoint.join(from);
        if source.exists() {
            std::fs::copy(&source, to.join(target)).map_err(|e| err(&source, e))?;
        }
        Ok(())
    };
    replace(UNET_FILE, "unet/diffusion_pytorch_model.safetensors")?;
    replace("text_encoder.safetensors", "text_encoder/model.safetensors")?;
    Ok(to.to_path_buf())
}

/// A LoRA run's adapters merged into a copy of `base` in `to`.
fn merged(base: &Path, r: &CheckpointRef, to: &Path) -> Result<PathBuf, ExportError> {
    let (unet, text) = read_adapters(r)?;
    let model = StableDiffusion::load(base, &Device::Cpu, AttentionMode::Full).map_err(|e| err(base, e))?;
    copy_tree(base, to)?;
    unet.merge_into(&model.unet_vars, 1.0).map_err(|e| err(&r.folder.join(UNET_LORA_FILE), e))?;
    let file = to.join("unet/diffusion_pytorch_model.safetensors");
    weights::save(&model.unet_vars, &file).map_err(|e| err(&file, e))?;
    if let Some(text) = text {
        text.merge_into(&model.text_vars, 1.0).map_err(|e| err(&r.folder.join(TEXT_LORA_FILE), e))?;
        let file = to.join("text_encoder/model.safetensors");
        weights::save(&model.text_vars, &file).map_err(|e| err(&file, e))?;
    }
    Ok(to.to_path_buf())
}

/// A LoRA run's adapters as one file of `format` in the new folder `to`.
fn adapters(r: &CheckpointRef, format: Format, to: &Path) -> Result<PathBuf, ExportError> {
    let (unet, text) = read_adapters(r)?;
    std::fs::create_dir_all(to).map_err(|e| err(to, e))?;
    let file = match format {
        Format::Kohya => to.join(format!("{}.safetensors", r.run_id)),
        _ => to.join(files::DIFFUSERS_FILE),
    };
    let written = match format {
        Format::Kohya => files::write_kohya(&file, &unet, text.as_ref()),
        _ => files::write_diffusers(&file, &unet, text.as_ref()),
    };
    written.map_err(|e| err(&file, e))?;
    Ok(file)
}

fn read_adapters(
    r: &CheckpointRef,
) -> Result<(crate::model::lora::adapters::AdapterSet, Option<crate::model::lora::adapters::AdapterSet>), ExportError> {
    checkpoint::adapters(&r.folder, r.config.lora.alpha(), &Device::Cpu)
        .map_err(|e| err(&e.path, e.message))?
        .ok_or_else(|| err(&r.folder, "no unet_lora.safetensors: not a LoRA run's checkpoint"))
}
