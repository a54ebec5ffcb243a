//! Moving weights between safetensors files and variable maps.
//!
//! Files are memory-mapped. Loading checks every variable the architecture declares against the
//! file and reports every missing or mis-shaped tensor by name and shape at once; tensors the
//! architecture does not use (e.g. `position_ids` buffers in older CLIP saves) are ignored.
//! A tensor is also found under the names other versions of the tools write (see
//! `candidates`), so folders saved by older and newer diffusers and transformers load.

use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_nn::VarMap;

use super::error::{ModelError, Result};

/// Loads every variable of `varmap` from the safetensors file at `path`.
pub fn load_into(varmap: &VarMap, path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(ModelError::Missing { path: path.to_path_buf() });
    }
    // SAFETY: the file is mapped read-only and only read while `file` lives, inside this
    // function; dbsweep never writes a weights file in place (writes go to a temporary file
    // that is renamed), so the mapping cannot change underneath.
    let file = unreadable(path, unsafe { MmapedSafetensors::new(path) })?;
    let vars = varmap.data().lock().expect("variable map lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut problems = Vec::new();
    for name in names {
        let var = &vars[name];
        match locate(&file, name, var.dims()) {
            Err(problem) => problems.push(problem),
            Ok(found) => {
                let tensor = file.load(&found, var.device())?.reshape(var.dims())?.to_dtype(var.dtype())?;
                var.set(&tensor)?;
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ModelError::Weights { path: path.to_path_buf(), problems }) }
}

/// The names tensor `name` may have in a file, its own first, then those other versions of
/// the tools write: CLIP text-encoder weights without the `text_model.` prefix (transformers 5
/// models name their modules without it), and the VAE's attention under its old names
/// (`query`, `key`, `value`, `proj_attn`: older diffusers saves and converted original
/// checkpoints, which diffusers itself still loads).
fn candidates(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    if let Some(rest) = name.strip_prefix("text_model.") {
        out.push(rest.to_string());
    }
    if name.contains(".attentions.") && !name.contains("transformer_blocks") {
        for (new, old) in
            [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")]
        {
            if name.contains(new) {
                out.push(name.replace(new, old));
            }
        }
    }
    out
}

/// The name under which `file` holds tensor `name` of shape `expected` (a shape that differs
/// only by trailing ones, as old 1x1-convolution attention weights, is accepted), or the
/// problem, in words.
fn locate(file: &MmapedSafetensors, name: &str, expected: &[usize]) -> std::result::Result<String, String> {
    let squeeze = |dims: &[usize]| dims.iter().rev().skip_while(|&&d| d == 1).count();
    for candidate in candidates(name) {
        let Ok(view) = file.get(&candidate) else { continue };
        let shape = view.shape();
        let same = shape == expected
            || (shape.len() != expected.len()
                && squeeze(shape) == squeeze(expected)
                && shape[..squeeze(shape)] == expected[..squeeze(expected)]);
        if same {
            return Ok(candidate);
        }
        return Err(format!("tensor `{name}`: expected shape {expected:?}, found {shape:?}"));
    }
    Err(format!("tensor `{name}` {expected:?}: missing"))
}

/// The mapped file, or why `path` is not a readable safetensors file.
fn unreadable(path: &Path, file: candle_core::Result<MmapedSafetensors>) -> Result<MmapedSafetensors> {
    file.map_err(|e| match std::fs::metadata(path) {
        Err(_) => ModelError::Missing { path: path.to_path_buf() },
        Ok(_) => ModelError::Unreadable { path: path.to_path_buf(), message: e.to_string() },
    })
}

/// Checks that the safetensors file at `path` holds every `(name, shape)` of `wanted`, reading
/// only its header (the problems as [`load_into`] reports them).
pub fn check(wanted: &[(String, Vec<usize>)], path: &Path) -> Result<()> {
    // SAFETY: as in `load_into`: mapped read-only, only the header is read, while `file` lives.
    let file = unreadable(path, unsafe { MmapedSafetensors::new(path) })?;
    let problems: Vec<String> =
        wanted.iter().filter_map(|(name, expected)| locate(&file, name, expected).err()).collect();
    if problems.is_empty() { Ok(()) } else { Err(ModelError::Weights { path: path.to_path_buf(), problems }) }
}

/// Writes every variable of `varmap` to `path` atomically (temporary file, fsync, rename).
pub fn save(varmap: &VarMap, path: &Path) -> Result<()> {
    crate::atomic_file::write_with(path, |tmp| varmap.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| ModelError::Write { path: path.to_path_buf(), message: e.to_string() })
}
