//! Scaled dot-product multi-head attention, optionally chunked over queries.
//!
//! Chunking splits the queries into blocks and attends each block to every key, so the
//! forward pass holds `chunk x keys` scores at a time instead of `queries x keys`. Results
//! are identical to full attention (tested).

use candle_core::{Result, Tensor};

use super::nn::softmax;

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
    let q = (split(q, nq)? * (d as f64).powf(-0.5))?;
    let (k, v) = (split(k, nk)?, split(v, nk)?);
    let kt = k.t()?.contiguous()?;
    let block = |start: usize, len: usize| -> Result<Tensor> {
        let q = q.narrow(1, start, len)?;
        let mut scores = q.matmul(&kt)?;
        if causal {
            let mask: Vec<f32> = (start..start + len)
                .flat_map(|i| (0..nk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            let mask = Tensor::from_vec(mask, (len, nk), q.device())?.to_dtype(scores.dtype())?;
            scores = scores.broadcast_add(&mask)?;
        }
        softmax(&scores)?.matmul(&v)
    };
    let out = match mode {
        AttentionMode::Chunked(n) if n > 0 && n < nq => {
            let blocks = (0..nq).step_by(n).map(|s| block(s, n.min(nq - s))).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&blocks, 1)?
        }
        _ => block(0, nq)?,
    };
    out.reshape((b, heads, nq, d))?.transpose(1, 2)?.contiguous()?.reshape((b, nq, c))
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
    use candle_core::{Device, Var};

    fn rand(shape: (usize, usize, usize), seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.0 * shape.1 * shape.2;
        let data: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn chunked_equals_full_forward_and_backward() {
        let q = Var::from_tensor(&rand((2, 10, 8), 1)).unwrap();
        let k = rand((2, 7, 8), 2);
        let v = rand((2, 7, 8), 3);
        let full = attention(&q, &k, &v, 2, false, AttentionMode::Full).unwrap();
        let chunked = attention(&q, &k, &v, 2, false, AttentionMode::Chunked(3)).unwrap();
        assert!(max_abs_diff(&full, &chunked) < 1e-6);
        let g_full = full.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g_chunk = chunked.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(g_full.get(&q).unwrap(), g_chunk.get(&q).unwrap()) < 1e-6);
    }

    #[test]
    fn causal_attention_ignores_later_keys() {
        let q = rand((1, 4, 4), 4);
        let k = rand((1, 4, 4), 5);
        let v = rand((1, 4, 4), 6);
        let out = attention(&q, &k, &v, 1, true, AttentionMode::Full).unwrap();
        // Changing the last key/value must not change the first three outputs.
        let k2 = k.slice_assign(&[0..1, 3..4, 0..4], &rand((1, 1, 4), 7)).unwrap();
        let v2 = v.slice_assign(&[0..1, 3..4, 0..4], &rand((1, 1, 4), 8)).unwrap();
        let out2 = attention(&q, &k2, &v2, 1, true, AttentionMode::Full).unwrap();
        assert!(max_abs_diff(&out.narrow(1, 0, 3).unwrap(), &out2.narrow(1, 0, 3).unwrap()) < 1e-7);
        assert!(max_abs_diff(&out.narrow(1, 3, 1).unwrap(), &out2.narrow(1, 3, 1).unwrap()) > 1e-4);
    }
}
