//! A Parzen estimator: the density TPE fits to one group of observations, as Optuna builds it.
//!
//! A mixture with one kernel per observation plus one prior kernel. Over several dimensions a
//! kernel is a product of one distribution per dimension (so a univariate estimator is the
//! one-dimension case). Per dimension:
//!
//! - numeric (float, log float in log space, integer or `q_uniform` grid index): a Gaussian
//!   centred on the observation, truncated to the range. Its width is the larger gap to the
//!   neighbouring observations (the range's ends count as neighbours only for interior
//!   kernels: `consider_endpoints=False`), clipped to [range / min(100, kernels + 1), range]
//!   (`consider_magic_clip`). The prior kernel sits at the range's centre with the range as
//!   width. A grid's range is widened by half a step on each side and a grid value's
//!   probability is the kernel's mass over [k - 1/2, k + 1/2];
//! - categorical: the observed category gets weight 1 and every category a share of the
//!   prior weight (`prior_weight / kernels`, spread by the category prior); the prior kernel
//!   is the category prior itself.
//!
//! Mixture weights are [`weights`] (old observations weigh less beyond 25) and the prior
//! weight, normalised.

use super::settings::{Settings, weights};
use super::space::{Dim, Kind};
use super::truncnorm::{ln_add, ln_mass, ln_pdf, quantile};
use crate::rng::Rng;

/// The fitted density over some dimensions.
pub(super) struct Parzen {
    /// Cumulative mixture weights, for sampling a kernel.
    cumulative: Vec<f64>,
    /// `ln` of each mixture weight.
    ln_weights: Vec<f64>,
    /// Per dimension, the kernels' distributions.
    dims: Vec<Kernels>,
}

/// One dimension's distribution in every kernel (the prior last).
enum Kernels {
    Numeric {
        mu: Vec<f64>,
        sigma: Vec<f64>,
        /// The (widened, for grids) range.
        lo: f64,
        hi: f64,
        /// A grid: values are whole numbers.
        grid: bool,
        /// `ln` of each kernel's normaliser: `ln σ + ln √(2π) + ln mass(range)` for floats
        /// (so `ln p(x) = -z²/2 - ln_norm`), `ln mass(range)` for grids.
        ln_norm: Vec<f64>,
    },
    Categorical {
        /// Per kernel, each category's probability and its log.
        probs: Vec<Vec<f64>>,
        ln_probs: Vec<Vec<f64>>,
    },
}

impl Parzen {
    /// The estimator over `dims` fitted to `points` (each with one coordinate per dimension
    /// of `dims`, in age order, oldest first).
    pub fn new(dims: &[&Dim], points: &[Vec<f64>], settings: &Settings) -> Parzen {
        let mut w = weights(points.len());
        w.push(settings.prior_weight);
        if points.is_empty() {
            w = vec![1.0];
        }
        let sum: f64 = w.iter().sum();
        let w: Vec<f64> = w.iter().map(|x| x / sum).collect();
        let cumulative = w
            .iter()
            .scan(0.0, |acc: &mut f64, x| {
                *acc += x;
                Some(*acc)
            })
            .collect();
        let ln_weights = w.iter().map(|x| x.ln()).collect();
        let dims = dims
            .iter()
            .enumerate()
            .map(|(j, dim)| {
                let xs: Vec<f64> = points.iter().map(|p| p[j]).collect();
                Kernels::new(dim, &xs, settings)
            })
            .collect();
        Parzen { cumulative, ln_weights, dims }
    }

    /// One random point from the mixture: a kernel, then each dimension from it.
    pub fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let u = rng.next_f64() * self.cumulative.last().copied().unwrap_or(1.0);
        let k = self.cumulative.iter().position(|&c| u < c).unwrap_or(self.cumulative.len() - 1);
        self.dims.iter().map(|d| d.sample(k, rng.next_f64())).collect()
    }

    /// `ln` of the density (or, on grids and categories, the probability) at `x`.
    pub fn ln_pdf(&self, x: &[f64]) -> f64 {
        let mut total = f64::NEG_INFINITY;
        for (k, lw) in self.ln_weights.iter().enumerate() {
            let mut v = *lw;
            for (d, &xd) in self.dims.iter().zip(x) {
                v += d.ln_pdf(k, xd);
            }
            total = ln_add(total, v);
        }
        total
    }
}

