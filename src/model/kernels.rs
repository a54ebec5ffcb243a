//! CPU kernels built on a vectorised `exp`: the scaled softmax of attention scores and its
//! backward, and SiLU and its derivative.
//!
//! The standard library's `f32::exp` is a call per value (glibc's `__expf`); the profile of a
//! training step put 18 % of its time there. [`exp`] is Cephes' `expf` (range reduction by
//! `ln 2`, a degree-5 polynomial; within 2 ulp of the exact value over the finite range) written
//! without branches, so each kernel's loop compiles to 8-wide AVX2 code. Each kernel is
//! compiled twice, for AVX2 + FMA and for the baseline target, and chosen at run time; both
//! copies compute bit-identical results (the polynomial uses no fused multiply-adds).

use rayon::prelude::*;

/// Whether every tensor of `ts` is f32 in host memory: the fused CPU passes of the model's ops
/// (these kernels, the convolution's unfold, the group norm) take only those; other devices
/// and dtypes take the ops' candle-op paths.
pub fn fused_cpu(ts: &[&candle_core::Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// Values a parallel task takes at least (smaller work runs on the calling thread).
const PER_TASK: usize = 1 << 14;

/// `e^x` for one value; `x` is clamped to `[-87.3, 88.3]`, so it never overflows and tiny
/// results stay normal numbers (NaN stays NaN).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits: n, as a float and
    // (subtracting the constant's bits) as an integer, without a float-to-int conversion
    // (which does not vectorise).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2^n from its exponent bits (n is within [-126, 127] after the clamp).
    y * f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23)
}

/// Defines `pub fn NAME(ARGS)` running `BODY` compiled for AVX2 + FMA where the CPU has them,
/// else for the baseline target.
macro_rules! kernel {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Lanes of the partial maxima and sums, so that reductions vectorise.
const LANES: usize = 8;

/// The largest of `row`'s values (`-inf` for none).
#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a = a.max(*v);
        }
    }
    acc.iter().fold(tail, |m, v| m.max(*v))
}

/// `sum(a[i] * b[i])`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `p = softmax(scale * scores)` over the first `valid` values of a row; the rest of `p`
    /// becomes 0 (masked keys).
    pub fn softmax_row(scores: &[f32], p: &mut [f32], valid: usize, scale: f32) {
        let (kept, masked) = p.split_at_mut(valid);
        masked.fill(0.0);
        let scores = &scores[..valid];
        let top = max(scores);
        let mut acc = [0f32; LANES];
        let (mut out, mut chunks) = (kept.chunks_exact_mut(LANES), scores.chunks_exact(LANES));
        for (o, s) in (&mut out).zip(&mut chunks) {
            for l in 0..LANES {
                o[l] = exp(scale * (s[l] - top));
                acc[l] += o[l];
            }
        }
        let mut sum: f32 = 0.0;
        for (o, s) in out.into_remainder().iter_mut().zip(chunks.remainder()) {
            *o = exp(scale * (*s - top));
            sum += *o;
        }
        let inverse = 1.0 / (acc.iter().sum::<f32>() + sum);
        for v in kept.iter_mut() {
            *v *= inverse;
        }
    }
}

kernel! {
    /// The gradient of the scores of one row of [`softmax_row`] from its probabilities `p`
    /// and their gradient `grad`: `ds = scale * p * (grad - sum(grad * p))`.
    pub fn softmax_backward_row(p: &[f32], grad: &[f32], ds: &mut [f32], scale: f32) {
        let centre = dot(p, grad);
        for ((d, g), p) in ds.iter_mut().zip(grad).zip(p) {
            *d = scale * *p * (*g - centre);
        }
    }
}

kernel! {
    /// `y = x * sigmoid(x)`, as candle computes it: `x / (1 + e^-x)`.
    pub fn silu(x: &[f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y = *x / (1.0 + exp(-*x));
        }
    }
}

kernel! {
    /// `dx = grad * s * (1 + x * (1 - s))` with `s = sigmoid(x)`: the gradient of [`silu`].
    pub fn silu_backward(x: &[f32], grad: &[f32], dx: &mut [f32]) {
        for ((d, x), g) in dx.iter_mut().zip(x).zip(grad) {
            let s = 1.0 / (1.0 + exp(-*x));
            *d = *g * s * (1.0 + *x * (1.0 - s));
        }
    }
}

/// Runs `f` on matching chunks of `a` and `out` (each a multiple of `unit` values long) in
/// parallel on candle's thread pool, with at least [`PER_TASK`] values a task.
pub fn par_chunks<F>(a: &[f32], out: &mut [f32], unit: usize, f: F)
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    let size = PER_TASK.div_ceil(unit).max(1) * unit;
    a.par_chunks(size).zip(out.par_chunks_mut(size)).enumerate().for_each(|(i, (a, out))| f(i * size, a, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
            x += 0.000_731;
        }
        assert!(worst < 2.5 * f32::EPSILON as f64, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn softmax_rows_match_the_textbook_formula_with_masks() {
        let mut rng = crate::rng::Rng::new(3);
        for (cols, valid) in [(37, 37), (37, 5), (8, 1), (1000, 999)] {
            let row: Vec<f32> = (0..cols).map(|_| (rng.next_f64() as f32 - 0.5) * 20.0).collect();
            let mut ours = vec![f32::NAN; cols];
            softmax_row(&row, &mut ours, valid, 0.3);
            let top = row[..valid].iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
            let e: Vec<f64> = row[..valid].iter().map(|v| (0.3 * (*v as f64 - top)).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, o) in ours.iter().enumerate() {
                let want = if j < valid { e[j] / sum } else { 0.0 };
                assert!((*o as f64 - want).abs() <= 1e-6 * want.max(1e-3), "{cols}/{valid} col {j}: {o} vs {want}");
            }
            // The backward: scale * p * (g - <g, p>).
            let g: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut dg = vec![f32::NAN; cols];
            softmax_backward_row(&ours, &g, &mut dg, 0.3);
            let centre: f64 = g.iter().zip(&ours).map(|(g, p)| *g as f64 * *p as f64).sum();
            for j in 0..cols {
                let want = 0.3 * ours[j] as f64 * (g[j] as f64 - centre);
                assert!((dg[j] as f64 - want).abs() <= 1e-6, "backward col {j}");
            }
        }
    }

    #[test]
    fn silu_and_its_gradient_match_the_formulas() {
        let x: Vec<f32> = (-400..400).map(|i| i as f32 * 0.05).chain([-100.0, 100.0, 0.0]).collect();
        let mut y = vec![0f32; x.len()];
        silu(&x, &mut y);
        let g: Vec<f32> = x.iter().map(|v| 1.0 + v * 0.1).collect();
        let mut dx = vec![0f32; x.len()];
        silu_backward(&x, &g, &mut dx);
        for i in 0..x.len() {
            let v = x[i] as f64;
            let s = 1.0 / (1.0 + (-v).exp());
            assert!((y[i] as f64 - v * s).abs() <= 1e-6 * (v * s).abs().max(1e-6), "silu({v})");
            let want = g[i] as f64 * s * (1.0 + v * (1.0 - s));
            assert!((dx[i] as f64 - want).abs() <= 1e-6 * (want.abs() + (g[i] as f64).abs()), "silu'({v})");
        }
    }
}
