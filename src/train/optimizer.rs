//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW`) and global gradient-norm
//! clipping, with state that can be saved and restored exactly.
//!
//! candle-nn's `AdamW` keeps its moments private, so a checkpoint could not resume it exactly;
//! this one exposes them for the checkpoint writer.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// AdamW hyperparameters (the learning rate is given at every step: the schedule sets it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// One parameter and its two moments.
pub struct Slot {
    /// The parameter.
    pub var: Var,
    /// First moment.
    pub m: Tensor,
    /// Second moment.
    pub v: Tensor,
}

/// The optimiser.
pub struct AdamW {
    /// Parameters with their moments, in a fixed order.
    pub slots: Vec<(String, Slot)>,
    /// Steps taken (bias correction uses it).
    pub step: u64,
    /// Hyperparameters.
    pub config: AdamWConfig,
}

impl AdamW {
    /// An optimiser over named parameters, moments zero.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let (m, v) = (var.zeros_like()?, var.zeros_like()?);
                Ok((name, Slot { var, m, v }))
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots, step: 0, config })
    }

    /// The global L2 norm of the gradients of all parameters (missing gradients count 0).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for (_, slot) in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`; gradients are scaled by `grad_scale` first (for
    /// clipping and accumulation). Parameters without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (_, slot) in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            let g = (g * grad_scale)?;
            slot.m = ((&slot.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&slot.m / bc1)? / ((&slot.v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = (slot.var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// The factor that scales gradients of global norm `norm` down to `max_norm` (PyTorch's
/// `clip_grad_norm_`: `max_norm / (norm + 1e-6)`, capped at 1).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_pytorch_adamw_closed_form() {
        // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        // p = 1.0, two steps with grad 0.5 then -0.25.
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg).unwrap();
        let mut expected = 1.0f64;
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for (t, grad) in [(1, 0.5f64), (2, -0.25)] {
            let loss = (var.as_tensor() * grad).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
            expected *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * grad;
            v = 0.999 * v + 0.001 * grad * grad;
            let mhat = m / (1.0 - 0.9f64.powi(t));
            let vhat = v / (1.0 - 0.999f64.powi(t));
            expected -= 0.1 * mhat / (vhat.sqrt() + 1e-8);
            let got = var.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
            assert!((got - expected).abs() < 1e-6, "step {t}: {got} vs {expected}");
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn clipping_only_ever_scales_down() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 0.25).abs() < 1e-6);
    }
}
