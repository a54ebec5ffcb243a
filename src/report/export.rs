//! Exporting a run's checkpoint as a complete diffusers-layout model folder: the fine-tuned
//! UNet (and text encoder, when it was trained) over the base model's VAE, tokenizer,
//! scheduler and configs, so diffusers' `StableDiffusionPipeline.from_pretrained` and dbsweep
//! itself load it.

use std::path::{Path, PathBuf};

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

/// Writes `out` (which must not exist) from the base model folder `base` and the checkpoint
/// folder `checkpoint`. The folder appears whole or not at all (temporary folder, renamed).
pub fn diffusers(base: &Path, checkpoint: &Path, out: &Path) -> Result<(), ExportError> {
    if out.exists() {
        return Err(err(out, "already exists; choose a new folder"));
    }
    let tmp = out.with_extension("tmp-export");
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(base, &tmp)?;
    let replace = |from: &str, to: &str| -> Result<(), ExportError> {
        let source = checkpoint.join(from);
        if source.exists() {
            std::fs::copy(&source, tmp.join(to)).map_err(|e| err(&source, e))?;
        }
        Ok(())
    };
    if !checkpoint.join("unet.safetensors").exists() {
        return Err(err(checkpoint, "no unet.safetensors: not a dbsweep checkpoint"));
    }
    replace("unet.safetensors", "unet/diffusion_pytorch_model.safetensors")?;
    replace("text_encoder.safetensors", "text_encoder/model.safetensors")?;
    std::fs::rename(&tmp, out).map_err(|e| err(out, e))
}
