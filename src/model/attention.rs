//! Scaled dot-product multi-head attention with its own backward pass, optionally chunked over
//! queries.
//!
//! The forward pass runs on detached inputs with candle's fused softmax; a custom op then
//! attaches the analytic backward, which recomputes the attention probabilities block by
//! block (as flash-attention does) instead of keeping every intermediate of the graph:
//! `dV = Pᵀ dO`, `dS = P ∘ (dO Vᵀ − rowsum(dO Vᵀ ∘ P))`, `dQ = dS K / √d`, `dK = dSᵀ Q / √d`.
//! This is both correct (candle-nn's fused softmax has no backward at all) and much cheaper
//! than differentiating the composed ops. With [`AttentionMode::Chunked`] the forward and the
//! backward hold `chunk × keys` scores at a time instead of `queries × keys`.
//!
//! On the CPU in f32, the scaled (and masked) softmax and its backward are one pass each over
//! a row of scores ([`super::kernels`], with a vectorised `exp`); elsewhere they are candle ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::conv::f32_slice;
use super::handover::{Handover, hand_over};
use super::kernels;

/// How attention is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMode {
    /// All queries at once.
    Full,
    /// Queries in blocks of this many.
    Chunked(usize),
}

/// Attends `q` [batch, queries, channels] to `k`, `v` [batch, keys, channels] with `heads`
/// heads. With `causal`, query `i` sees keys `0..=i` only.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
    mode: AttentionMode,
) -> Result<Tensor> {
    let (b, nq, c) = q.dims3()?;
    let nk = k.dim(1)?;
    let d = c / heads;
    let split =
        |t: &Tensor, n: usize| t.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, n, d));
    let (q, k, v) = (split(q, nq)?, split(k, nk)?, split(v, nk)?);
    let chunk = match mode {
        AttentionMode::Chunked(n) if n > 0 => n.min(nq),
        _ => nq,
    };
    let op = AttentionOp { scale: (d as f64).powf(-0.5), causal, chunk, out: Handover::default() };
    op.out.put(op.forward(&q.detach(), &k.detach(), &v.detach())?);
    let out = q.apply_op3(&k, &v, op)?;
    out.reshape((b, heads, nq, d))?.transpose(1, 2)?.contiguous()?.reshape((b, nq, c))
}

/// The attention of already split heads [b·h, n, d]; `out` holds the forward result computed
/// outside the op, which its forward only hands over (see [`super::handover`]).
struct AttentionOp {
    scale: f64,
    causal: bool,
    chunk: usize,
    out: Handover,
}

impl AttentionOp {
    /// Probabilities of queries `start..start + len` against all keys.
    fn probabilities(&self, q: &Tensor, kt: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let scores = q.narrow(1, start, len)?.matmul(kt)?;
        if kernels::fused_cpu(&[&scores]) {
            let causal_from = self.causal.then_some(start);
            return scores.apply_op1_no_bwd(&ScaledSoftmax { scale: self.scale as f32, causal_from });
        }
        let mut scores = (scores * self.scale)?;
        if self.causal {
            let nk = kt.dim(2)?;
            let mask: Vec<f32> = (start..start + len)
                .flat_map(|i| (0..nk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            let mask = Tensor::from_vec(mask, (len, nk), q.device())?.to_dtype(scores.dtype())?;
            scores = scores.broadcast_add(&mask)?;
        }
        // Half-precision scores are normalised in f32, as PyTorch's autocast does.
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(scores.dtype())
    }

    /// The gradient of the scaled scores from the probabilities `p` and their gradient `dp`:
    /// `scale · p ∘ (dp − rowsum(dp ∘ p))`.
    fn score_gradient(&self, p: &Tensor, dp: &Tensor) -> Result<Tensor> {
        if kernels::fused_cpu(&[p]) {
            return p.apply_op2_no_bwd(dp, &ScaledSoftmaxGrad { scale: self.scale as f32 });
        }
        (p * dp.broadcast_sub(&(dp * p)?.sum_keepdim(2)?)?)? * self.scale
    }

    fn blocks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk.max(1)).map(move |s| (s, self.chunk.min(n - s)))
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let kt = k.t()?.contiguous()?;
        let blocks = self
            .blocks(q.dim(1)?)
            .map(|(s, n)| self.probabilities(q, &kt, s, n)?.matmul(v))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&blocks, 1)
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "dbsweep-attention"
    }

    hand_over!();

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v, grad) = (q.detach(), k.detach(), v.detach(), grad.detach().contiguous()?);
        let kt = k.t()?.contiguous()?;
        let vt = v.t()?.contiguous()?;
        let mut dq = Vec::new();
        let mut dk = k.zeros_like()?;
        let mut dv = v.zeros_like()?;
        for (start, len) in self.blocks(q.dim(1)?) {
            let p = self.probabilities(&q, &kt, start, len)?;
            let g = grad.narrow(1, start, len)?;
            dv = (dv + p.t()?.matmul(&g)?)?;
            let ds = self.score_gradient(&p, &g.matmul(&vt)?)?;
            dq.push(ds.matmul(&k)?);
            dk = (dk + ds.t()?.matmul(&q.narrow(1, start, len)?)?)?;
        }
        Ok((Some(Tensor::cat(&dq, 1)?), Some(dk), Some(dv)))
    }
}

