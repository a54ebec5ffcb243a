//! Mixed-precision training: f32 master weights, f16 or bf16 compute, dynamic loss scaling.
//!
//! The trained modules' variables stay f32: AdamW updates them, checkpoints save them. Each
//! step casts them to the compute dtype and builds the forward pass from those casts. A cast
//! is differentiable, so the backward pass hands f32 gradients to the f32 variables: what
//! PyTorch's autocast does, with each weight cast once per step instead of once per op. The
//! loss is computed in f32 from the prediction cast back (as diffusers' `mse_loss(pred.float(),
//! target.float())`).
//!
//! With f16 the loss is multiplied by a scale before the backward pass so small gradients do
//! not flush to zero; gradients are divided by it before clipping and the update. A step whose
//! gradients overflow is skipped and the scale halved; after `growth_interval` clean steps it
//! doubles (PyTorch's `GradScaler`). bf16 has f32's exponent range and needs no scaling.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::config::MixedPrecision;
use crate::model::attention::AttentionMode;
use crate::model::clip::ClipTextModel;
use crate::model::pipeline::StableDiffusion;
use crate::model::unet::UNet2DConditionModel;

/// The dtype the trained modules compute in.
pub fn compute_dtype(precision: MixedPrecision) -> DType {
    match precision {
        MixedPrecision::No => DType::F32,
        MixedPrecision::Fp16 => DType::F16,
        MixedPrecision::Bf16 => DType::BF16,
    }
}

/// The trained modules of one step, built from casts of the f32 master variables.
pub struct CastModels {
    /// The UNet at the compute dtype.
    pub unet: UNet2DConditionModel,
    /// The text encoder at the compute dtype, when it is trained this step.
    pub text_encoder: Option<ClipTextModel>,
}

/// Builds this step's modules at `dtype` from `model`'s current variables.
pub fn cast_models(
    model: &StableDiffusion,
    dtype: DType,
    with_text_encoder: bool,
    mode: AttentionMode,
) -> crate::model::Result<CastModels> {
    let builder = |vars: &VarMap| -> Result<VarBuilder<'static>> {
        let data = vars.data().lock().expect("variable map lock");
        let casts = data
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(dtype)?)))
            .collect::<Result<HashMap<String, Tensor>>>()?;
        Ok(VarBuilder::from_tensors(casts, dtype, &model.device))
    };
    let folder = &model.folder;
    let unet = UNet2DConditionModel::new(
        builder(&model.unet_vars)?,
        &model.unet_config,
        &folder.join("unet/config.json"),
        mode,
    )?;
    let text_encoder = with_text_encoder
        .then(|| {
            ClipTextModel::new(builder(&model.text_vars)?, &model.text_config, &folder.join("text_encoder/config.json"))
        })
        .transpose()?;
    Ok(CastModels { unet, text_encoder })
}

/// The dynamic loss scale of f16 training; saved in checkpoints so a resumed run scales
/// exactly as the uninterrupted one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The factor the loss is multiplied by.
    pub scale: f64,
    /// Steps without overflow since the scale last changed.
    pub clean_steps: u64,
}

impl LossScaler {
    /// A scaler starting at `scale`.
    pub fn new(scale: f64) -> Self {
        Self { scale, clean_steps: 0 }
    }

    /// Records a step whose scaled gradients were `finite` or not and returns whether its
    /// update is applied: an overflow skips it and halves the scale; `growth_interval` clean
    /// steps in a row double it.
    pub fn update(&mut self, finite: bool, growth_interval: u64) -> bool {
        if !finite {
            self.scale *= 0.5;
            self.clean_steps = 0;
            return false;
        }
        self.clean_steps += 1;
        if self.clean_steps >= growth_interval {
            self.scale *= 2.0;
            self.clean_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale_clean_steps_double_it() {
        let mut s = LossScaler::new(1024.0);
        assert!(s.update(true, 3));
        assert!(s.update(true, 3));
        assert_eq!(s, LossScaler { scale: 1024.0, clean_steps: 2 });
        assert!(!s.update(false, 3), "an overflowing step is skipped");
        assert_eq!(s, LossScaler { scale: 512.0, clean_steps: 0 });
        for _ in 0..3 {
            assert!(s.update(true, 3));
        }
        assert_eq!(s, LossScaler { scale: 1024.0, clean_steps: 0 });
    }

    #[test]
    fn cast_models_compute_in_half_precision_and_backpropagate_f32_gradients_to_the_masters() {
        use crate::model::builtin;
        let root = tempfile::tempdir().unwrap();
        let folder = builtin::resolve("builtin:tiny", root.path()).unwrap();
        let device = candle_core::Device::Cpu;
        let model = StableDiffusion::load(&folder, &device, AttentionMode::Full).unwrap();
        let cast = cast_models(&model, DType::F16, true, AttentionMode::Full).unwrap();
        let text = cast.text_encoder.as_ref().unwrap();
        let ids = model.token_ids(&["a photo of sks dog"]).unwrap();
        let context = text.forward(&ids).unwrap();
        assert_eq!(context.dtype(), DType::F16);
        let size = model.default_size() / model.vae_scale_factor();
        let latents = Tensor::ones((1, model.unet_config.in_channels, size, size), DType::F16, &device).unwrap();
        let ts = Tensor::new(&[500f32], &device).unwrap();
        let pred = cast.unet.forward(&latents, &ts, &context).unwrap();
        assert_eq!(pred.dtype(), DType::F16);

        // The same forward in f32 agrees to f16's precision.
        let full = model
            .unet
            .forward(&latents.to_dtype(DType::F32).unwrap(), &ts, &model.text_encoder.forward(&ids).unwrap())
            .unwrap();
        let diff = (pred.to_dtype(DType::F32).unwrap() - &full).unwrap().abs().unwrap().max_all().unwrap();
        let scale = full.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 0.05 * scale.max(1.0), "f16 far from f32");

        let grads = pred.to_dtype(DType::F32).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap();
        for vars in [&model.unet_vars, &model.text_vars] {
            let data = vars.data().lock().unwrap();
            let with_grad = data.values().filter_map(|v| grads.get(v.as_tensor())).collect::<Vec<_>>();
            assert!(!with_grad.is_empty());
            assert!(with_grad.iter().all(|g| g.dtype() == DType::F32));
        }
        assert!(data_all_f32(&model.unet_vars));
    }

    fn data_all_f32(vars: &VarMap) -> bool {
        vars.data().lock().unwrap().values().all(|v| v.dtype() == DType::F32)
    }
}
