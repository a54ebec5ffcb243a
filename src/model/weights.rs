//! Moving weights between safetensors files and variable maps.
//!
//! Files are memory-mapped. Loading checks every variable the architecture declares against the
//! file and reports every missing or mis-shaped tensor by name and shape at once; tensors the
//! architecture does not use (e.g. `position_ids` buffers in older CLIP saves) are ignored.

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
        let expected = var.dims().to_vec();
        match file.get(name) {
            Err(_) => problems.push(format!("tensor `{name}` {expected:?}: missing")),
            Ok(view) if view.shape() != expected.as_slice() => {
                problems.push(format!("tensor `{name}`: expected shape {expected:?}, found {:?}", view.shape()))
            }
            Ok(_) => {
                let tensor = file.load(name, var.device())?.to_dtype(var.dtype())?;
                var.set(&tensor)?;
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ModelError::Weights { path: path.to_path_buf(), problems }) }
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
    let mut problems = Vec::new();
    for (name, expected) in wanted {
        match file.get(name) {
            Err(_) => problems.push(format!("tensor `{name}` {expected:?}: missing")),
            Ok(view) if view.shape() != expected.as_slice() => {
                problems.push(format!("tensor `{name}`: expected shape {expected:?}, found {:?}", view.shape()))
            }
            Ok(_) => {}
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ModelError::Weights { path: path.to_path_buf(), problems }) }
}

/// Writes every variable of `varmap` to `path` atomically (temporary file, fsync, rename).
pub fn save(varmap: &VarMap, path: &Path) -> Result<()> {
    crate::atomic_file::write_with(path, |tmp| varmap.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| ModelError::Write { path: path.to_path_buf(), message: e.to_string() })
}
