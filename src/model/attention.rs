//! Scaled dot-product multi-head attention with its own backward pass, optionally chunked over
//! queries.
//!
//! The forward pass runs on detached inputs; a custom op then attaches the analytic backward,
//! which recomputes the attention probabilities block by block (as flash-attention does)
//! instead of keeping every intermediate of the graph:
//! `dV = Pᵀ dO`, `dS = P ∘ (dO Vᵀ − rowsum(dO Vᵀ ∘ P))`, `dQ = dS K / √d`, `dK = dSᵀ Q / √d`.
//! This is both correct (candle-nn's fused softmax has no backward at all) and much cheaper
//! than differentiating the composed ops. With [`AttentionMode::Chunked`] the forward and the
//! backward hold `chunk × keys` scores at a time instead of `queries × keys`.
//!
//! On the CPU in f32 both passes are [`super::attention_cpu`]'s fused kernels, tiled in blocks
//! of at most 128 queries whatever the mode; on other devices and dtypes they are composed of
//! candle ops (with candle-nn's fused softmax in the forward pass).

use candle_core::{CustomOp3, DType, Result, Tensor};

use super::attention_cpu::Attention;
use super::handover::{Handover, hand_over};
use super::heads;
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
    let (_, nq, c) = q.dims3()?;
    let d = c / heads;
    let (q, k, v) = (heads::split(q, heads)?, heads::split(k, heads)?, heads::split(v, heads)?);
    let chunk = match mode {
        AttentionMode::Chunked(n) if n > 0 => n.min(nq),
        _ => nq,
    };
    let mut op =
        AttentionOp { scale: (d as f64).powf(-0.5), causal, chunk, out: Handover::default(), stats: Vec::new() };
    let out = op.forward(&q.detach(), &k.detach(), &v.detach())?;
    op.out.put(out);
    let out = q.apply_op3(&k, &v, op)?;
    heads::merge(&out, heads)
}

/// The attention of already split heads [b·h, n, d]; `out` holds the forward result computed
/// outside the op, which its forward only hands over (see [`super::handover`]), and `stats`
/// the fused CPU forward pass's softmax statistics, which its backward pass takes.
struct AttentionOp {
    scale: f64,
    causal: bool,
    chunk: usize,
    out: Handover,
    stats: Vec<f32>,
}

impl AttentionOp {
    /// The fused CPU kernels' description of attention from `q` to `k` [b·h, n, d].
    fn cpu(&self, q: &Tensor, k: &Tensor) -> Result<Attention> {
        let (heads, queries, depth) = q.dims3()?;
        let keys = k.dim(1)?;
        let (scale, causal, block) = (self.scale as f32, self.causal, self.chunk);
        Ok(Attention { heads, queries, keys, depth, scale, causal, block })
    }

    /// Probabilities of queries `start..start + len` against all keys.
    fn probabilities(&self, q: &Tensor, kt: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let mut scores = (q.narrow(1, start, len)?.matmul(kt)? * self.scale)?;
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
        (p * dp.broadcast_sub(&(dp * p)?.sum_keepdim(2)?)?)? * self.scale
    }

    fn blocks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk.max(1)).map(move |s| (s, self.chunk.min(n - s)))
    }

    fn forward(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        if kernels::fused_cpu(&[q, k, v]) {
            let attention = self.cpu(q, k)?;
            let (out, stats) =
                kernels::with_host(&[q, k, v], "attention's inputs", |x| attention.forward(x[0], x[1], x[2]))?;
            self.stats = stats;
            return Tensor::from_vec(out, q.shape(), q.device());
        }
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
        if kernels::fused_cpu(&[&q, &k, &v, &grad]) {
            let attention = self.cpu(&q, &k)?;
            if self.stats.len() != 2 * attention.heads * attention.queries {
                candle_core::bail!("attention's backward pass has no statistics of its forward pass");
            }
            let [dq, dk, dv] = kernels::with_host(&[&q, &k, &v, &grad], "attention's inputs", |x| {
                attention.backward(x[0], x[1], x[2], x[3], &self.stats)
            })?;
            let like = |g, t: &Tensor| Tensor::from_vec(g, t.shape(), t.device());
            return Ok((Some(like(dq, &q)?), Some(like(dk, &k)?), Some(like(dv, &v)?)));
        }
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

/// The largest absolute difference between two tensors of the same shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .to_dtype(DType::F32)
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
            let mask = Tensor::from_vec(mask, (nq, nk), q.device()).unwrap().to_dtype(q.dtype()).unwrap();
            s = s.broadcast_add(&mask).unwrap();
        }
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&split(v, nk)).unwrap().transpose(1, 2).unwrap().reshape((b, nq, c)).unwrap()
    }

    fn grads(out: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
        let w = rand((1, 1, out.dim(2).unwrap()), 99).squeeze(0).unwrap().to_dtype(out.dtype()).unwrap();
        let g = out.broadcast_mul(&w).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| g.get(v).expect("gradient").clone()).collect()
    }

    /// f32 takes the fused CPU kernels, f64 the candle-op path of other devices and dtypes;
    /// 150 queries are several of the kernels' blocks.
    #[test]
    fn matches_autograd_of_composed_ops_full_chunked_and_causal() {
        let cases = [
            (AttentionMode::Full, false, 10, 7),
            (AttentionMode::Chunked(3), false, 10, 7),
            (AttentionMode::Chunked(4), true, 10, 10),
            (AttentionMode::Full, false, 150, 130),
            (AttentionMode::Full, true, 150, 150),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (mode, causal, nq, nk) in cases {
                let var = |shape, seed| Var::from_tensor(&rand(shape, seed).to_dtype(dtype).unwrap()).unwrap();
                let (q, k, v) = (var((2, nq, 8), 1), var((2, nk, 8), 2), var((2, nk, 8), 3));
                let ours = attention(&q, &k, &v, 2, causal, mode).unwrap();
                let reference = composed(&q, &k, &v, 2, causal);
                let what = format!("{dtype:?} {mode:?} causal {causal} {nq}x{nk}");
                assert!(max_abs_diff(&ours, &reference) < 1e-6, "{what} forward");
                for (a, b) in grads(&ours, &[&q, &k, &v]).iter().zip(grads(&reference, &[&q, &k, &v])) {
                    assert!(max_abs_diff(a, &b) < 1e-5, "{what}: gradient differs by {}", max_abs_diff(a, &b));
                }
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
