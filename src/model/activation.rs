//! SiLU and GEGLU with a one-pass forward and backward each on the CPU ([`super::kernels`]);
//! candle's ops elsewhere. candle's SiLU calls `exp` per value and differentiates through nine
//! element-wise ops (negate, exp, add, reciprocal, ...), each a pass over the activations; its
//! exact GELU calls `erf` per value and differentiates through eleven.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, D, Layout, Result, Shape, Tensor};

use super::kernels::{self, f32_slice};

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
        kernels::par_rows(x, 1, &mut y, 1, |_, x, y| kernels::silu(x, y));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?))
    }
}

/// diffusers' GEGLU: the two halves `[a, g]` of the last dimension of `x` to `a · gelu(g)`,
/// with GELU's exact (erf) form; differentiable.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if kernels::fused_cpu(&[x]) {
        return x.contiguous()?.apply_op1(Geglu);
    }
    let halves = x.chunk(2, D::Minus1)?;
    &halves[0] * halves[1].gelu_erf()?
}

/// The forward pass of [`geglu`]; its backward is [`GegluGrad`].
struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "dbsweep-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "GEGLU input")?;
        let (width, out_shape) = halved(layout.shape())?;
        let mut y = vec![0f32; x.len() / 2];
        kernels::par_rows(x, 2 * width, &mut y, width, |_, x, y| {
            for (x, y) in x.chunks_exact(2 * width).zip(y.chunks_exact_mut(width)) {
                kernels::geglu(x, y);
            }
        });
        Ok((CpuStorage::F32(y), out_shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GegluGrad)?))
    }
}

/// The width of [`geglu`]'s output rows and its shape, from its input's shape.
fn halved(shape: &Shape) -> Result<(usize, Shape)> {
    let mut dims = shape.dims().to_vec();
    match dims.last_mut() {
        Some(last) if *last % 2 == 0 && *last > 0 => {
            *last /= 2;
            Ok((*last, Shape::from(dims)))
        }
        _ => candle_core::bail!("GEGLU needs an even, non-zero last dimension, not shape {shape:?}"),
    }
}

/// The gradient of the input of [`Geglu`] from the input and the output's gradient.
struct GegluGrad;

impl CustomOp2 for GegluGrad {
    fn name(&self) -> &'static str {
        "dbsweep-geglu-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(xs, xl, "GEGLU input")?, f32_slice(gs, gl, "GEGLU gradient")?);
        let (width, out_shape) = halved(xl.shape())?;
        if gl.shape() != &out_shape {
            candle_core::bail!("GEGLU gradient of shape {:?} for an output of {out_shape:?}", gl.shape());
        }
        let mut dx = vec![0f32; x.len()];
        kernels::par_rows(x, 2 * width, &mut dx, 2 * width, |row, x, dx| {
            let g = &g[row * width..][..x.len() / 2];
            let rows = x.chunks_exact(2 * width).zip(g.chunks_exact(width)).zip(dx.chunks_exact_mut(2 * width));
            for ((x, g), dx) in rows {
                kernels::geglu_backward(x, g, dx);
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
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
        kernels::par_rows(x, 1, &mut dx, 1, |at, x, dx| kernels::silu_backward(x, &g[at..at + x.len()], dx));
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

    #[test]
    fn geglu_matches_candles_gelu_erf_and_its_gradient() {
        let mut rng = crate::rng::Rng::new(6);
        let data: Vec<f32> = (0..3 * 50 * 96).map(|_| (rng.next_f64() as f32 - 0.5) * 12.0).collect();
        let x = Var::from_vec(data, (3, 50, 96), &Device::Cpu).unwrap();
        let composed = |x: &Tensor| {
            let halves = x.chunk(2, D::Minus1).unwrap();
            (&halves[0] * halves[1].gelu_erf().unwrap()).unwrap()
        };
        let weights = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap().affine(0.02, 0.5).unwrap();
        let loss = |y: Tensor| y.broadcast_mul(&weights).unwrap().sqr().unwrap().sum_all().unwrap();
        let (ours, theirs) = (geglu(&x).unwrap(), composed(&x));
        assert_eq!(ours.dims(), &[3, 50, 48]);
        let scale = theirs.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_abs_diff(&ours, &theirs) < 1e-6 * scale, "forward {} of {scale}", max_abs_diff(&ours, &theirs));
        let (a, b) = (loss(ours).backward().unwrap(), loss(theirs).backward().unwrap());
        let (a, b) = (a.get(&x).unwrap(), b.get(&x).unwrap());
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_abs_diff(a, b) < 1e-5 * scale, "gradient {} of {scale}", max_abs_diff(a, b));
        assert!(geglu(&Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
