//! The goal of a sweep metric, and the one ranking rule built on it.

/// Whether the sweep metric is to be minimised or maximised: the one rule by which `best`,
/// `compare`, the dashboard and early termination rank values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Lower is better.
    Minimize,
    /// Higher is better.
    Maximize,
}

impl Goal {
    /// The name used in sweep files.
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Minimize => "minimize",
            Goal::Maximize => "maximize",
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }

    /// Orders values best first (NaN last, as `f64::total_cmp` puts it beyond every number).
    pub fn best_first(self, a: f64, b: f64) -> std::cmp::Ordering {
        match self {
            Goal::Minimize => a.total_cmp(&b),
            Goal::Maximize => b.total_cmp(&a),
        }
    }

    /// The best of `points` by their value (the first of equal ones).
    pub fn best<T: Copy>(self, points: impl IntoIterator<Item = T>, value: impl Fn(T) -> f64) -> Option<T> {
        points.into_iter().reduce(|a, b| if self.better(value(b), value(a)) { b } else { a })
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Goal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minimize" => Ok(Goal::Minimize),
            "maximize" => Ok(Goal::Maximize),
            other => Err(format!("goal `{other}`: expected minimize or maximize")),
        }
    }
}