impl Kernels {
    fn new(dim: &Dim, xs: &[f64], settings: &Settings) -> Kernels {
        match &dim.kind {
            Kind::Categorical { prior, .. } => {
                let n_kernels = xs.len() + 1;
                let share = if xs.is_empty() { 0.0 } else { settings.prior_weight / n_kernels as f64 };
                let c = prior.len() as f64;
                let mut probs: Vec<Vec<f64>> = xs
                    .iter()
                    .map(|&x| {
                        // Optuna gives every category prior_weight / kernels; spreading that
                        // total by the category prior keeps it for a uniform prior.
                        let mut row: Vec<f64> = prior.iter().map(|p| share * c * p).collect();
                        row[x as usize] += 1.0;
                        let s: f64 = row.iter().sum();
                        row.iter().map(|r| r / s).collect()
                    })
                    .collect();
                probs.push(prior.clone());
                let ln_probs = probs.iter().map(|row| row.iter().map(|p| p.ln()).collect()).collect();
                Kernels::Categorical { probs, ln_probs }
            }
            Kind::Float { lo, hi, .. } => Kernels::numeric(*lo, *hi, false, xs, settings),
            Kind::Grid { lo, hi, .. } => Kernels::numeric(lo - 0.5, hi + 0.5, true, xs, settings),
        }
    }

    fn numeric(lo: f64, hi: f64, grid: bool, xs: &[f64], settings: &Settings) -> Kernels {
        let range = hi - lo;
        let n = xs.len();
        let mut order: Vec<usize> = (0..n).collect();
        // Stable, so equal observations get their widths in observation order (numpy's default
        // argsort, which Optuna uses, is not stable).
        order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        let sorted: Vec<f64> = order.iter().map(|&i| xs[i]).collect();
        // Neighbours with the range's ends around the sorted observations.
        let at = |i: isize| -> f64 {
            if i < 0 {
                lo
            } else if i as usize >= n {
                hi
            } else {
                sorted[i as usize]
            }
        };
        let mut sorted_sigma: Vec<f64> = (0..n as isize).map(|i| (at(i) - at(i - 1)).max(at(i + 1) - at(i))).collect();
        if !settings.endpoints && n >= 2 {
            sorted_sigma[0] = sorted[1] - sorted[0];
            sorted_sigma[n - 1] = sorted[n - 1] - sorted[n - 2];
        }
        let min_sigma = if settings.magic_clip { range / (100f64).min(n as f64 + 2.0) } else { 1e-12 };
        let mut sigma = vec![0.0; n];
        for (s, &i) in sorted_sigma.iter().zip(&order) {
            sigma[i] = s.clamp(min_sigma, range);
        }
        let mut mu = xs.to_vec();
        mu.push(0.5 * (lo + hi));
        sigma.push(range);
        let ln_norm = mu
            .iter()
            .zip(&sigma)
            .map(|(&m, &s)| {
                let mass = ln_mass((lo - m) / s, (hi - m) / s);
                if grid { mass } else { mass + s.ln() - ln_pdf(0.0) }
            })
            .collect();
        Kernels::Numeric { mu, sigma, lo, hi, grid, ln_norm }
    }

    /// Kernel `k`'s value at quantile `u`.
    fn sample(&self, k: usize, u: f64) -> f64 {
        match self {
            Kernels::Numeric { mu, sigma, lo, hi, grid, .. } => {
                let (m, s) = (mu[k], sigma[k]);
                let x = (m + s * quantile((lo - m) / s, (hi - m) / s, u)).clamp(*lo, *hi);
                // A grid value: the whole number nearest, inside the unwidened range.
                if *grid { x.round().clamp(lo + 0.5, hi - 0.5) } else { x }
            }
            Kernels::Categorical { probs, .. } => {
                let row = &probs[k];
                let mut acc = 0.0;
                let last = row.iter().rposition(|&p| p > 0.0).unwrap_or(row.len() - 1);
                row.iter()
                    .position(|&p| {
                        acc += p;
                        u < acc
                    })
                    .map_or(last, |i| i.min(last)) as f64
            }
        }
    }

