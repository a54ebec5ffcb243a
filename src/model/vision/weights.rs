//! Loading the frozen weights of an evaluation model straight from its safetensors file.
//!
//! Unlike the trainable models (built on a `VarMap`, see [`crate::model::weights`]), nothing is
//! initialised and nothing becomes a variable: each tensor is read from the memory-mapped file,
//! converted to f32 and moved to the device, so a forward pass records no autograd graph. A
//! missing or mis-shaped tensor does not stop the build: a zero-sized stand-in takes its place,
//! and [`build`] reports every problem at once, by name and shape, as
//! [`crate::model::weights::load_into`] does.
//!
//! The same construction also writes the built-in evaluation models: with [`Source::Random`]
//! every tensor a module asks for is drawn from the project's generator (a fixed seed and the
//! tensor's name) instead of read, and the file is written from them, so a built-in model's
//! file has exactly the tensors its loader reads.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::model::error::{ModelError, Result};

/// A [`RandomWeights`] shared with the builder that draws from it.
struct SharedRandom(std::sync::Arc<RandomWeights>);

impl SimpleBackend for SharedRandom {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(s, name, init, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// One line per missing or mis-shaped tensor.
type Problems = Arc<Mutex<Vec<String>>>;

/// A safetensors file that hands out its tensors and notes the ones it lacks.
struct CheckedFile {
    file: MmapedSafetensors,
    problems: Problems,
    /// Whether tensors are read (else zero-sized stand-ins of the right shape).
    read: bool,
}

/// The problems noted so far, taken out of the list. A poisoned lock only means a build
/// panicked on another thread; the list is still usable.
fn take(problems: &Problems) -> Vec<String> {
    std::mem::take(&mut *problems.lock().unwrap_or_else(|e| e.into_inner()))
}

impl SimpleBackend for CheckedFile {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.file.get(name) {
            Ok(view) if view.shape() == s.dims() && self.read => self.file.load(name, dev)?.to_dtype(dtype),
            Ok(view) if view.shape() == s.dims() => Tensor::zeros((), dtype, dev)?.broadcast_as(s),
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

/// Where a model's weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The model's safetensors file.
    File,
    /// Only the file's header: every tensor is checked by name and shape, none is read (the
    /// module gets zero-sized stand-ins): a check before anything runs.
    Header,
    /// Drawn at random from this seed and each tensor's name; the file is written from them.
    Random(u64),
}

/// Hands out the built-in models' deterministic weights (see
/// [`crate::model::builtin::initial_values`], keyed by the seed and the tensor's name) and keeps
/// them to be saved.
struct RandomWeights {
    seed: u64,
    drawn: Mutex<std::collections::BTreeMap<String, Tensor>>,
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let values = crate::model::builtin::initial_values(&format!("{}|{name}", self.seed), s.dims());
        let tensor = Tensor::from_vec(values, s, &Device::Cpu)?;
        self.drawn.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), tensor.clone());
        tensor.to_device(dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}` asked for without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Builds a module with `build` from its weights at `path` (or, with [`Source::Random`], from
/// random weights then written to `path`), on `device`, in f32. `build` may probe the file
/// with [`VarBuilder::contains_tensor`] to pick a key layout.
pub fn build<M>(
    path: &Path,
    device: &Device,
    source: Source,
    build: impl FnOnce(VarBuilder) -> Result<M>,
) -> Result<M> {
    if let Source::Random(seed) = source {
        let backend = std::sync::Arc::new(RandomWeights { seed, drawn: Mutex::default() });
        let built =
            build(VarBuilder::from_backend(Box::new(SharedRandom(backend.clone())), DType::F32, device.clone()))?;
        let drawn = std::mem::take(&mut *backend.drawn.lock().unwrap_or_else(|e| e.into_inner()));
        let write = |tmp: &Path| {
            candle_core::safetensors::save(&drawn.into_iter().collect(), tmp).map_err(std::io::Error::other)
        };
        crate::atomic_file::write_with(path, write)
            .map_err(|e| ModelError::Write { path: path.to_path_buf(), message: e.to_string() })?;
        return Ok(built);
    }
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
    let backend = CheckedFile { file, problems: problems.clone(), read: source == Source::File };
    let built = build(VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()));
    let problems = take(&problems);
    if !problems.is_empty() {
        return Err(ModelError::Weights { path: path.to_path_buf(), problems });
    }
    built
}
