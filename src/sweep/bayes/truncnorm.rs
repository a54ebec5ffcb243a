//! The standard normal distribution truncated to an interval: log probability masses, log
//! densities and inverse-CDF sampling, accurate in the far tails.
//!
//! TPE's kernels are Gaussians truncated to the parameter's range; a candidate tens of
//! standard deviations from a kernel must still get a finite log density, or every
//! acquisition value of a well-explored space turns into `-inf - -inf`. So everything here is
//! computed in log space: `ln Φ(z)` switches to its asymptotic series far in the left tail,
//! masses are taken in the tail where they are small (by symmetry), and the inverse CDF
//! solves `ln Φ(x) = y` by Newton's method. `erfc` comes from `libm` (a port of musl's, exact
//! to about one ulp).

/// `ln(sqrt(2π))`.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal log density.
pub fn ln_pdf(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// `Φ(z)`, the standard normal CDF.
fn cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// `ln Φ(z)`, finite for every finite `z`.
pub fn ln_cdf(z: f64) -> f64 {
    if z > 0.0 {
        // Φ(z) = 1 - Φ(-z), accurate where Φ(z) is close to 1.
        (-cdf(-z)).ln_1p()
    } else if z > -20.0 {
        cdf(z).ln()
    } else {
        // Φ(z) = φ(z)/(-z) · (1 - 1/z² + 1·3/z⁴ - 1·3·5/z⁶ + ...), asymptotic for z -> -∞:
        // the terms shrink until the index passes z²/2 (200 here), long after convergence.
        let inv_z2 = 1.0 / (z * z);
        let (mut sum, mut term) = (1.0, 1.0);
        for i in 1..100 {
            term *= -((2 * i - 1) as f64) * inv_z2;
            let next = sum + term;
            if next == sum {
                break;
            }
            sum = next;
        }
        ln_pdf(z) - (-z).ln() + sum.ln()
    }
}

/// `ln(e^p + e^q)`.
pub fn ln_add(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((p - m).exp() + (q - m).exp()).ln()
}

/// `ln(e^p - e^q)` for `p >= q`.
fn ln_sub(p: f64, q: f64) -> f64 {
    p + (-(q - p).exp()).ln_1p()
}

/// `ln P(a < Z < b)` for a standard normal `Z` and `a <= b`.
pub fn ln_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        ln_sub(ln_cdf(b), ln_cdf(a))
    } else if a > 0.0 {
        // Mirror into the left tail, where ln Φ is accurate.
        ln_sub(ln_cdf(-a), ln_cdf(-b))
    } else {
        // Most of the mass: 1 minus the two tails, without cancellation.
        (-cdf(a) - cdf(-b)).ln_1p()
    }
}

/// The `x` with `ln Φ(x) = y` (`y < 0`).
fn inverse_ln_cdf(y: f64) -> f64 {
    // Near y = 0 the solution is far in the right tail: solve for -x in the left tail instead,
    // where ln Φ(-x) = ln(1 - e^y).
    let mirrored = y > -1e-2;
    let target = if mirrored { (-y.exp_m1()).ln() } else { y };
    // Start from the tail asymptote (ln Φ(x) ≈ -x²/2 - ln√(2π)) far out, or from the logistic
    // approximation Φ(x) ≈ 1 / (1 + e^(-πx/√3)) in the middle.
    let mut x = if target < -5.0 {
        -(-2.0 * (target + LN_SQRT_2PI)).sqrt()
    } else {
        -(3f64.sqrt() / std::f64::consts::PI) * (-target).exp_m1().ln()
    };
    for _ in 0..100 {
        let l = ln_cdf(x);
        // d ln Φ / dx = φ(x) / Φ(x).
        let step = (l - target) * (l - ln_pdf(x)).exp();
        x -= step;
        if !step.is_finite() || step.abs() <= 1e-10 * x.abs().max(1e-4) {
            break;
        }
    }
    if mirrored { -x } else { x }
}

/// The `u`-quantile (`u` in [0, 1)) of a standard normal truncated to `[a, b]`.
pub fn quantile(a: f64, b: f64, u: f64) -> f64 {
    let mass = ln_mass(a, b);
    let x = if a < 0.0 {
        // Φ(x) = Φ(a) + u·mass.
        inverse_ln_cdf(ln_add(ln_cdf(a), u.ln() + mass))
    } else {
        // Mirrored: Φ(-x) = Φ(-b) + (1 - u)·mass, accurate when [a, b] is in the right tail.
        -inverse_ln_cdf(ln_add(ln_cdf(-b), (-u).ln_1p() + mass))
    };
    if x.is_nan() { a } else { x.clamp(a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_cdf_matches_known_values_and_is_continuous_at_its_switches() {
        assert!((ln_cdf(0.0) - 0.5f64.ln()).abs() < 1e-15);
        // Φ(-1.959963984540054) = 0.025.
        assert!((ln_cdf(-1.959_963_984_540_054) - 0.025f64.ln()).abs() < 1e-12);
        for z in [-20.0, 0.0] {
            let (lo, hi) = (ln_cdf(z - 1e-9), ln_cdf(z + 1e-9));
            assert!((lo - hi).abs() < 1e-8 * lo.abs().max(1.0), "{z}: {lo} {hi}");
        }
        // ln Φ(-40) = -804.608442013754 (known value).
        assert!((ln_cdf(-40.0) + 804.608_442_013_754).abs() < 1e-9, "{}", ln_cdf(-40.0));
        assert!(ln_cdf(-1e3).is_finite() && ln_cdf(40.0) <= 0.0);
    }

    #[test]
    fn masses_are_finite_and_add_up() {
        assert!((ln_mass(-1.0, 1.0).exp() - 0.682_689_492_137_086).abs() < 1e-13);
        let (a, b, c) = (30.0, 31.0, 35.0);
        let whole = ln_mass(a, c);
        let parts = ln_add(ln_mass(a, b), ln_mass(b, c));
        assert!(whole.is_finite() && (whole - parts).abs() < 1e-9, "{whole} {parts}");
        assert!((ln_mass(-35.0, -30.0) - whole).abs() < 1e-12, "symmetric");
    }

    #[test]
    fn quantiles_invert_the_truncated_cdf() {
        for &(a, b) in &[(-1.0, 2.0), (0.5, 3.0), (-40.0, -39.0), (25.0, 60.0), (-3.0, -2.9)] {
            let mut last = a;
            for i in 0..50 {
                let u = i as f64 / 50.0;
                let x = quantile(a, b, u);
                assert!((a..=b).contains(&x) && x >= last, "{a} {b} {u}: {x}");
                if u > 0.0 {
                    let back = (ln_mass(a, x) - ln_mass(a, b)).exp();
                    assert!((back - u).abs() < 1e-6, "{a} {b} {u}: {back}");
                }
                last = x;
            }
        }
    }
}
