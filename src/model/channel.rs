//! Adding a per-channel bias and multiplying by a per-channel scale, with backward passes that
//! sum over the other dimensions quickly.
//!
//! candle differentiates `x.broadcast_add(bias)` by summing the gradient over the broadcast
//! dimensions, and its CPU sum over dimensions that are not the last ones divides the index
//! of every value (a tenth of a training step's time went there, for convolution and linear
//! biases and layer-norm weights). Here the sum over the dimensions after the channel is
//! candle's fast last-dimension sum and the sum over those before it a matrix product.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::kernels::{self, f32_slice};

/// `x + bias`, `bias` holding one value per index of `x`'s dimension `dim`.
pub fn add_bias(x: &Tensor, bias: &Tensor, dim: usize) -> Result<Tensor> {
    apply(x, bias, dim, Combine::Add)
}

/// `x * scale`, `scale` holding one value per index of `x`'s dimension `dim`.
pub fn mul_scale(x: &Tensor, scale: &Tensor, dim: usize) -> Result<Tensor> {
    apply(x, scale, dim, Combine::Mul)
}

fn apply(x: &Tensor, per_channel: &Tensor, dim: usize, combine: Combine) -> Result<Tensor> {
    if kernels::fused_cpu(&[x, per_channel]) {
        return x.contiguous()?.apply_op2(&per_channel.contiguous()?, PerChannel { dim, combine });
    }
    let shaped = per_channel.reshape(broadcast_shape(x.dims(), dim))?;
    match combine {
        Combine::Add => x.broadcast_add(&shaped),
        Combine::Mul => x.broadcast_mul(&shaped),
    }
}

/// `[1, ..., channels, ..., 1]` for a tensor of dimensions `dims` with channels at `dim`.
fn broadcast_shape(dims: &[usize], dim: usize) -> Vec<usize> {
    (0..dims.len()).map(|i| if i == dim { dims[dim] } else { 1 }).collect()
}

#[derive(Clone, Copy, Debug)]
enum Combine {
    Add,
    Mul,
}

/// `x ∘ c` with `c` broadcast along every dimension of `x` but `dim`.
struct PerChannel {
    dim: usize,
    combine: Combine,
}

impl PerChannel {
    /// `(outer, channels, inner)`: `x` seen as [outer, channels, inner].
    fn split(&self, dims: &[usize]) -> Result<(usize, usize, usize)> {
        if self.dim >= dims.len() {
            candle_core::bail!("per-channel op over dimension {} of a rank-{} tensor", self.dim, dims.len());
        }
        Ok((dims[..self.dim].iter().product(), dims[self.dim], dims[self.dim + 1..].iter().product()))
    }

    /// The sums of `t` over every dimension but `dim`, in the shape of `like`.
    fn channel_sums(&self, t: &Tensor, like: &Tensor) -> Result<Tensor> {
        let (outer, channels, inner) = self.split(t.dims())?;
        let t = t.contiguous()?.reshape((outer, channels, inner))?;
        let per_row = if inner > 1 { t.sum(2)? } else { t.reshape((outer, channels))? };
        let ones = Tensor::ones((1, outer), t.dtype(), t.device())?;
        ones.matmul(&per_row)?.reshape(like.shape())
    }
}

impl CustomOp2 for PerChannel {
    fn name(&self) -> &'static str {
        "dbsweep-per-channel"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, cs: &CpuStorage, cl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, c) = (f32_slice(xs, xl, "per-channel input")?, f32_slice(cs, cl, "per-channel values")?);
        let (_, channels, inner) = self.split(xl.dims())?;
        if c.len() != channels {
            candle_core::bail!("{} per-channel values for {channels} channels", c.len());
        }
        let combine = |a: f32, b: f32| match self.combine {
            Combine::Add => a + b,
            Combine::Mul => a * b,
        };
        let mut y = vec![0f32; x.len()];
        if x.is_empty() {
            return Ok((CpuStorage::F32(y), xl.shape().clone()));
        }
        let (inner, block) = (inner.max(1), inner.max(1) * channels);
        kernels::par_rows(x, block, &mut y, block, |_, x, y| {
            for (xb, yb) in x.chunks_exact(block).zip(y.chunks_exact_mut(block)) {
                if inner == 1 {
                    // One value a channel (a linear layer's rows): the block against `c`.
                    for ((y, a), b) in yb.iter_mut().zip(xb).zip(c) {
                        *y = combine(*a, *b);
                    }
                } else {
                    for ((xr, yr), &v) in xb.chunks_exact(inner).zip(yb.chunks_exact_mut(inner)).zip(c) {
                        for (y, a) in yr.iter_mut().zip(xr) {
                            *y = combine(*a, v);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, c: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Detached: a gradient computed from the tracked inputs would carry (and, kept in the
        // optimiser's moments, retain) the whole forward graph.
        let (x, c, grad) = (&x.detach(), &c.detach(), &grad.detach());
        match self.combine {
            Combine::Add => Ok((Some(grad.clone()), Some(self.channel_sums(grad, c)?))),
            Combine::Mul => {
                let shaped = c.reshape(broadcast_shape(x.dims(), self.dim))?;
                let dx = grad.broadcast_mul(&shaped)?;
                Ok((Some(dx), Some(self.channel_sums(&(grad * x)?, c)?)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::attention::max_abs_diff;

    fn random(shape: &[usize], seed: u64) -> Var {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.iter().product();
        Var::from_vec(rng.normals_f32(n), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn match_candles_broadcast_ops_and_their_gradients() {
        // The last two are several parallel tasks' worth (per channel and per row).
        let cases = [
            (vec![2, 5, 3, 4], 1),
            (vec![3, 7, 6], 2),
            (vec![4, 6], 0),
            (vec![5], 0),
            (vec![40, 8, 64], 1),
            (vec![3000, 7], 1),
        ];
        for (shape, dim) in cases {
            let x = random(&shape, 1);
            let c = random(&[shape[dim]], 2);
            let weights = random(&shape, 3);
            let shaped = c.reshape(broadcast_shape(&shape, dim)).unwrap();
            for combine in [Combine::Add, Combine::Mul] {
                let (ours, theirs) = match combine {
                    Combine::Add => (add_bias(&x, &c, dim).unwrap(), x.broadcast_add(&shaped).unwrap()),
                    Combine::Mul => (mul_scale(&x, &c, dim).unwrap(), x.broadcast_mul(&shaped).unwrap()),
                };
                assert!(max_abs_diff(&ours, &theirs) == 0.0, "{shape:?} {dim} {combine:?} forward");
                let loss = |y: &Tensor| (y * weights.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
                let (a, b) = (loss(&ours).backward().unwrap(), loss(&theirs).backward().unwrap());
                for var in [&x, &c] {
                    let (ga, gb) = (a.get(var).unwrap(), b.get(var).unwrap());
                    // Sums of thousands of values, in another order: relative to the largest.
                    let scale = gb.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
                    let diff = max_abs_diff(ga, gb);
                    assert!(diff < 1e-5 * scale, "{shape:?} {dim} {combine:?}: {diff} of {scale}");
                    // A gradient carrying the graph would keep every step's graph alive in
                    // the optimiser's moments (a leak of the activations, step after step).
                    assert!(!ga.track_op(), "{shape:?} {dim} {combine:?}: the gradient carries a graph");
                }
            }
        }
    }
}
