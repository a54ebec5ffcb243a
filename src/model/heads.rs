//! Splitting an activation into attention heads and merging them back: on the CPU in f32 one
//! parallel copy each way, each the other's backward pass; elsewhere candle's transpose and
//! copy (a strided copy on one thread on the CPU, a pass in each direction of both passes).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{self, f32_slice};

/// `x` [b, n, heads·d] as heads [b·heads, n, d], differentiable.
pub fn split(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    if kernels::fused_cpu(&[x]) {
        return x.contiguous()?.apply_op1(Heads { heads, split: true });
    }
    x.reshape((b, n, heads, c / heads))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, n, c / heads))
}

/// Heads `x` [b·heads, n, d] merged into [b, n, heads·d], differentiable.
pub fn merge(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    if kernels::fused_cpu(&[x]) {
        return x.contiguous()?.apply_op1(Heads { heads, split: false });
    }
    x.reshape((bh / heads, heads, n, d))?.transpose(1, 2)?.contiguous()?.reshape((bh / heads, n, heads * d))
}

/// [`split`] (`split: true`) or [`merge`] on the CPU.
struct Heads {
    heads: usize,
    split: bool,
}

impl CustomOp1 for Heads {
    fn name(&self) -> &'static str {
        "dbsweep-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "attention heads")?;
        let (a, n, e) = layout.shape().dims3()?;
        let h = self.heads;
        let (b, d) = if self.split { (a, e / h.max(1)) } else { (a / h.max(1), e) };
        if h == 0 || b * h * d * n != x.len() {
            candle_core::bail!("{h} attention heads do not divide a tensor of shape {:?}", layout.shape());
        }
        let mut y = vec![0f32; x.len()];
        if !y.is_empty() {
            // One task per head of one image: its n rows of d values, taken from (split) or put
            // into (merge) the image's rows of h·d values.
            let image = |task: usize| &x[task / h * n * h * d..][..n * h * d];
            if self.split {
                y.par_chunks_mut(n * d).enumerate().for_each(|(task, out)| {
                    let columns = image(task).chunks_exact(h * d).map(|row| &row[task % h * d..][..d]);
                    out.chunks_exact_mut(d).zip(columns).for_each(|(o, v)| o.copy_from_slice(v));
                });
            } else {
                y.par_chunks_mut(n * h * d).enumerate().for_each(|(image, out)| {
                    let heads = &x[image * h * n * d..][..h * n * d];
                    for (i, row) in out.chunks_exact_mut(h * d).enumerate() {
                        for (head, o) in row.chunks_exact_mut(d).enumerate() {
                            o.copy_from_slice(&heads[(head * n + i) * d..][..d]);
                        }
                    }
                });
            }
        }
        let shape = if self.split { (b * h, n, d) } else { (b, n, h * d) };
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Heads { heads: self.heads, split: !self.split };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::model::attention::max_abs_diff;

    #[test]
    fn split_and_merge_match_candles_transposes_and_their_gradients() {
        let mut rng = crate::rng::Rng::new(9);
        let x = Var::from_vec(rng.normals_f32(3 * 70 * 24), (3, 70, 24), &Device::Cpu).unwrap();
        let weights = Tensor::from_vec(rng.normals_f32(3 * 70 * 24), (3, 70, 24), &Device::Cpu).unwrap();
        // Through f64 (candle's transposes) and f32 (the fused copies).
        let via = |dtype: DType| {
            let t = x.as_tensor().to_dtype(dtype).unwrap();
            let heads = split(&t, 4).unwrap();
            assert_eq!(heads.dims(), &[12, 70, 6]);
            let scaled = (heads.to_dtype(DType::F32).unwrap() * 1.5).unwrap().to_dtype(dtype).unwrap();
            let merged = merge(&scaled, 4).unwrap().to_dtype(DType::F32).unwrap();
            let loss = (&merged * &weights).unwrap().sqr().unwrap().sum_all().unwrap();
            (heads.to_dtype(DType::F32).unwrap(), merged, loss.backward().unwrap().get(&x).unwrap().clone())
        };
        let (ours, theirs) = (via(DType::F32), via(DType::F64));
        assert_eq!(max_abs_diff(&ours.0, &theirs.0), 0.0, "split");
        assert_eq!(max_abs_diff(&ours.1, &theirs.1), 0.0, "merge");
        assert!(max_abs_diff(&ours.2, &theirs.2) < 1e-4, "gradient {}", max_abs_diff(&ours.2, &theirs.2));
        assert!(split(x.as_tensor(), 5).is_err(), "5 heads do not divide 24 channels");
    }
}
