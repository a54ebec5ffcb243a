//! TPE's settings, with Optuna's `TPESampler` defaults, and its two schedules: how many
//! observations form the good group (`gamma`) and how much each observation weighs.

/// Observations before TPE takes over from random draws (Optuna's `n_startup_trials`, whose
/// default is 10).
///
/// dbsweep starts TPE after 4: each DreamBooth run is expensive, and a sweep of 10 runs whose
/// first 10 points are random draws is random search. On `cargo bench --bench search` (300
/// seeds, one slot) a random phase of 4 has lower regret than random search after 10, 20 and 40
/// evaluations on Branin, Hartmann-6 and the DreamBooth-like surface (one-sided Mann-Whitney
/// p <= 0.013 at 10 evaluations, far smaller later), lower than Optuna's after 10, and is never
/// significantly worse than Optuna's. Chosen on 300 other seeds: sizes 3, 4 and 5 beat random
/// search at every budget on all three functions, 6 not after 10 evaluations on the
/// DreamBooth-like surface, and 4 had the smallest P-values after 10 evaluations there and on
/// Hartmann-6. It does not grow with the number of parameters: on Hartmann-6 (6 parameters) 4
/// did as well as 5 or 6 at every budget.
pub const N_STARTUP: usize = 4;

/// Candidates drawn from the good density per proposal (Optuna's `n_ei_candidates`).
pub const N_CANDIDATES: usize = 24;

/// Weight of the prior kernel against one observation's (Optuna's `prior_weight`).
pub const PRIOR_WEIGHT: f64 = 1.0;

/// How TPE proposes; [`Settings::default`] is Optuna's `TPESampler()` for one objective,
/// except where noted on the field.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Random draws until this many observations exist ([`N_STARTUP`]).
    pub n_startup: usize,
    /// Candidates per proposal ([`N_CANDIDATES`]).
    pub n_candidates: usize,
    /// Weight of the prior kernel (a wide Gaussian at the centre of each range, or the
    /// sweep file's `probabilities` over categories) ([`PRIOR_WEIGHT`]).
    pub prior_weight: f64,
    /// Lower bound on kernel widths: the range / min(100, kernels + 1) (Optuna's
    /// `consider_magic_clip=True`).
    pub magic_clip: bool,
    /// Let the range's ends widen the outermost kernels (Optuna's `consider_endpoints`,
    /// default false).
    pub endpoints: bool,
    /// One joint density over all parameters (Optuna's `multivariate=True`, its default for
    /// one objective since v5) instead of one density per parameter (Bergstra et al.'s
    /// original, independent TPE). Default true: on `cargo bench --bench search` (300 seeds,
    /// 40 evaluations) joint densities had lower regret than independent ones on Branin,
    /// Hartmann-6 and the DreamBooth surface (one-sided Mann-Whitney p = 4e-5, 2e-25, 0.05).
    pub multivariate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            n_startup: N_STARTUP,
            n_candidates: N_CANDIDATES,
            prior_weight: PRIOR_WEIGHT,
            magic_clip: true,
            endpoints: false,
            multivariate: true,
        }
    }
}

/// How many of `n` observations form the good group: `min(ceil(n / 10), 25)` (Optuna's
/// `default_gamma`).
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// The weights of `n` observations in age order, oldest first: 1 each up to 25; beyond, the
/// newest 25 weigh 1 and the older ones ramp linearly from `1/n` to 1 (Optuna's
/// `default_weights`, after Bergstra et al. 2013).
pub fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let start = 1.0 / n as f64;
    let step = if ramp > 1 { (1.0 - start) / (ramp - 1) as f64 } else { 0.0 };
    (0..ramp).map(|i| start + step * i as f64).chain(std::iter::repeat_n(1.0, 25)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_and_weights_follow_optuna() {
        assert_eq!([0, 1, 10, 11, 100, 240, 251, 1000].map(gamma), [0, 1, 1, 2, 10, 24, 25, 25]);
        assert_eq!(weights(3), vec![1.0; 3]);
        assert_eq!(weights(25), vec![1.0; 25]);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        // numpy.linspace(1/30, 1, 5) then 25 ones.
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && (w[2] - (1.0 / 30.0 + 1.0) / 2.0).abs() < 1e-15);
        assert!(w[4..].iter().all(|&x| x == 1.0));
        assert_eq!(weights(26), [vec![1.0 / 26.0], vec![1.0; 25]].concat());
    }
}
