//! CPU kernels built on a vectorised `exp` (and an `erf` on it): the scaled softmax of a row of
//! attention scores and its backward, SiLU, GEGLU and their derivatives.
//!
//! The standard library's `f32::exp` is a call per value (glibc's `__expf`); the profile of a
//! training step put 18 % of its time there. [`exp`] is Cephes' `expf` (range reduction by
//! `ln 2`, a degree-5 polynomial; within 2 ulp of the exact value over the finite range) written
//! without branches, so each kernel's loop compiles to 8-wide AVX2 code; the softmax rows use
//! `pow2`, Cephes' `exp2f` written the same way, with `log2(e)` folded into the row's scale
//! (four operations a value fewer). Each kernel is compiled twice, for AVX2 + FMA and for the
//! baseline target, and chosen at run time. Both copies compute bit-identical results: fused
//! multiply-adds are exact in both (the AVX2 copy uses the instruction, the baseline copy
//! libm's `fmaf`, which is slow, on the rare x86 CPU without FMA; other architectures have
//! the instruction in their baseline).

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

/// Whether every tensor of `ts` is f32 in host memory: the fused CPU passes of the model's ops
/// (these kernels, the convolution's unfold, the group norm) take only those; other devices
/// and dtypes take the ops' candle-op paths.
pub fn fused_cpu(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// Values a parallel task takes at least (smaller work runs on the calling thread).
const PER_TASK: usize = 1 << 14;

/// Adding 1.5 · 2^23 to a float within ±2^22 rounds it to an integer held in the low
/// mantissa bits: `n` as a float (subtracting it again) and, through [`power_of_two`], as an
/// exponent, without a float-to-int conversion (which does not vectorise).
const ROUND: f32 = 12_582_912.0;

/// `2^n` for `t = n + ROUND`, `n` an integer within [-126, 127], from its exponent bits.
#[inline(always)]
fn power_of_two(t: f32) -> f32 {
    f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23)
}

/// `e^x` for one value (for kernels: see the module documentation on fused multiply-adds);
/// `x` is clamped to `[-87.3, 88.3]`, so it never overflows and tiny results stay normal
/// numbers (NaN stays NaN).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_5e-1)
        .mul_add(r, 0.5);
    (p.mul_add(r * r, r) + 1.0) * power_of_two(t)
}

/// `2^x` for one value (for kernels, as [`exp`]); `x` is clamped to `[-126, 127]`, so the
/// result is a normal number (NaN stays NaN). Cephes' `exp2f`: `x = n + f` with `n` an integer
/// and `|f| <= 1/2`, a degree-6 polynomial for `2^f` (within 2 ulp), `2^n` from its exponent
/// bits. Fewer operations than [`exp`] (no reduction by `ln 2`), for the softmax rows, whose
/// exponents are scaled by `log2(e)` once per row.
#[inline(always)]
fn pow2(x: f32) -> f32 {
    let x = x.clamp(-126.0, 127.0);
    let t = x + ROUND;
    let f = x - (t - ROUND);
    let p = 1.535_336_2e-4f32
        .mul_add(f, 1.339_887_4e-3)
        .mul_add(f, 9.618_437e-3)
        .mul_add(f, 5.550_332_5e-2)
        .mul_add(f, 2.402_264_8e-1)
        .mul_add(f, 6.931_472e-1);
    p.mul_add(f, 1.0) * power_of_two(t)
}