    /// Kernel `k`'s log density (or log probability) at `x`.
    fn ln_pdf(&self, k: usize, x: f64) -> f64 {
        match self {
            Kernels::Numeric { mu, sigma, grid: false, ln_norm, .. } => {
                let z = (x - mu[k]) / sigma[k];
                -0.5 * z * z - ln_norm[k]
            }
            Kernels::Numeric { mu, sigma, grid: true, ln_norm, .. } => {
                let (m, s) = (mu[k], sigma[k]);
                ln_mass((x - 0.5 - m) / s, (x + 0.5 - m) / s) - ln_norm[k]
            }
            Kernels::Categorical { ln_probs, .. } => ln_probs[k][x as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Location;
    use crate::sweep::bayes::space::Space;
    use crate::sweep::spec::{Domain, Located, Parameter};

    fn at<T>(value: T) -> Located<T> {
        Located { value, at: Location { file: "t".into(), line: 1, column: 1 } }
    }

    /// `ln_pdf` at `xs` of the estimator fitted to `obs` (coordinates, one column per domain).
    fn ln_pdfs(domains: Vec<Domain>, obs: &[Vec<f64>], xs: &[Vec<f64>]) -> Vec<f64> {
        let params: Vec<Parameter> =
            domains.into_iter().map(|domain| Parameter { key: "k".into(), at: at(()).at, domain }).collect();
        let space = Space::new(&params).unwrap();
        let dims: Vec<&Dim> = space.dims().iter().collect();
        let parzen = Parzen::new(&dims, obs, &Settings::default());
        xs.iter().map(|x| parzen.ln_pdf(x)).collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}\n{want:?}");
        }
    }

    fn col(xs: &[f64]) -> Vec<Vec<f64>> {
        xs.iter().map(|&x| vec![x]).collect()
    }

    // Expected values: optuna 5.0.0's `_ParzenEstimator.log_pdf` with the default parameters
    // (prior_weight 1, magic clip, no endpoints, default_weights) on the same observations.

    #[test]
    fn float_kernels_match_optuna() {
        let d = || vec![Domain::Uniform { min: at(0.0), max: at(10.0) }];
        let obs = col(&[3.99, 9.997, 4.104, 8.567, 4.971, 4.949, 5.085]);
        let want = [-3.9905886753962747, -2.6299965749540477, -1.6285966230059372, -2.226558852432451];
        close(&ln_pdfs(d(), &obs, &col(&[0.0, 2.5, 4.97, 9.9])), &want);
        close(&ln_pdfs(d(), &[], &col(&[0.0, 2.5])), &[-2.386607292503096, -2.292857292503096]);
        close(&ln_pdfs(d(), &col(&[7.5]), &col(&[0.0, 7.0])), &[-2.5238030755306085, -2.232180882736879]);
    }

    #[test]
    fn log_float_kernels_match_optuna() {
        let d = vec![Domain::LogUniformValues { min: at(1e-7), max: at(1e-3) }];
        let ln = |xs: &[f64]| col(&xs.iter().map(|x| x.ln()).collect::<Vec<_>>());
        let got = ln_pdfs(d, &ln(&[1e-6, 3e-5, 2e-4, 5e-6]), &ln(&[1e-7, 2e-6, 1e-4, 1e-3]));
        close(&got, &[-3.125463264642569, -2.0450563020883226, -2.131542811113974, -2.732971864817343]);
    }

    #[test]
    fn grid_kernels_match_optuna() {
        let d = vec![Domain::IntUniform { min: at(-3), max: at(7) }];
        let got = ln_pdfs(d, &col(&[0.0, 1.0, 1.0, 6.0, -3.0]), &col(&[-3.0, 0.0, 1.0, 5.0, 7.0]));
        let want =
            [-2.4265034690876774, -2.0561595148049427, -2.0428348741157656, -2.8123076035819947, -3.0528028350488574];
        close(&got, &want);
    }

    #[test]
    fn categorical_kernels_match_optuna() {
        let values = ["a", "b", "c"].map(|v| at(json!(v))).to_vec();
        let d = vec![Domain::Values { values, probabilities: None }];
        let got = ln_pdfs(d, &col(&[0.0, 2.0, 2.0, 1.0]), &col(&[0.0, 1.0, 2.0]));
        close(&got, &[-1.2321436812926323, -1.2321436812926323, -0.8754687373538996]);
    }

    #[test]
    fn joint_kernels_with_aged_weights_match_optuna() {
        let xs = [
            0.5488, 0.7152, 0.6028, 0.5449, 0.4237, 0.6459, 0.4376, 0.8918, 0.9637, 0.3834, 0.7917, 0.5289, 0.568,
            0.9256, 0.071, 0.0871, 0.0202, 0.8326, 0.7782, 0.87, 0.9786, 0.7992, 0.4615, 0.7805, 0.1183, 0.6399,
            0.1434, 0.9447, 0.5218, 0.4147,
        ];
        let ns = [3, 3, 2, 4, 2, 0, 0, 4, 0, 4, 1, 4, 1, 2, 2, 0, 1, 1, 1, 1, 3, 3, 2, 3, 0, 3, 4, 1, 2, 4];
        let obs: Vec<Vec<f64>> = xs.iter().zip(ns).map(|(&x, n)| vec![x, n as f64]).collect();
        let d = vec![Domain::Uniform { min: at(0.0), max: at(1.0) }, Domain::IntUniform { min: at(0), max: at(4) }];
        let got = ln_pdfs(d, &obs, &[vec![0.1, 0.0], vec![0.5, 2.0], vec![0.93, 4.0]]);
        // Equal observations get their widths in sorted order, and numpy's default argsort is
        // not stable; these values are optuna's with `np.argsort(.., kind="stable")`, the order
        // dbsweep uses (with numpy's quicksort order they differ by up to 0.1 here).
        close(&got, &[-0.46857812016598527, -1.1511652518654396, -1.4601794708767641]);
    }
}
