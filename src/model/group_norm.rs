//! Group normalisation with a fused forward and an analytic backward pass on the CPU.
//!
//! candle-nn's `GroupNorm` is composed of about ten elementwise ops forward and twice that
//! backward, each a pass over the activations with a temporary: a fifth of the tiny model's
//! training step. Here the forward pass is one pass for the statistics of each group and one
//! to normalise, and the backward pass computes the input gradient and the scale and shift
//! gradients from the same statistics:
//! `x̂ = (x − μ)·r`, `g = dy·γ`, `dx = r·(g − mean(g) − x̂·mean(g·x̂))` per group,
//! `dγ = Σ dy·x̂`, `dβ = Σ dy` per channel. Statistics are accumulated in f64, and each
//! backward op recomputes them (one read of the input) rather than keeping them from the
//! forward pass. Other devices and dtypes compute the same two passes with candle ops
//! (`Generic`: statistics in f32, the forward pass keeping no graph, the backward pass the
//! same formulas), so a GPU build normalises as the CPU does instead of through candle-nn's
//! composed group norm and its graph of temporaries.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::handover::{Handover, hand_over};
use super::kernels::{self, f32_slice};

/// Group normalisation with learned per-channel scale and shift.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `weight` and `bias` of size `channels` under `vb`, in `groups` groups.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, groups, eps })
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let fused = kernels::fused_cpu(&[xs, &self.weight]);
        self.normalise(xs, fused)
    }
}

impl GroupNorm {
    /// The normalisation by the fused CPU ops (`fused`) or by candle ops (any device, dtype).
    fn normalise(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        let (groups, eps) = (self.groups, self.eps);
        if fused {
            return xs.contiguous()?.apply_op3(&self.weight, &self.bias, Forward { groups, eps });
        }
        let op = Generic { groups, eps, out: Handover::default() };
        op.out.put(op.forward(xs, &self.weight, &self.bias)?);
        xs.apply_op3(&self.weight, &self.bias, op)
    }
}

/// The same passes with candle ops, for any device and dtype. Its forward pass hands over the
/// output computed (without graph) before the op was applied.
struct Generic {
    groups: usize,
    eps: f64,
    out: Handover,
}

impl Generic {
    /// `x̂` [n, groups, rest] in f32 and the reciprocal standard deviations [n, groups, 1].
    fn normalised(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let grouped = x.detach().to_dtype(DType::F32)?.reshape((n, self.groups, ()))?;
        let centered = grouped.broadcast_sub(&grouped.mean_keepdim(2)?)?;
        let rstd = (centered.sqr()?.mean_keepdim(2)? + self.eps)?.sqrt()?.recip()?;
        Ok((centered.broadcast_mul(&rstd)?, rstd))
    }

    /// A per-channel vector shaped to broadcast over [n, c, ...].
    fn per_channel(v: &Tensor, rank: usize) -> Result<Tensor> {
        let mut dims = vec![1; rank];
        dims[1] = v.elem_count();
        v.to_dtype(DType::F32)?.reshape(dims)
    }

    fn forward(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (xhat, _) = self.normalised(x)?;
        let xhat = xhat.reshape(x.shape())?;
        let y =
            xhat.broadcast_mul(&Self::per_channel(w, x.rank())?)?.broadcast_add(&Self::per_channel(b, x.rank())?)?;
        y.to_dtype(x.dtype())
    }
}