/// Defines `pub fn NAME(ARGS)` running `BODY` compiled for AVX2 + FMA where the CPU has them,
/// else for the baseline target.
macro_rules! kernel {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) $(-> $ret)? {
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
    /// `row = e^(scale * (row - top))` over the first `valid` values of the row, in place,
    /// with `top` the largest of them; the rest of the row becomes 0 (masked keys). Returns
    /// `(top, sum)`: the softmax of the row is the row divided by `sum`.
    pub fn exp_row(row: &mut [f32], valid: usize, scale: f32) -> (f32, f32) {
        let (kept, masked) = row.split_at_mut(valid);
        masked.fill(0.0);
        let top = max(kept);
        let scale = scale * std::f32::consts::LOG2_E;
        let mut acc = [0f32; LANES];
        let mut chunks = kept.chunks_exact_mut(LANES);
        for s in &mut chunks {
            for l in 0..LANES {
                s[l] = pow2(scale * (s[l] - top));
                acc[l] += s[l];
            }
        }
        let mut sum: f32 = 0.0;
        for s in chunks.into_remainder() {
            *s = pow2(scale * (*s - top));
            sum += *s;
        }
        (top, acc.iter().sum::<f32>() + sum)
    }
}

kernel! {
    /// `row = e^(scale * (row - top)) * inverse` over the first `valid` values, in place, the
    /// rest 0: a row's softmax again from the `top` and `1 / sum` [`exp_row`] found for it.
    pub fn probabilities_row(row: &mut [f32], valid: usize, scale: f32, top: f32, inverse: f32) {
        let (kept, masked) = row.split_at_mut(valid);
        masked.fill(0.0);
        let scale = scale * std::f32::consts::LOG2_E;
        for s in kept.iter_mut() {
            *s = pow2(scale * (*s - top)) * inverse;
        }
    }
}

kernel! {
    /// The gradient of the scores of one row of a softmax from its probabilities `p`
    /// and, in place, their gradient: `grad = scale * p * (grad - sum(grad * p))`.
    pub fn softmax_backward_row(p: &[f32], grad: &mut [f32], scale: f32) {
        let centre = dot(p, grad);
        for (g, p) in grad.iter_mut().zip(p) {
            *g = scale * *p * (*g - centre);
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

/// `erf(x)`: FreeBSD's / musl's `erff` (rational approximations on `|x| < 0.84375`, `< 1.25`
/// and `erfc` beyond; within 1 ulp) evaluated without branches (every range is computed and
/// one chosen per value, so that loops over it vectorise), with [`exp`].
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    // |x| < 0.84375: x + x·P(x²)/Q(x²).
    let z = a * a;
    let r = 1.283_791_7e-1 + z * (-3.250_421e-1 + z * (-2.848_175e-2 + z * (-5.770_270_2e-3 + z * -2.376_301_7e-5)));
    let s =
        1.0 + z * (3.979_172e-1 + z * (6.502_225e-2 + z * (5.081_306e-3 + z * (1.324_947_4e-4 + z * -3.960_228e-6))));
    let small = a + a * (r / s);
    // 0.84375 <= |x| < 1.25: erx + P(|x| - 1)/Q(|x| - 1).
    let t = a - 1.0;
    let p = -2.362_118_6e-3
        + t * (4.148_561e-1
            + t * (-3.722_079e-1
                + t * (3.183_466e-1 + t * (-1.108_947e-1 + t * (3.547_830_5e-2 + t * -2.166_375_5e-3)))));
    let q = 1.0
        + t * (1.064_208_8e-1
            + t * (5.403_979_5e-1
                + t * (7.182_866e-2 + t * (1.261_712_2e-1 + t * (1.363_708_4e-2 + t * 1.198_450_1e-2)))));
    let middle = 8.450_629e-1 + p / q;
    // |x| >= 1.25: 1 - erfc(|x|), erfc from exp(-x²) and R(1/x²)/S(1/x²) (two ranges; past 6,
    // erf is 1 in f32).
    let b = a.clamp(1.25, 6.0);
    let w = 1.0 / (b * b);
    let (r, s) = if b < 1.0 / 0.35 {
        let r = -9.864_944e-3
            + w * (-6.938_586e-1
                + w * (-1.055_862_6e1
                    + w * (-6.237_533e1
                        + w * (-1.623_966_7e2 + w * (-1.846_050_9e2 + w * (-8.128_744e1 + w * -9.814_329))))));
        let s = 1.0
            + w * (1.965_127_2e1
                + w * (1.376_577_6e2
                    + w * (4.345_659e2
                        + w * (6.453_873e2
                            + w * (4.290_081_5e2 + w * (1.086_35e2 + w * (6.570_249_6 + w * -6.042_441e-2)))))));
        (r, s)
    } else {
        let r = -9.864_943e-3
            + w * (-7.992_833e-1
                + w * (-1.775_795_6e1
                    + w * (-1.606_363_8e2 + w * (-6.375_665e2 + w * (-1.025_095_1e3 + w * -4.835_192e2)))));
        let s = 1.0
            + w * (3.033_806e1
                + w * (3.257_925e2
                    + w * (1.536_729_6e3
                        + w * (3.199_858e3 + w * (2.553_050_3e3 + w * (4.745_285_3e2 + w * -2.244_095_2e1))))));
        (r, s)
    };
    // exp(-x²) as exp(-h² - 0.5625) · exp((h - x)(h + x) + R/S), h = x with its low 13 bits
    // cleared, so that the square loses nothing.
    let h = f32::from_bits(b.to_bits() & 0xffff_e000);
    let large = 1.0 - exp(-h * h - 0.5625) * exp((h - b) * (h + b) + r / s) / b;
    let y = if a < 0.843_75 {
        small
    } else if a < 1.25 {
        middle
    } else {
        large
    };
    y.copysign(x)
}

/// `Φ(x)`, the standard normal distribution function, and `x · φ(x)` its density times `x`.
#[inline(always)]
fn normal(x: f32) -> (f32, f32) {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    (0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)), x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x))
}

