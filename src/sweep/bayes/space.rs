//! The search space of `method: bayes`: one dimension per swept parameter, each with a numeric
//! coordinate for the Parzen estimators, and the conversions between a point's values and
//! those coordinates.
//!
//! Coordinates: a category's index in its list; a float itself (uniform) or its natural log
//! (log-uniform: the estimators work in log space); for integers and `q_uniform`, the grid
//! index `k` (the value is `k`, or `k * q`). Values are normalised exactly as random search
//! draws them ([`draw`]): integers are JSON integers, floats JSON floats, `q_uniform` values
//! `round(x / q) * q`, log-uniform values clamped to their bounds. Two points are the same
//! point when their [`Key`]s are equal: category index, grid index, or the float's bits.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::rng::Rng;
use crate::sweep::draw::draw;
use crate::sweep::spec::{Domain, Parameter};

/// A point of the space: one value per parameter, in parameter order.
#[derive(Clone, Debug, PartialEq)]
pub struct Point(pub Vec<Value>);

/// The identity of a point after normalisation (see the module doc).
pub type Key = Vec<u64>;

/// Why a parameter list cannot be searched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// There is nothing to search.
    #[error("bayes search needs at least one swept parameter")]
    NoParameters,
    /// A parameter's domain cannot be searched as declared.
    #[error("parameter `{key}`: {problem}")]
    Unsupported {
        /// The parameter's key.
        key: String,
        /// What is wrong, lowercase.
        problem: String,
    },
}

/// The validated search space of a bayes sweep, in parameter order.
#[derive(Clone, Debug)]
pub struct Space {
    dims: Vec<Dim>,
}

/// One parameter.
#[derive(Clone, Debug)]
pub(super) struct Dim {
    /// Its key, for errors.
    pub key: String,
    /// Its declared domain (random draws use it).
    domain: Domain,
    /// Its coordinate.
    pub kind: Kind,
}

/// A dimension's coordinate.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// The index of a value in a list without repeats.
    Categorical {
        /// The distinct values, in declaration order.
        values: Vec<Value>,
        /// Prior weight of each value (sum 1): W&B's `probabilities`, or uniform.
        prior: Vec<f64>,
    },
    /// A float on [lo, hi]: the value, or its natural log.
    Float {
        /// Lower bound (coordinate).
        lo: f64,
        /// Upper bound (coordinate).
        hi: f64,
        /// Whether the coordinate is `ln(value)`.
        log: bool,
        /// The declared bounds, which values are clamped to.
        min: f64,
        /// See `min`.
        max: f64,
    },
    /// A whole grid index in [lo, hi]; the value is `k` (`q: None`) or `k * q`.
    Grid {
        /// Lowest index.
        lo: f64,
        /// Highest index.
        hi: f64,
        /// The quantum of `q_uniform`, `None` for integers.
        q: Option<f64>,
    },
}

/// Largest grid index kept exact in an f64.
const MAX_INDEX: f64 = 9_007_199_254_740_992.0;

impl Space {
    /// Validates `parameters` (every domain kind of the sweep syntax is supported; a domain
    /// that is empty, reversed, non-finite or unsearchable is refused, naming its key).
    pub fn new(parameters: &[Parameter]) -> Result<Space, SpaceError> {
        if parameters.is_empty() {
            return Err(SpaceError::NoParameters);
        }
        let dims = parameters.iter().map(Dim::new).collect::<Result<Vec<_>, _>>()?;
        Ok(Space { dims })
    }

