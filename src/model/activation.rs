//! SiLU with a one-pass forward and backward on the CPU ([`super::kernels`]); candle's own
//! `silu` elsewhere. candle's SiLU calls `exp` per value and differentiates through nine
//! element-wise ops (negate, exp, add, reciprocal, ...), each a pass over the activations.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::conv::f32_slice;
use super::kernels;

/// `x * sigmoid(x)`, differentiable.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if kernels::fused_cpu(&[x]) { x.contiguous()?.apply_op1(Silu) } else { x.silu() }
}

/// The forward pass; its backward is [`SiluGrad`].
struct Silu;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "dbsweep-silu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "SiLU input")?;
        let mut y = vec![0f32; x.len()];
        kernels::par_chunks(x, &mut y, 1, |_, x, y| kernels::silu(x, y));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?))
    }
}

/// The gradient of the input of [`Silu`] from the input and the output's gradient.
struct SiluGrad;

impl CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "dbsweep-silu-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(xs, xl, "SiLU input")?, f32_slice(gs, gl, "SiLU gradient")?);
        if x.len() != g.len() {
            candle_core::bail!("SiLU gradient has {} values for an input of {}", g.len(), x.len());
        }
        let mut dx = vec![0f32; x.len()];
        kernels::par_chunks(x, &mut dx, 1, |at, x, dx| kernels::silu_backward(x, &g[at..at + x.len()], dx));
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::attention::max_abs_diff;

    #[test]
    fn matches_candles_silu_and_its_gradient() {
        let mut rng = crate::rng::Rng::new(5);
        let data: Vec<f32> = (0..70_000).map(|_| (rng.next_f64() as f32 - 0.5) * 16.0).collect();
        let x = Var::from_vec(data, (7, 100, 100), &Device::Cpu).unwrap();
        // A non-contiguous view, as a transposed activation would be.
        let view = x.transpose(1, 2).unwrap();
        let weights = Tensor::arange(0f32, 100.0, &Device::Cpu).unwrap().affine(0.01, 0.5).unwrap();
        let loss = |y: Tensor| y.broadcast_mul(&weights).unwrap().sqr().unwrap().sum_all().unwrap();
        let (ours, theirs) = (silu(&view).unwrap(), view.silu().unwrap());
        assert!(max_abs_diff(&ours, &theirs) < 1e-5, "forward {}", max_abs_diff(&ours, &theirs));
        let (a, b) = (loss(ours).backward().unwrap(), loss(theirs).backward().unwrap());
        let (a, b) = (a.get(&x).unwrap(), b.get(&x).unwrap());
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_abs_diff(a, b) < 1e-5 * scale, "gradient {} of {scale}", max_abs_diff(a, b));
    }
}
