//! Mixed-precision training: f32 master weights, f16 or bf16 compute, dynamic loss scaling.
//!
//! The trained modules' variables stay f32: AdamW updates them, checkpoints save them. Each
//! step casts them to the compute dtype and builds the forward pass from those casts (see
//! [`super::trainable`]). A cast
//! is differentiable, so the backward pass hands f32 gradients to the f32 variables: what
//! PyTorch's autocast does, with each weight cast once per step instead of once per op. The
//! loss is computed in f32 from the prediction cast back (as diffusers' `mse_loss(pred.float(),
//! target.float())`).
//!
//! With f16 the loss is multiplied by a scale before the backward pass so small gradients do
//! not flush to zero; gradients are divided by it before clipping and the update. A step whose
//! gradients overflow is skipped and the scale halved; after `growth_interval` clean steps it
//! doubles (PyTorch's `GradScaler`). bf16 has f32's exponent range and needs no scaling.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::config::MixedPrecision;

/// The dtype the trained modules compute in.
pub fn compute_dtype(precision: MixedPrecision) -> DType {
    match precision {
        MixedPrecision::No => DType::F32,
        MixedPrecision::Fp16 => DType::F16,
        MixedPrecision::Bf16 => DType::BF16,
    }
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
}