impl CustomOp3 for Generic {
    fn name(&self) -> &'static str {
        "dbsweep-group-norm-generic"
    }

    hand_over!();

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let (xhat, rstd) = self.normalised(x)?;
        let dy = grad.detach().to_dtype(DType::F32)?;
        // dx = r · (g − mean(g) − x̂ · mean(g · x̂)) per group, with g = dy · γ.
        let g = dy.broadcast_mul(&Self::per_channel(&w.detach(), x.rank())?)?.reshape((n, self.groups, ()))?;
        let mean_g = g.mean_keepdim(2)?;
        let mean_gx = (&g * &xhat)?.mean_keepdim(2)?;
        let dx = g.broadcast_sub(&mean_g)?.sub(&xhat.broadcast_mul(&mean_gx)?)?.broadcast_mul(&rstd)?;
        // dγ = Σ dy · x̂ and dβ = Σ dy over the batch and the positions, per channel.
        let by_channel = |t: &Tensor| -> Result<Tensor> { t.reshape((n, c, ()))?.sum(2)?.sum(0) };
        let dw = by_channel(&(dy.reshape((n, self.groups, ()))? * &xhat)?)?;
        let db = by_channel(&dy)?;
        Ok((
            Some(dx.reshape(x.shape())?.to_dtype(x.dtype())?),
            Some(dw.to_dtype(w.dtype())?),
            Some(db.to_dtype(w.dtype())?),
        ))
    }
}

/// The sizes of an input [n, c, ...] split into `groups`: (n, c, channels per group, elements
/// per channel).
fn sizes(shape: &Shape, groups: usize) -> Result<(usize, usize, usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 || !dims[1].is_multiple_of(groups) {
        candle_core::bail!("group norm: input {shape:?} does not split into {groups} groups of channels");
    }
    let (n, c) = (dims[0], dims[1]);
    Ok((n, c, c / groups, dims[2..].iter().product()))
}

