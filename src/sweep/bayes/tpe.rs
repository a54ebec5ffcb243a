//! One TPE step: split the observations into a good and a bad group, fit a Parzen estimator
//! to each, draw candidates from the good one and rank them by `ln l(x) - ln g(x)` (which
//! orders them as expected improvement does, Bergstra et al. 2011, section 4.1).

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use super::parzen::Parzen;
use super::settings::{Settings, gamma};
use super::space::{Dim, Space};
use crate::rng::Rng;

/// Candidates in decreasing acquisition, as full coordinate vectors.
pub(super) struct Ranked {
    /// Best first, without repeats.
    pub candidates: Vec<Vec<f64>>,
    /// Observations in the good group.
    pub below: usize,
}

/// Ranks candidates given `observed` (coordinates and loss, lower is better, in the order
/// they were observed) and `pending` (coordinates of running points: the constant liar puts
/// them in the bad group, as if they had the worst loss).
pub(super) fn rank(
    space: &Space,
    settings: &Settings,
    observed: &[(Vec<f64>, f64)],
    pending: &[Vec<f64>],
    rng: &mut Rng,
) -> Ranked {
    let n = observed.len();
    let n_below = gamma(n).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal losses keep observation order, as Optuna's `sorted`.
    order.sort_by(|&a, &b| observed[a].1.total_cmp(&observed[b].1));
    let mut good = vec![false; n];
    order[..n_below].iter().for_each(|&i| good[i] = true);
    let below: Vec<&Vec<f64>> = observed.iter().zip(&good).filter(|(_, g)| **g).map(|(o, _)| &o.0).collect();
    let above: Vec<&Vec<f64>> =
        observed.iter().zip(&good).filter(|(_, g)| !**g).map(|(o, _)| &o.0).chain(pending).collect();

    let dims = space.dims();
    let free: Vec<usize> = (0..dims.len()).filter(|&i| dims[i].fixed().is_none()).collect();
    let base: Vec<f64> = dims.iter().map(|d| d.fixed().unwrap_or(0.0)).collect();
    let assemble = |xs: &[f64]| {
        let mut full = base.clone();
        free.iter().zip(xs).for_each(|(&i, &x)| full[i] = x);
        full
    };
    let candidates = if free.is_empty() {
        vec![base.clone()]
    } else if settings.multivariate {
        let scored = scored_candidates(&free, dims, &below, &above, settings, rng);
        scored.iter().map(|(x, _)| assemble(x)).collect()
    } else {
        let per_dim: Vec<Vec<(Vec<f64>, f64)>> =
            free.iter().map(|&i| scored_candidates(&[i], dims, &below, &above, settings, rng)).collect();
        best_combinations(&per_dim, settings.n_candidates)
            .iter()
            .map(|pick| {
                let xs: Vec<f64> = pick.iter().zip(&per_dim).map(|(&j, list)| list[j].0[0]).collect();
                assemble(&xs)
            })
            .collect()
    };
    Ranked { candidates, below: n_below }
}

/// Candidates over the dimensions `which`, drawn from the good density, distinct, best first.
fn scored_candidates(
    which: &[usize],
    dims: &[Dim],
    below: &[&Vec<f64>],
    above: &[&Vec<f64>],
    settings: &Settings,
    rng: &mut Rng,
) -> Vec<(Vec<f64>, f64)> {
    let sub: Vec<&Dim> = which.iter().map(|&i| &dims[i]).collect();
    let project =
        |ps: &[&Vec<f64>]| -> Vec<Vec<f64>> { ps.iter().map(|p| which.iter().map(|&i| p[i]).collect()).collect() };
    let l = Parzen::new(&sub, &project(below), settings);
    let g = Parzen::new(&sub, &project(above), settings);
    let mut seen = BTreeSet::new();
    let mut scored: Vec<(Vec<f64>, f64)> = Vec::with_capacity(settings.n_candidates);
    for _ in 0..settings.n_candidates.max(1) {
        let x = l.sample(rng);
        if seen.insert(x.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()) {
            let score = l.ln_pdf(&x) - g.ln_pdf(&x);
            scored.push((x, if score.is_nan() { f64::NEG_INFINITY } else { score }));
        }
    }
    // Stable: equal scores keep draw order (numpy's argmax takes the first).
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

/// The `limit` best picks of one candidate per dimension by the sum of their scores (the
/// univariate acquisition is a sum over dimensions), best first: a best-first search from
/// every dimension's best.
fn best_combinations(per_dim: &[Vec<(Vec<f64>, f64)>], limit: usize) -> Vec<Vec<usize>> {
    let score = |pick: &[usize]| pick.iter().zip(per_dim).map(|(&j, list)| list[j].1).sum::<f64>();
    let start = vec![0; per_dim.len()];
    let mut heap = BinaryHeap::from([Pick { score: score(&start), pick: start.clone() }]);
    let mut seen = BTreeSet::from([start]);
    let mut out = Vec::new();
    while let Some(Pick { pick, .. }) = heap.pop() {
        for d in 0..pick.len() {
            if pick[d] + 1 < per_dim[d].len() {
                let mut next = pick.clone();
                next[d] += 1;
                if seen.insert(next.clone()) {
                    heap.push(Pick { score: score(&next), pick: next });
                }
            }
        }
        out.push(pick);
        if out.len() >= limit.max(1) {
            break;
        }
    }
    out
}

/// A heap entry: higher score first, then the lexicographically smaller pick.
#[derive(PartialEq)]
struct Pick {
    score: f64,
    pick: Vec<usize>,
}

impl Eq for Pick {}

impl Ord for Pick {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.pick.cmp(&self.pick))
    }
}

impl PartialOrd for Pick {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