    /// The parameters' keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.dims.iter().map(|d| d.key.as_str())
    }

    /// How many parameters.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether there are no parameters (never, for a built space).
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// How many distinct points the space has (saturating), or `None` if a float parameter
    /// makes it infinite.
    pub fn size(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |acc, d| d.count().map(|n| acc.saturating_mul(n)))
    }

    pub(super) fn dims(&self) -> &[Dim] {
        &self.dims
    }

    /// A random point with random search's distribution ([`draw`]).
    pub(super) fn draw(&self, rng: &mut Rng) -> Point {
        Point(self.dims.iter().map(|d| draw(&d.domain, rng)).collect())
    }

    /// The point at `coordinates` (one per dimension), normalised.
    pub(super) fn point(&self, coordinates: &[f64]) -> Point {
        Point(self.dims.iter().zip(coordinates).map(|(d, &x)| d.value(x)).collect())
    }

    /// The coordinates of `point`, or `None` if it is not a point of this space (another
    /// length, a value outside a range or list, off a grid).
    pub(super) fn coordinates(&self, point: &Point) -> Option<Vec<f64>> {
        if point.0.len() != self.dims.len() {
            return None;
        }
        self.dims.iter().zip(&point.0).map(|(d, v)| d.coordinate(v)).collect()
    }

    /// The identity of `point`, or `None` if it is not a point of this space.
    pub(super) fn key(&self, point: &Point) -> Option<Key> {
        if point.0.len() != self.dims.len() {
            return None;
        }
        self.dims.iter().zip(&point.0).map(|(d, v)| d.key(v)).collect()
    }

    /// Every point whose values all have a prior weight > 0, in grid order, if the space is
    /// finite with at most `limit` of them; `None` otherwise.
    pub(super) fn enumerate(&self, limit: u64) -> Option<Vec<Vec<f64>>> {
        let axes: Vec<Vec<f64>> = self.dims.iter().map(Dim::axis).collect::<Option<_>>()?;
        let total = axes.iter().try_fold(1u64, |acc, a| acc.checked_mul(a.len() as u64))?;
        if total > limit {
            return None;
        }
        let mut out = vec![Vec::with_capacity(axes.len())];
        for axis in &axes {
            out = out.into_iter().flat_map(|p| axis.iter().map(move |&x| [p.as_slice(), &[x]].concat())).collect();
        }
        Some(out)
    }

    /// The keys of `points` that belong to this space.
    pub(super) fn keys_of<'a>(&self, points: impl IntoIterator<Item = &'a Point>) -> BTreeSet<Key> {
        points.into_iter().filter_map(|p| self.key(p)).collect()
    }
}

impl Dim {
    fn new(p: &Parameter) -> Result<Dim, SpaceError> {
        let fail = |problem: &str| SpaceError::Unsupported { key: p.key.clone(), problem: problem.to_string() };
        let finite =
            |x: f64, what: &str| if x.is_finite() { Ok(x) } else { Err(fail(&format!("{what} is not finite"))) };
        let kind = match &p.domain {
            Domain::Values { values, probabilities } => {
                if values.is_empty() {
                    return Err(fail("an empty list of values"));
                }
                let weights = match probabilities {
                    None => vec![1.0; values.len()],
                    Some(ps) if ps.len() != values.len() => {
                        return Err(fail("needs one probability per value"));
                    }
                    Some(ps) if ps.iter().any(|p| !p.is_finite() || *p < 0.0) || ps.iter().sum::<f64>() <= 0.0 => {
                        return Err(fail("probabilities must be >= 0 with a positive sum"));
                    }
                    Some(ps) => ps.clone(),
                };
                // A repeated value is one category; its probabilities add up.
                let mut distinct: Vec<Value> = Vec::new();
                let mut prior: Vec<f64> = Vec::new();
                for (v, w) in values.iter().zip(weights) {
                    match distinct.iter().position(|d| same_value(d, &v.value)) {
                        Some(i) => prior[i] += w,
                        None => {
                            distinct.push(v.value.clone());
                            prior.push(w);
                        }
                    }
                }
                let sum: f64 = prior.iter().sum();
                prior.iter_mut().for_each(|w| *w /= sum);
                Kind::Categorical { values: distinct, prior }
            }
            Domain::Uniform { min, max } => {
                let (min, max) = (finite(min.value, "min")?, finite(max.value, "max")?);
                if min > max {
                    return Err(fail("min > max"));
                }
                Kind::Float { lo: min, hi: max, log: false, min, max }
            }
            Domain::LogUniformValues { min, max } => {
                let (min, max) = (finite(min.value, "min")?, finite(max.value, "max")?);
                if min <= 0.0 {
                    return Err(fail("log_uniform_values needs min > 0"));
                }
                if min > max {
                    return Err(fail("min > max"));
                }
                Kind::Float { lo: min.ln(), hi: max.ln(), log: true, min, max }
            }
            Domain::IntUniform { min, max } => {
                if min.value > max.value {
                    return Err(fail("min > max"));
                }
                let (lo, hi) = (min.value as f64, max.value as f64);
                if lo.abs() > MAX_INDEX || hi.abs() > MAX_INDEX {
                    return Err(fail("bounds beyond ±2^53"));
                }
                Kind::Grid { lo, hi, q: None }
            }
            Domain::QUniform { min, max, q } => {
                let (min, max, q) = (finite(min.value, "min")?, finite(max.value, "max")?, finite(q.value, "q")?);
                if q <= 0.0 {
                    return Err(fail("q must be > 0"));
                }
                if min > max {
                    return Err(fail("min > max"));
                }
                // The multiples of q random search rounds to: round(min/q)..=round(max/q).
                let (lo, hi) = ((min / q).round(), (max / q).round());
                if lo.abs() > MAX_INDEX || hi.abs() > MAX_INDEX {
                    return Err(fail("more than 2^53 multiples of q"));
                }
                Kind::Grid { lo, hi, q: Some(q) }
            }
        };
        Ok(Dim { key: p.key.clone(), domain: p.domain.clone(), kind })
    }