kernel! {
    /// diffusers' GEGLU of one row `[a, g]` (two halves): `y = a · gelu(g)`, with GELU's
    /// exact form `gelu(g) = g · Φ(g)`.
    pub fn geglu(x: &[f32], y: &mut [f32]) {
        let (a, g) = x.split_at(y.len());
        for ((y, a), g) in y.iter_mut().zip(a).zip(g) {
            *y = *a * (*g * normal(*g).0);
        }
    }
}

kernel! {
    /// The gradient of one row of [`geglu`]'s input `[a, g]` from the output's gradient:
    /// `da = grad · gelu(g)`, `dg = grad · a · (Φ(g) + g φ(g))`.
    pub fn geglu_backward(x: &[f32], grad: &[f32], dx: &mut [f32]) {
        let (a, g) = x.split_at(grad.len());
        let (da, dg) = dx.split_at_mut(grad.len());
        for ((((da, dg), a), g), grad) in da.iter_mut().zip(dg).zip(a).zip(g).zip(grad) {
            let (cdf, density) = normal(*g);
            *da = *grad * (*g * cdf);
            *dg = *grad * *a * (cdf + density);
        }
    }
}

/// Runs `f(first_row, rows_of_a, rows_of_out)` on matching runs of rows of `a` (rows of
/// `a_row` values) and `out` (rows of `out_row` values) in parallel on rayon's pool, with at
/// least `PER_TASK` values of `a` a task.
pub fn par_rows<F>(a: &[f32], a_row: usize, out: &mut [f32], out_row: usize, f: F)
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    let rows = PER_TASK.div_ceil(a_row.max(1)).max(1);
    let (a_size, out_size) = (rows * a_row.max(1), rows * out_row.max(1));
    a.par_chunks(a_size).zip(out.par_chunks_mut(out_size)).enumerate().for_each(|(i, (a, out))| f(i * rows, a, out));
}

/// The elements of a contiguous f32 tensor on the CPU, or an error naming `what`.
pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(x), Some((start, end))) => Ok(&x[start..end]),
        _ => candle_core::bail!("{what} must be a contiguous f32 tensor"),
    }
}

