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

/// The finite set of values a grid takes from `domain`, or `None` for a continuous one.
pub fn grid_values(domain: &Domain) -> Option<Vec<Value>> {
    match domain {
        Domain::Values { values, .. } => Some(values.iter().map(|v| v.value.clone()).collect()),
        Domain::IntUniform { min, max } => Some((min.value..=max.value).map(Value::from).collect()),
        Domain::QUniform { min, max, q } => {
            let (lo, hi) = ((min.value / q.value).round() as i64, (max.value / q.value).round() as i64);
            Some((lo..=hi).map(|k| float(k as f64 * q.value)).collect())
        }
        Domain::Uniform { .. } | Domain::LogUniformValues { .. } => None,
    }
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
        assert_eq!(grid_values(&Domain::IntUniform { min: at(1), max: at(3) }).unwrap().len(), 3);
        let q = Domain::QUniform { min: at(0.0), max: at(1.0), q: at(0.5) };
        assert_eq!(grid_values(&q).unwrap(), vec![float(0.0), float(0.5), float(1.0)]);
        assert!(grid_values(&Domain::Uniform { min: at(0.0), max: at(1.0) }).is_none());
    }
}
