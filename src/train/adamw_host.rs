//! AdamW's update of an f32 parameter in host memory, with f32 or 8-bit moments, in one
//! parallel pass.
//!
//! Composed of candle ops, the update is twelve element-wise passes over the parameter, each
//! allocating its result, and most of them on one thread (candle's affine map is serial);
//! with 8-bit moments two more loops dequantise them and two quantise them again. Here each
//! value is read once and the new parameter and moments written once, with the arithmetic of
//! the composed ops in the same order (so the results are the same).

use rayon::prelude::*;

use super::quantize::{BLOCK, DynamicMap};

/// Values a parallel task takes at least.
const PER_TASK: usize = 1 << 14;

/// The constants of one step, as f32 (candle's ops on f32 tensors round their f64 scalars to
/// f32 in the same way).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The factor of the gradients (clipping, accumulation, loss scale).
    pub grad_scale: f32,
    /// beta1.
    pub beta1: f32,
    /// 1 - beta1.
    pub one_minus_beta1: f32,
    /// beta2.
    pub beta2: f32,
    /// 1 - beta2.
    pub one_minus_beta2: f32,
    /// 1 / (1 - beta1^t).
    pub inv_bias1: f32,
    /// 1 / (1 - beta2^t).
    pub inv_bias2: f32,
    /// The denominator's epsilon.
    pub eps: f32,
    /// 1 - lr · weight decay.
    pub decay: f32,
    /// The learning rate.
    pub lr: f32,
    /// 1 / √(1 - β2ᵗ) (8-bit moments).
    pub inv_sqrt_bias2: f32,
    /// lr / (1 - β1ᵗ) (8-bit moments).
    pub lr_over_bias1: f32,
}

/// One 8-bit moment of a parameter in host memory (see [`super::quantize`]).
pub struct Moment8<'a> {
    /// One code per value, padded to whole blocks; replaced by the new moment's.
    pub codes: &'a mut [u8],
    /// Each block's scale; replaced by the new moment's.
    pub absmax: &'a mut [f32],
    /// The map the codes index.
    pub map: &'a DynamicMap,
}