/// Runs `f` on the values of contiguous f32 tensors in host memory (an error naming `what`
/// for any other tensor).
pub fn with_host<R>(ts: &[&Tensor], what: &str, f: impl FnOnce(&[&[f32]]) -> R) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(s) => f32_slice(s, layout, what),
            _ => candle_core::bail!("{what} must be in host memory"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(f(&slices))
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
    fn pow2_is_within_two_ulp_of_the_exact_value() {
        let mut worst = (0f64, 0f32);
        let mut x = -126.0f32;
        while x < 127.0 {
            let exact = (x as f64).exp2();
            let err = ((pow2(x) as f64) - exact).abs() / exact;
            if err > worst.0 {
                worst = (err, x);
            }
            x += 0.000_417;
        }
        assert!(worst.0 < 2.0 * f32::EPSILON as f64, "worst relative error {:e} at {}", worst.0, worst.1);
        assert_eq!((pow2(0.0), pow2(-3.0), pow2(10.0)), (1.0, 0.125, 1024.0));
        assert!(pow2(f32::NAN).is_nan());
        assert_eq!((pow2(-1000.0), pow2(f32::NEG_INFINITY)), (f32::MIN_POSITIVE, f32::MIN_POSITIVE));
        assert_eq!(pow2(1000.0), 2f32.powi(127));
    }

    #[test]
    fn softmax_rows_match_the_textbook_formula_with_masks() {
        let mut rng = crate::rng::Rng::new(3);
        for (cols, valid) in [(37, 37), (37, 5), (8, 1), (1000, 999)] {
            let row: Vec<f32> = (0..cols).map(|_| (rng.next_f64() as f32 - 0.5) * 20.0).collect();
            let top = row[..valid].iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
            let e: Vec<f64> = row[..valid].iter().map(|v| (0.3 * (*v as f64 - top)).exp()).collect();
            let sum: f64 = e.iter().sum();
            // The forward's exponentials and statistics, then the backward's probabilities.
            let mut exps = row.clone();
            let (our_top, our_sum) = exp_row(&mut exps, valid, 0.3);
            assert_eq!(our_top as f64, top);
            assert!((our_sum as f64 - sum).abs() <= 1e-6 * sum, "{cols}/{valid}: sum {our_sum} vs {sum}");
            let mut ours = row.clone();
            probabilities_row(&mut ours, valid, 0.3, our_top, 1.0 / our_sum);
            for (j, (o, x)) in ours.iter().zip(&exps).enumerate() {
                let want = if j < valid { e[j] / sum } else { 0.0 };
                assert!((*o as f64 - want).abs() <= 1e-6 * want.max(1e-3), "{cols}/{valid} col {j}: {o} vs {want}");
                let want = if j < valid { e[j] } else { 0.0 };
                assert!((*x as f64 - want).abs() <= 1e-6 * want.max(1e-3), "{cols}/{valid} exp {j}: {x} vs {want}");
            }
            // The backward: scale * p * (g - <g, p>).
            let g: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut dg = g.clone();
            softmax_backward_row(&ours, &mut dg, 0.3);
            let centre: f64 = g.iter().zip(&ours).map(|(g, p)| *g as f64 * *p as f64).sum();
            for j in 0..cols {
                let want = 0.3 * ours[j] as f64 * (g[j] as f64 - centre);
                assert!((dg[j] as f64 - want).abs() <= 1e-6, "backward col {j}");
            }
        }
    }

    #[test]
    fn erf_is_within_two_ulp_of_the_exact_value() {
        let mut worst = (0f64, 0f32);
        let mut x = -7.0f32;
        while x < 7.0 {
            let exact = libm::erf(x as f64);
            let ulp = (exact.abs() as f32).max(1e-30).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            let err = (erf(x) as f64 - exact).abs() / ulp;
            if err > worst.0 {
                worst = (err, x);
            }
            x += 0.000_137;
        }
        assert!(worst.0 <= 2.0, "{} ulp at {}", worst.0, worst.1);
        assert_eq!((erf(0.0), erf(f32::INFINITY), erf(f32::NEG_INFINITY)), (0.0, 1.0, -1.0));
        assert!(erf(f32::NAN).is_nan());
        assert!((erf(1e-20) as f64 - 1.128_379_167e-20).abs() < 1e-27);
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