    /// The one coordinate of a dimension with a single value.
    pub fn fixed(&self) -> Option<f64> {
        match &self.kind {
            Kind::Categorical { values, .. } => (values.len() == 1).then_some(0.0),
            Kind::Float { lo, hi, .. } | Kind::Grid { lo, hi, .. } => (lo == hi).then_some(*lo),
        }
    }

    fn count(&self) -> Option<u64> {
        match &self.kind {
            Kind::Categorical { prior, .. } => Some(prior.iter().filter(|&&w| w > 0.0).count() as u64),
            Kind::Float { lo, hi, .. } => (lo == hi).then_some(1),
            Kind::Grid { lo, hi, .. } => Some((hi - lo + 1.0) as u64),
        }
    }

    /// Every coordinate of a finite dimension (categories with prior weight > 0).
    fn axis(&self) -> Option<Vec<f64>> {
        match &self.kind {
            Kind::Categorical { prior, .. } => {
                Some(prior.iter().enumerate().filter(|(_, w)| **w > 0.0).map(|(i, _)| i as f64).collect())
            }
            Kind::Float { lo, hi, .. } => (lo == hi).then(|| vec![*lo]),
            Kind::Grid { lo, hi, .. } => {
                let n = (hi - lo + 1.0) as u64;
                (n <= 1 << 32).then(|| (0..n).map(|i| lo + i as f64).collect())
            }
        }
    }

    /// The normalised value at coordinate `x` (rounded and clamped onto the dimension).
    fn value(&self, x: f64) -> Value {
        match &self.kind {
            Kind::Categorical { values, .. } => values[(x.round().max(0.0) as usize).min(values.len() - 1)].clone(),
            Kind::Float { log: false, min, max, .. } => float(x.clamp(*min, *max)),
            Kind::Float { log: true, min, max, .. } => float(x.exp().clamp(*min, *max)),
            Kind::Grid { lo, hi, q: None } => Value::from(x.round().clamp(*lo, *hi) as i64),
            Kind::Grid { lo, hi, q: Some(q) } => float(x.round().clamp(*lo, *hi) * q),
        }
    }

    /// The coordinate of value `v`, if `v` is a value of this dimension.
    fn coordinate(&self, v: &Value) -> Option<f64> {
        match &self.kind {
            Kind::Categorical { values, .. } => values.iter().position(|c| same_value(c, v)).map(|i| i as f64),
            Kind::Float { log, min, max, .. } => {
                let x = v.as_f64()?;
                (*min <= x && x <= *max).then(|| if *log { x.ln() } else { x })
            }
            Kind::Grid { lo, hi, q } => {
                let x = v.as_f64()?;
                let k = (x / q.unwrap_or(1.0)).round();
                let back = k * q.unwrap_or(1.0);
                let on_grid = (back - x).abs() <= 1e-9 * x.abs().max(q.unwrap_or(1.0));
                (on_grid && *lo <= k && k <= *hi).then_some(k)
            }
        }
    }

    /// The identity of value `v` (see the module doc), if it is a value of this dimension.
    fn key(&self, v: &Value) -> Option<u64> {
        let x = self.coordinate(v)?;
        Some(match &self.kind {
            Kind::Categorical { .. } | Kind::Grid { .. } => x as i64 as u64,
            // The value itself, not its log; + 0.0 makes -0.0 and 0.0 one point.
            Kind::Float { .. } => (v.as_f64()? + 0.0).to_bits(),
        })
    }
}

/// Whether two listed values are the same category: equal JSON, or equal numbers (so `1` and
/// `1.0` are one value).
fn same_value(a: &Value, b: &Value) -> bool {
    a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y && a.is_number() && b.is_number())
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}
