//! Loading the frozen weights of an evaluation model straight from its safetensors file.
//!
//! Unlike the trainable models (built on a `VarMap`, see [`crate::model::weights`]), nothing is
//! initialised and nothing becomes a variable: each tensor is read from the memory-mapped file,
//! converted to f32 and moved to the device, so a forward pass records no autograd graph. A
//! missing or mis-shaped tensor does not stop the build: a zero-sized stand-in takes its place,
//! and [`build`] reports every problem at once, by name and shape, as
//! [`crate::model::weights::load_into`] does.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::model::error::{ModelError, Result};

/// One line per missing or mis-shaped tensor.
type Problems = Arc<Mutex<Vec<String>>>;

/// A safetensors file that hands out its tensors and notes the ones it lacks.
struct CheckedFile {
    file: MmapedSafetensors,
    problems: Problems,
}

/// The problems noted so far, taken out of the list. A poisoned lock only means a build
/// panicked on another thread; the list is still usable.
fn take(problems: &Problems) -> Vec<String> {
    std::mem::take(&mut *problems.lock().unwrap_or_else(|e| e.into_inner()))
}

impl SimpleBackend for CheckedFile {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.file.get(name) {
            Ok(view) if view.shape() == s.dims() => self.file.load(name, dev)?.to_dtype(dtype),
            found => {
                let problem = match found {
                    Ok(view) => format!("tensor `{name}`: expected shape {:?}, found {:?}", s.dims(), view.shape()),
                    Err(_) => format!("tensor `{name}` {:?}: missing", s.dims()),
                };
                self.problems.lock().unwrap_or_else(|e| e.into_inner()).push(problem);
                Tensor::zeros((), dtype, dev)?.broadcast_as(s)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.file.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.file.get(name).is_ok()
    }
}

/// Builds a module with `build` from the safetensors file at `path`, on `device`, in f32.
/// `build` may probe the file with [`VarBuilder::contains_tensor`] to pick a key layout.
pub fn build<M>(path: &Path, device: &Device, build: impl FnOnce(VarBuilder) -> Result<M>) -> Result<M> {
    if !path.is_file() {
        return Err(ModelError::Missing { path: path.to_path_buf() });
    }
    // SAFETY: the file is mapped read-only and only read inside this function, while `build`
    // runs: every tensor is copied out of the mapping when loaded, and the mapping is dropped
    // on return. dbsweep never writes a weights file in place (it writes a temporary file and
    // renames it).
    let file = unsafe { MmapedSafetensors::new(path) }
        .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), message: e.to_string() })?;
    let problems = Problems::default();
    let backend = CheckedFile { file, problems: problems.clone() };
    let built = build(VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()));
    let problems = take(&problems);
    if !problems.is_empty() {
        return Err(ModelError::Weights { path: path.to_path_buf(), problems });
    }
    built
}
