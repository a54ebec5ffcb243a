//! The test-only hook behind training-loop parity with PyTorch: with
//! `DBSWEEP_TEST_STEP_INPUTS=FILE` in its environment a run takes each micro-batch's inputs
//! from `FILE` (safetensors) instead of drawing them, so a PyTorch script given the same file
//! runs the same steps:
//!
//! - `latents.S.M` [rows, c, h, w]: the clean latents of step `S`, micro-batch `M`, already
//!   scaled by the VAE's factor (instance rows, then class rows);
//! - `noise.S.M` (same shape) and `timesteps.S.M` \[rows\] (integers);
//! - optionally `init.unet.LAYER.lora_A.weight` (and `lora_B`, and `init.text_encoder.`...,
//!   with or without `text_model.`): the adapters' starting values, replacing the seeded ones.
//!
//! A micro-batch the file lacks is drawn as usual. Documented in the README's Development
//! section; never a setting.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};

use super::error::TrainError;
use super::job::TrainJob;
use super::trainable::Trainable;

/// The environment variable naming the file.
pub const STEP_INPUTS_VAR: &str = "DBSWEEP_TEST_STEP_INPUTS";

/// The inputs of the hook's file.
pub struct StepInputs {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

/// One micro-batch's inputs.
pub struct MicroBatch {
    /// Scaled clean latents.
    pub latents: Tensor,
    /// The noise added to them.
    pub noise: Tensor,
    /// Each row's timestep.
    pub timesteps: Vec<usize>,
}

fn bad(path: &std::path::Path, message: impl std::fmt::Display) -> TrainError {
    TrainError::Settings(format!("{STEP_INPUTS_VAR} `{}`: {message}", path.display()))
}

impl StepInputs {
    /// The file `job`'s environment names, loaded onto `job`'s device; `None` without the hook.
    pub fn load(job: &TrainJob) -> Result<Option<Self>, TrainError> {
        let Some((_, path)) = job.env.iter().find(|(k, _)| k == STEP_INPUTS_VAR) else { return Ok(None) };
        let path = PathBuf::from(path);
        let tensors = candle_core::safetensors::load(&path, &job.device).map_err(|e| bad(&path, e))?;
        Ok(Some(Self { path, tensors }))
    }

    /// The inputs of step `step` (0-based), micro-batch `micro`, if the file has them.
    pub fn micro_batch(&self, step: u64, micro: u64) -> Result<Option<MicroBatch>, TrainError> {
        let key = |name: &str| format!("{name}.{step}.{micro}");
        let Some(latents) = self.tensors.get(&key("latents")) else { return Ok(None) };
        let get =
            |name: &str| self.tensors.get(&key(name)).ok_or_else(|| bad(&self.path, format!("no `{}`", key(name))));
        let timesteps = get("timesteps")?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Some(MicroBatch {
            latents: latents.to_dtype(DType::F32)?,
            noise: get("noise")?.to_dtype(DType::F32)?,
            timesteps: timesteps.into_iter().map(|t| t as usize).collect(),
        }))
    }

    /// Sets the adapters of `trainable` to the file's `init.` values (a full run has none).
    pub fn initialise(&self, trainable: &Trainable) -> Result<(), TrainError> {
        let Trainable::Lora(run) = trainable else { return Ok(()) };
        for (prefix, set) in [("unet", Some(&run.unet)), ("text_encoder", run.text_encoder.as_ref())] {
            let Some(set) = set else { continue };
            for (name, var) in set.vars.data().lock().expect("variable map lock").iter() {
                // transformers 5 names the text encoder's layers without `text_model.`.
                let short = name.strip_prefix("text_model.").unwrap_or(name);
                let keys = [format!("init.{prefix}.{name}"), format!("init.{prefix}.{short}")];
                let Some((key, value)) = keys.iter().find_map(|k| self.tensors.get(k).map(|v| (k, v))) else {
                    continue;
                };
                let value = value.to_dtype(DType::F32)?.to_device(var.device())?;
                if value.dims() != var.dims() {
                    return Err(bad(
                        &self.path,
                        format!("`{key}` is {:?}, the adapter {:?}", value.dims(), var.dims()),
                    ));
                }
                var.set(&value)?;
            }
        }
        Ok(())
    }
}