/// Mean and reciprocal standard deviation of one group's elements.
fn statistics(block: &[f32], eps: f64) -> (f64, f64) {
    let len = block.len() as f64;
    let mean = block.iter().map(|&v| v as f64).sum::<f64>() / len;
    let var = block.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The forward pass: x, γ, β to y.
struct Forward {
    groups: usize,
    eps: f64,
}

impl CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "dbsweep-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice(xs, xl, "group norm input")?,
            f32_slice(ws, wl, "group norm weight")?,
            f32_slice(bs, bl, "group norm bias")?,
        );
        let (_, c, per_group, spatial) = sizes(xl.shape(), self.groups)?;
        let mut y = vec![0f32; x.len()];
        let size = per_group * spatial;
        // Groups in parallel, on candle's thread pool (RAYON_NUM_THREADS).
        x.par_chunks_exact(size).zip(y.par_chunks_exact_mut(size)).enumerate().for_each(|(i, (block, out))| {
            let (mean, rstd) = statistics(block, self.eps);
            let (mean, first) = (mean as f32, i * per_group % c);
            for (j, (xc, yc)) in block.chunks_exact(spatial).zip(out.chunks_exact_mut(spatial)).enumerate() {
                let (scale, shift) = ((rstd * w[first + j] as f64) as f32, b[first + j]);
                for (yv, &xv) in yc.iter_mut().zip(xc) {
                    *yv = (xv - mean) * scale + shift;
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, grad) = (x.detach(), grad.detach().contiguous()?);
        let dx = x.apply_op3_no_bwd(&w.detach(), &grad, &InputGrad { groups: self.groups, eps: self.eps })?;
        let params = x.apply_op2_no_bwd(&grad, &ParamGrads { groups: self.groups, eps: self.eps })?;
        Ok((Some(dx), Some(params.get(0)?), Some(params.get(1)?)))
    }
}

/// The input gradient: x, γ, dy to dx.
struct InputGrad {
    groups: usize,
    eps: f64,
}

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "dbsweep-group-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (
            f32_slice(xs, xl, "group norm input")?,
            f32_slice(ws, wl, "group norm weight")?,
            f32_slice(gs, gl, "group norm gradient")?,
        );
        let (_, c, per_group, spatial) = sizes(xl.shape(), self.groups)?;
        let size = per_group * spatial;
        let mut dx = vec![0f32; x.len()];
        let blocks = x.par_chunks_exact(size).zip(dy.par_chunks_exact(size)).zip(dx.par_chunks_exact_mut(size));
        blocks.enumerate().for_each(|(i, ((block, gblock), out))| {
            let (mean, rstd) = statistics(block, self.eps);
            let first = i * per_group % c;
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for (j, (xc, gc)) in block.chunks_exact(spatial).zip(gblock.chunks_exact(spatial)).enumerate() {
                let gamma = w[first + j] as f64;
                for (&xv, &gv) in xc.iter().zip(gc) {
                    let g = gv as f64 * gamma;
                    sum_g += g;
                    sum_gx += g * (xv as f64 - mean) * rstd;
                }
            }
            let (mean_g, mean_gx) = (sum_g / size as f64, sum_gx / size as f64);
            for (j, ((xc, gc), oc)) in block
                .chunks_exact(spatial)
                .zip(gblock.chunks_exact(spatial))
                .zip(out.chunks_exact_mut(spatial))
                .enumerate()
            {
                let gamma = w[first + j] as f64;
                for ((&xv, &gv), o) in xc.iter().zip(gc).zip(oc.iter_mut()) {
                    let xhat = (xv as f64 - mean) * rstd;
                    *o = (rstd * (gv as f64 * gamma - mean_g - xhat * mean_gx)) as f32;
                }
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// The scale and shift gradients: x, dy to [2, c] (dγ, dβ).
struct ParamGrads {
    groups: usize,
    eps: f64,
}

impl CustomOp2 for ParamGrads {
    fn name(&self) -> &'static str {
        "dbsweep-group-norm-param-grads"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (f32_slice(xs, xl, "group norm input")?, f32_slice(gs, gl, "group norm gradient")?);
        let (_, c, per_group, spatial) = sizes(xl.shape(), self.groups)?;
        let size = per_group * spatial;
        // Each (image, group) block's channel sums in parallel, then their totals over images.
        let blocks: Vec<Vec<(f64, f64)>> = x
            .par_chunks_exact(size)
            .zip(dy.par_chunks_exact(size))
            .map(|(block, gblock)| {
                let (mean, rstd) = statistics(block, self.eps);
                let channels = block.chunks_exact(spatial).zip(gblock.chunks_exact(spatial));
                channels
                    .map(|(xc, gc)| {
                        xc.iter().zip(gc).fold((0f64, 0f64), |(dw, db), (&xv, &gv)| {
                            (dw + gv as f64 * (xv as f64 - mean) * rstd, db + gv as f64)
                        })
                    })
                    .collect()
            })
            .collect();
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        for (i, sums) in blocks.iter().enumerate() {
            let first = i * per_group % c;
            for (j, (w, b)) in sums.iter().enumerate() {
                dw[first + j] += w;
                db[first + j] += b;
            }
        }
        let out: Vec<f32> = dw.into_iter().chain(db).map(|v| v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::attention::max_abs_diff;
    use crate::rng::Rng;

    fn random(shape: &[usize], seed: u64, offset: f32) -> Var {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0 + offset).collect();
        Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn outputs_and_gradients_match_candle_nns_group_norm() {
        for (shape, groups) in [(vec![2, 8, 5, 3], 4), (vec![3, 6, 4], 3), (vec![1, 4, 2, 2], 1)] {
            let c = shape[1];
            // An offset mean, as activations have, tests the statistics' precision.
            let (x, w, b) = (random(&shape, 1, 3.0), random(&[c], 2, 1.0), random(&[c], 3, 0.0));
            let ours = GroupNorm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), groups, eps: 1e-5 };
            let composed =
                candle_nn::GroupNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), c, groups, 1e-5).unwrap();
            let reference = composed.forward(x.as_tensor()).unwrap();
            let r = random(reference.dims(), 4, 0.0);
            let grads = |out: &Tensor| (out * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = grads(&reference);
            // The fused CPU passes and the candle-op passes other devices use.
            for fused in [true, false] {
                let y = ours.normalise(x.as_tensor(), fused).unwrap();
                assert!(max_abs_diff(&y, &reference) < 1e-5, "{shape:?} fused {fused}: outputs differ");
                let g = grads(&y);
                for var in [&x, &w, &b] {
                    let (a, e) = (g.get(var.as_tensor()).unwrap(), gr.get(var.as_tensor()).unwrap());
                    assert!(max_abs_diff(a, e) < 1e-4, "{shape:?} fused {fused}: gradients differ\n{a}\n{e}");
                }
            }
        }
    }
}