/// The new parameter and moments from parameter `p`, gradient `g` and moments `m`, `v` (all of
/// one length): `g' = g·s`, `m' = β1 m + (1-β1) g'`, `v' = β2 v + (1-β2) g'²`,
/// `p' = p (1 - lr λ) - lr (m'/(1-β1ᵗ)) / (√(v'/(1-β2ᵗ)) + ε)`.
pub fn update(k: &Step, p: &[f32], g: &[f32], m: &[f32], v: &[f32]) -> [Vec<f32>; 3] {
    let n = p.len();
    assert!(g.len() == n && m.len() == n && v.len() == n, "AdamW's inputs differ in length");
    let (mut p2, mut m2, mut v2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let outputs = p2.par_chunks_mut(PER_TASK).zip(m2.par_chunks_mut(PER_TASK)).zip(v2.par_chunks_mut(PER_TASK));
    outputs.enumerate().for_each(|(i, ((p2, m2), v2))| {
        let at = i * PER_TASK;
        let inputs = p[at..].iter().zip(&g[at..]).zip(&m[at..]).zip(&v[at..]);
        for (((p2, m2), v2), (((p, g), m), v)) in p2.iter_mut().zip(m2).zip(v2).zip(inputs) {
            let g = g * k.grad_scale;
            *m2 = m * k.beta1 + g * k.one_minus_beta1;
            *v2 = v * k.beta2 + g * g * k.one_minus_beta2;
            let step = (*m2 * k.inv_bias1) / ((*v2 * k.inv_bias2).sqrt() + k.eps);
            *p2 = p * k.decay - step * k.lr;
        }
    });
    [p2, m2, v2]
}

/// The new parameter from parameter `p` and gradient `g`, with 8-bit moments `m` (signed,
/// keeping its sign) and `v` replaced by the new ones, in the order bitsandbytes' `AdamW8bit`
/// kernels compute it: `m' = β1 m + (1-β1) g'`, `v' = β2 v + (1-β2) g'²`, `p' = (p - lr/(1-β1ᵗ)
/// · m' / (√v' / √(1-β2ᵗ) + ε)) (1 - lr λ)`. Each block of [`BLOCK`] values is dequantised,
/// updated and quantised again on its own, in parallel.
pub fn update_8bit(k: &Step, p: &[f32], g: &[f32], m: Moment8, v: Moment8) -> Vec<f32> {
    let n = p.len();
    let blocks = n.div_ceil(BLOCK);
    assert!(g.len() == n, "AdamW's inputs differ in length");
    assert!(m.codes.len() == blocks * BLOCK && v.codes.len() == blocks * BLOCK, "8-bit moments of another length");
    assert!(m.absmax.len() == blocks && v.absmax.len() == blocks, "8-bit moments with other blocks");
    let mut p2 = vec![0f32; n];
    let tasks = p2.par_chunks_mut(PER_TASK).zip(m.codes.par_chunks_mut(PER_TASK)).zip(v.codes.par_chunks_mut(PER_TASK));
    let tasks = tasks.zip(m.absmax.par_chunks_mut(PER_TASK / BLOCK)).zip(v.absmax.par_chunks_mut(PER_TASK / BLOCK));
    tasks.enumerate().for_each(|(i, ((((p2, m_codes), v_codes), m_absmax), v_absmax))| {
        let (mut mf, mut vf) = ([0f32; BLOCK], [0f32; BLOCK]);
        let blocks = p2.chunks_mut(BLOCK).zip(m_codes.chunks_mut(BLOCK)).zip(v_codes.chunks_mut(BLOCK));
        for (j, (((p2, m_codes), v_codes), (m_scale, v_scale))) in
            blocks.zip(m_absmax.iter_mut().zip(v_absmax.iter_mut())).enumerate()
        {
            let at = i * PER_TASK + j * BLOCK;
            let (p, g) = (&p[at..at + p2.len()], &g[at..at + p2.len()]);
            let values = p2.iter_mut().zip(p).zip(g).zip(mf.iter_mut().zip(vf.iter_mut()));
            for ((((p2, p), g), (mf, vf)), (mc, vc)) in values.zip(m_codes.iter().zip(v_codes.iter())) {
                let g = g * k.grad_scale;
                let (m_old, v_old) = (m.map.value(*mc) * *m_scale, v.map.value(*vc) * *v_scale);
                *mf = m_old * k.beta1 + g * k.one_minus_beta1;
                *vf = v_old * k.beta2 + g * g * k.one_minus_beta2;
                let denom = vf.sqrt() * k.inv_sqrt_bias2 + k.eps;
                *p2 = (p - (*mf / denom) * k.lr_over_bias1) * k.decay;
            }
            *m_scale = m.map.quantize_block(&mf[..p2.len()], m_codes, true);
            *v_scale = v.map.quantize_block(&vf[..p2.len()], v_codes, false);
        }
    });
    p2
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The same values as the candle ops the optimiser composes on other devices.
    #[test]
    fn matches_the_composed_candle_ops_exactly() {
        let mut rng = crate::rng::Rng::new(11);
        let n = 3 * PER_TASK + 123;
        let mut values = |scale: f32| rng.normals_f32(n).into_iter().map(|x| x * scale).collect::<Vec<f32>>();
        let (p, g, m) = (values(1.0), values(0.1), values(0.01));
        let v: Vec<f32> = values(0.001).iter().map(|x| x * x).collect();
        let (beta1, beta2, eps, wd, lr, scale, t) = (0.9f64, 0.999f64, 1e-8, 1e-2, 3e-3, 0.7, 5);
        let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        let k = Step {
            grad_scale: scale as f32,
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_bias1: (1.0 / bc1) as f32,
            inv_bias2: (1.0 / bc2) as f32,
            eps: eps as f32,
            decay: (1.0 - lr * wd) as f32,
            lr: lr as f32,
            inv_sqrt_bias2: (1.0 / bc2.sqrt()) as f32,
            lr_over_bias1: (lr / bc1) as f32,
        };
        let [p2, m2, v2] = update(&k, &p, &g, &m, &v);

        let t = |x: &[f32]| Tensor::from_slice(x, n, &Device::Cpu).unwrap();
        let g = (t(&g) * scale).unwrap();
        let m = ((t(&m) * beta1).unwrap() + (&g * (1.0 - beta1)).unwrap()).unwrap();
        let v = ((t(&v) * beta2).unwrap() + (g.sqr().unwrap() * (1.0 - beta2)).unwrap()).unwrap();
        let step = ((&m / bc1).unwrap() / ((&v / bc2).unwrap().sqrt().unwrap() + eps).unwrap()).unwrap();
        let p = ((t(&p) * (1.0 - lr * wd)).unwrap() - (step * lr).unwrap()).unwrap();
        for (name, ours, theirs) in [("p", p2, p), ("m", m2, m), ("v", v2, v)] {
            assert_eq!(ours, theirs.to_vec1::<f32>().unwrap(), "{name}");
        }
    }
}
