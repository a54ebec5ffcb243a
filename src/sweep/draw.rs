//! Random draws from a parameter's domain, with W&B's semantics for each distribution.

use serde_json::Value;

use super::spec::Domain;
use crate::rng::Rng;

/// Draws one value of `domain` (before the config normalises it).
pub fn draw(domain: &Domain, rng: &mut Rng) -> Value {
    match domain {
        Domain::Values { values, probabilities: None } => values[rng.below(values.len() as u64) as usize].value.clone(),
        Domain::Values { values, probabilities: Some(ps) } => {
            let u = rng.next_f64();
            let mut acc = 0.0;
            let i = ps.iter().position(|p| {
                acc += p;
                u < acc
            });
            values[i.unwrap_or(values.len() - 1)].value.clone()
        }
        Domain::Uniform { min, max } => float(min.value + (max.value - min.value) * rng.next_f64()),
        Domain::LogUniformValues { min, max } => {
            let (lo, hi) = (min.value.ln(), max.value.ln());
            float((lo + (hi - lo) * rng.next_f64()).exp().clamp(min.value, max.value))
        }
        Domain::IntUniform { min, max } => {
            let span = (max.value - min.value) as u64 + 1;
            Value::from(min.value + rng.below(span) as i64)
        }
        Domain::QUniform { min, max, q } => {
            let x = min.value + (max.value - min.value) * rng.next_f64();
            float((x / q.value).round() * q.value)
        }
    }
}

/// How many values a grid takes from `domain` (`u64::MAX` when more than that), or `None`
/// for a continuous one; computed without listing them.
pub fn grid_size(domain: &Domain) -> Option<u64> {
    match domain {
        Domain::Values { values, .. } => Some(values.len() as u64),
        Domain::IntUniform { min, max } => {
            Some((max.value as i128 - min.value as i128 + 1).clamp(0, u64::MAX as i128) as u64)
        }
        Domain::QUniform { min, max, q } => {
            let (lo, hi) = q_range(min.value, max.value, q.value);
            Some((hi - lo + 1.0).clamp(0.0, u64::MAX as f64) as u64)
        }
        Domain::Uniform { .. } | Domain::LogUniformValues { .. } => None,
    }
}

/// The first `limit` values (at most) a grid takes from `domain`, in order, or `None` for a
/// continuous one: a capped grid lists only what its points use.
pub fn grid_values(domain: &Domain, limit: u64) -> Option<Vec<Value>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match domain {
        Domain::Values { values, .. } => Some(values.iter().take(limit).map(|v| v.value.clone()).collect()),
        Domain::IntUniform { min, max } => Some((min.value..=max.value).take(limit).map(Value::from).collect()),
        Domain::QUniform { min, max, q } => {
            let (lo, hi) = q_range(min.value, max.value, q.value);
            let count = (hi - lo + 1.0).max(0.0).min(limit as f64) as u64;
            Some((0..count).map(|k| float((lo + k as f64) * q.value)).collect())
        }
        Domain::Uniform { .. } | Domain::LogUniformValues { .. } => None,
    }
}

/// The multiples of `q` a grid takes between `min` and `max`: first and last, as whole numbers
/// in an f64 (exact up to 2^53, and a size beyond that is refused anyway).
fn q_range(min: f64, max: f64, q: f64) -> (f64, f64) {
    ((min / q).round(), (max / q).round())
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;
    use crate::sweep::spec::Located;

    fn at<T>(value: T) -> Located<T> {
        Located { value, at: Location { file: "t".into(), line: 1, column: 1 } }
    }

    #[test]
    fn draws_stay_in_bounds() {
        let mut rng = Rng::new(3);
        let log = Domain::LogUniformValues { min: at(1e-6), max: at(1e-3) };
        let int = Domain::IntUniform { min: at(2), max: at(4) };
        let q = Domain::QUniform { min: at(0.0), max: at(1.0), q: at(0.25) };
        for _ in 0..500 {
            let x = draw(&log, &mut rng).as_f64().unwrap();
            assert!((1e-6..=1e-3).contains(&x), "{x}");
            let i = draw(&int, &mut rng).as_i64().unwrap();
            assert!((2..=4).contains(&i));
            let v = draw(&q, &mut rng).as_f64().unwrap();
            assert_eq!((v / 0.25).fract(), 0.0);
        }
    }

    #[test]
    fn probabilities_weight_the_draws() {
        let mut rng = Rng::new(5);
        let d = Domain::Values {
            values: vec![at(Value::from(0)), at(Value::from(1))],
            probabilities: Some(vec![0.9, 0.1]),
        };
        let ones = (0..2000).filter(|_| draw(&d, &mut rng) == 1).count();
        assert!((120..280).contains(&ones), "{ones}");
    }

    #[test]
    fn grid_values_of_discrete_domains() {
        assert_eq!(grid_values(&Domain::IntUniform { min: at(1), max: at(3) }, u64::MAX).unwrap().len(), 3);
        let q = Domain::QUniform { min: at(0.0), max: at(1.0), q: at(0.5) };
        assert_eq!(grid_values(&q, u64::MAX).unwrap(), vec![float(0.0), float(0.5), float(1.0)]);
        assert_eq!(grid_values(&q, 2).unwrap(), vec![float(0.0), float(0.5)], "only what is asked for");
        assert!(grid_values(&Domain::Uniform { min: at(0.0), max: at(1.0) }, 9).is_none());
    }

    #[test]
    fn grid_sizes_are_computed_without_listing_values() {
        let wide = Domain::IntUniform { min: at(0), max: at(100_000_000_000) };
        assert_eq!(grid_size(&wide), Some(100_000_000_001));
        let full = Domain::IntUniform { min: at(i64::MIN), max: at(i64::MAX) };
        assert_eq!(grid_size(&full), Some(u64::MAX), "saturates instead of overflowing");
        let fine = Domain::QUniform { min: at(0.0), max: at(1.0), q: at(1e-12) };
        assert_eq!(grid_size(&fine), Some(1_000_000_000_001));
        let tiny = Domain::QUniform { min: at(0.0), max: at(1.0), q: at(1e-300) };
        assert_eq!(grid_size(&tiny), Some(u64::MAX));
        assert_eq!(grid_values(&wide, 3).unwrap(), vec![Value::from(0), Value::from(1), Value::from(2)]);
    }
}