/// `softmax(scale · scores)` over the last dimension of [rows, queries, keys] scores; with
/// `causal_from`, query `i` of the block (query `causal_from + i` overall) sees keys
/// `0..=causal_from + i` only.
struct ScaledSoftmax {
    scale: f32,
    causal_from: Option<usize>,
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "dbsweep-scaled-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = f32_slice(storage, layout, "attention scores")?;
        let (_, queries, keys) = layout.shape().dims3()?;
        let mut p = vec![0f32; scores.len()];
        kernels::par_chunks(scores, &mut p, keys, |at, scores, block| {
            for (r, (row, out)) in scores.chunks(keys).zip(block.chunks_mut(keys)).enumerate() {
                let query = (at / keys + r) % queries;
                let valid = self.causal_from.map_or(keys, |from| (from + query + 1).min(keys));
                kernels::softmax_row(row, out, valid, self.scale);
            }
        });
        Ok((CpuStorage::F32(p), layout.shape().clone()))
    }
}

/// The gradient of [`ScaledSoftmax`]'s input from its output and the output's gradient.
struct ScaledSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for ScaledSoftmaxGrad {
    fn name(&self) -> &'static str {
        "dbsweep-scaled-softmax-grad"
    }

    fn cpu_fwd(&self, ps: &CpuStorage, pl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, g) = (f32_slice(ps, pl, "attention probabilities")?, f32_slice(gs, gl, "their gradient")?);
        let keys = pl.shape().dims().last().copied().unwrap_or(1).max(1);
        if p.len() != g.len() {
            candle_core::bail!("{} gradients for {} attention probabilities", g.len(), p.len());
        }
        let mut ds = vec![0f32; p.len()];
        kernels::par_chunks(p, &mut ds, keys, |at, p, block| {
            let g = &g[at..at + p.len()];
            for ((p, g), row) in p.chunks(keys).zip(g.chunks(keys)).zip(block.chunks_mut(keys)) {
                kernels::softmax_backward_row(p, g, row, self.scale);
            }
        });
        Ok((CpuStorage::F32(ds), pl.shape().clone()))
    }
}

/// The largest absolute difference between two tensors of the same shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(candle_core::D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn rand(shape: (usize, usize, usize), seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.0 * shape.1 * shape.2;
        let data: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Attention from differentiable primitives, autograd's reference.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Tensor {
        let (b, nq, c) = q.dims3().unwrap();
        let nk = k.dim(1).unwrap();
        let d = c / heads;
        let split = |t: &Tensor, n| t.reshape((b, n, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let mut s = (split(q, nq).matmul(&split(k, nk).t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        if causal {
            let mask: Vec<f32> =
                (0..nq).flat_map(|i| (0..nk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            s = s.broadcast_add(&Tensor::from_vec(mask, (nq, nk), q.device()).unwrap()).unwrap();
        }
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&split(v, nk)).unwrap().transpose(1, 2).unwrap().reshape((b, nq, c)).unwrap()
    }

    fn grads(out: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
        let w = rand((1, 1, out.dim(2).unwrap()), 99).squeeze(0).unwrap();
        let g = out.broadcast_mul(&w).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| g.get(v).expect("gradient").clone()).collect()
    }

    #[test]
    fn matches_autograd_of_composed_ops_full_chunked_and_causal() {
        for (mode, causal) in
            [(AttentionMode::Full, false), (AttentionMode::Chunked(3), false), (AttentionMode::Chunked(4), true)]
        {
            let q = Var::from_tensor(&rand((2, 10, 8), 1)).unwrap();
            let (nk, kseed) = if causal { (10, 2) } else { (7, 2) };
            let k = Var::from_tensor(&rand((2, nk, 8), kseed)).unwrap();
            let v = Var::from_tensor(&rand((2, nk, 8), 3)).unwrap();
            let ours = attention(&q, &k, &v, 2, causal, mode).unwrap();
            let reference = composed(&q, &k, &v, 2, causal);
            assert!(max_abs_diff(&ours, &reference) < 1e-6, "{mode:?} forward");
            for (a, b) in grads(&ours, &[&q, &k, &v]).iter().zip(grads(&reference, &[&q, &k, &v])) {
                assert!(
                    max_abs_diff(a, &b) < 1e-5,
                    "{mode:?} causal {causal}: gradient differs by {}",
                    max_abs_diff(a, &b)
                );
            }
        }
    }

    /// Why the op exists: candle-nn's fused softmax silently drops gradients.
    #[test]
    fn stock_fused_softmax_has_no_gradient() {
        let x = Var::from_tensor(&rand((1, 2, 4), 5)).unwrap();
        let g = candle_nn::ops::softmax_last_dim(&x).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none(), "candle-nn fixed its fused softmax backward: revisit this module");
    }
}
