//! Search quality and speed of `method: bayes` (dbsweep's TPE) against random search and
//! Optuna's `TPESampler`, on three test functions. `cargo bench --bench search`.
//!
//! Functions (all minimised; regret is measured on the noise-free value):
//! - Branin on [-5, 10] x [0, 15], minimum 0.397887;
//! - Hartmann-6 on [0, 1]^6, minimum -3.322368;
//! - `dreambooth`: a surface shaped like DreamBooth's trade-off, over a learning rate
//!   `lr` log-uniform in [1e-7, 1e-3] and `prior_loss_weight` `w` uniform in [0, 2]. With
//!   `u = log10(lr)`, the best `u` rises with the prior weight (more prior preservation
//!   tolerates a higher rate): `c(w) = -5.3 + 0.3 w`, `d = u - c(w)`; too low a rate underfits
//!   (a gentle side, width 0.6 decades), too high overfits and drifts (a steep side, 0.35):
//!   `v = (d / 0.6)^2` for `d < 0`, `(d / 0.35)^2` otherwise. The prior weight trades subject
//!   fidelity (`0.12 w`) against prior preservation (`0.25 e^(-2w)`):
//!   `f = 0.6 (1 - e^(-v/2)) + 0.12 w + 0.25 e^(-2w) + N(0, 0.02^2)`.
//!   Minimum `0.12 w* + 0.06` at `w* = ln(0.5 / 0.12) / 2` and `u = c(w*)` (lr ≈ 8.2e-6).
//!
//! Methods, each for `DBSWEEP_SEARCH_SEEDS` seeds (default 300: enough to tell methods apart
//! after 10 evaluations, when only the points after the random startup phase differ) and 40
//! evaluations:
//! - `bayes`: one slot, each proposal sees every earlier result;
//! - `bayes x4`: four slots: four points run at a time, the oldest finishes first and its
//!   slot gets a proposal made with the other three pending (the constant liar at work);
//! - `bayes uni` (or `bayes joint`): `bayes` with the other `multivariate` setting;
//! - `random`: dbsweep's random search (independent draws with random search's
//!   distributions, never ending);
//! - `optuna`, `optuna x4`: `optuna.samplers.TPESampler(seed=s)`, default settings, through
//!   `benches/optuna_search.py` with the Python named by `DBSWEEP_OPTUNA_PYTHON`, else
//!   `target/optuna-venv/bin/python`, which the bench creates with a pinned optuna from PyPI
//!   (skipped with a note when that cannot be done).
//!
//! Printed: median simple regret (the noise-free value of the best point found, by its
//! observed value, minus the minimum) and its interquartile range after 10, 20 and 40
//! evaluations; one-sided Mann-Whitney U tests across seeds (normal approximation with tie
//! and continuity corrections) and, since every method sees the same noise for a seed (and
//! `bayes` the same startup points as `random`), one-sided Wilcoxon signed-rank tests paired
//! by seed; proposal latency at 100 and 1,000 observations.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use dbsweep::config::Location;
use dbsweep::rng::Rng;
use dbsweep::sweep::bayes::{History, Observation, Point, Settings, Space, Tpe};
use dbsweep::sweep::{Domain, Goal, Located, Parameter};
use serde_json::{Value, json};

const BUDGETS: [usize; 3] = [10, 20, 40];
const SLOTS: usize = 4;

/// A test function and its space.
struct Problem {
    name: &'static str,
    /// Added to every run's seed, so the problems' runs draw unrelated numbers.
    seed_base: u64,
    /// (name, low, high, log) per parameter.
    bounds: Vec<(&'static str, f64, f64, bool)>,
    /// The noise-free value.
    f: fn(&[f64]) -> f64,
    noise: f64,
    minimum: f64,
}

impl Problem {
    fn parameters(&self) -> Vec<Parameter> {
        let at = |v: f64| Located { value: v, at: Location { file: "bench".into(), line: 1, column: 1 } };
        self.bounds
            .iter()
            .map(|&(key, lo, hi, log)| Parameter {
                key: key.into(),
                at: at(0.0).at,
                domain: if log {
                    Domain::LogUniformValues { min: at(lo), max: at(hi) }
                } else {
                    Domain::Uniform { min: at(lo), max: at(hi) }
                },
            })
            .collect()
    }

    /// The observed value of evaluation `eval` of run `seed`: the same noise for every method.
    fn observe(&self, x: &[f64], seed: u64, eval: usize) -> f64 {
        let key = format!("{seed}|noise|{}|{eval}", self.name);
        let mut rng = Rng::new(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
        (self.f)(x) + self.noise * rng.normal()
    }
}

fn branin(x: &[f64]) -> f64 {
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x[1] - b * x[0] * x[0] + c * x[0] - 6.0).powi(2) + 10.0 * (1.0 - t) * x[0].cos() + 10.0
}

fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| ALPHA[i] * (-(0..6).map(|j| A[i][j] * (x[j] - 1e-4 * P[i][j]).powi(2)).sum::<f64>()).exp())
        .sum::<f64>()
}

fn dreambooth(x: &[f64]) -> f64 {
    let (u, w) = (x[0].log10(), x[1]);
    let d = u - (-5.3 + 0.3 * w);
    let v = if d < 0.0 { (d / 0.6).powi(2) } else { (d / 0.35).powi(2) };
    0.6 * (1.0 - (-v / 2.0).exp()) + 0.12 * w + 0.25 * (-2.0 * w).exp()
}

fn problems() -> Vec<Problem> {
    let w_star = (0.5f64 / 0.12).ln() / 2.0;
    vec![
        Problem {
            name: "branin",
            seed_base: 1_000,
            bounds: vec![("x1", -5.0, 10.0, false), ("x2", 0.0, 15.0, false)],
            f: branin,
            noise: 0.0,
            minimum: 0.397_887_357_729_738,
        },
        Problem {
            name: "hartmann6",
            seed_base: 2_000,
            bounds: ["x1", "x2", "x3", "x4", "x5", "x6"].map(|n| (n, 0.0, 1.0, false)).to_vec(),
            f: hartmann6,
            noise: 0.0,
            minimum: -3.322_368_011_391_339,
        },
        Problem {
            name: "dreambooth",
            seed_base: 3_000,
            bounds: vec![("lr", 1e-7, 1e-3, true), ("prior_loss_weight", 0.0, 2.0, false)],
            f: dreambooth,
            noise: 0.02,
            minimum: 0.12 * w_star + 0.06,
        },
    ]
}

/// Something that proposes points: `ask` gives a point id and its coordinates, `tell` reports.
trait Searcher {
    fn ask(&mut self) -> (usize, Vec<f64>);
    fn tell(&mut self, id: usize, x: &[f64], value: f64);
}

/// dbsweep's TPE, keeping the observations and pending points itself.
struct Ours<'a> {
    tpe: Tpe,
    space: &'a Space,
    observations: Vec<Observation>,
    pending: Vec<(usize, Point)>,
    asked: usize,
}

impl Searcher for Ours<'_> {
    fn ask(&mut self) -> (usize, Vec<f64>) {
        let pending: Vec<Point> = self.pending.iter().map(|(_, p)| p.clone()).collect();
        let p = self.tpe.propose(
            self.space,
            self.asked as u64,
            &History { observations: &self.observations, pending: &pending, excluded: &[] },
            Goal::Minimize,
        );
        let point = p.expect("continuous spaces never run out").point;
        let id = self.asked;
        self.asked += 1;
        self.pending.push((id, point.clone()));
        (id, point.0.iter().map(|v| v.as_f64().expect("numbers")).collect())
    }

    fn tell(&mut self, id: usize, _: &[f64], value: f64) {
        let at = self.pending.iter().position(|(i, _)| *i == id).expect("pending");
        let (_, point) = self.pending.remove(at);
        self.observations.push(Observation { point, value });
    }
}

/// Optuna behind `benches/optuna_search.py`.
struct Optuna {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Optuna {
    fn start(python: &Path) -> Option<Optuna> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/optuna_search.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut optuna = Optuna { child, stdin, stdout };
        let version = optuna.call(json!({"op": "version"}))?;
        println!("optuna {} ({})", version["optuna"].as_str().unwrap_or("?"), python.display());
        Some(optuna)
    }

    fn call(&mut self, request: Value) -> Option<Value> {
        writeln!(self.stdin, "{request}").ok()?;
        self.stdin.flush().ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }

    fn study(&mut self, problem: &Problem, seed: u64) {
        let space: Vec<Value> = problem
            .bounds
            .iter()
            .map(|&(n, lo, hi, log)| json!({"name": n, "low": lo, "high": hi, "log": log}))
            .collect();
        self.call(json!({"op": "study", "seed": seed, "space": space})).expect("optuna study");
    }
}

impl Searcher for Optuna {
    fn ask(&mut self) -> (usize, Vec<f64>) {
        let r = self.call(json!({"op": "ask"})).expect("optuna ask");
        let id = r["trial"].as_u64().expect("trial") as usize;
        (id, r["params"].as_array().expect("params").iter().map(|v| v.as_f64().expect("number")).collect())
    }

    fn tell(&mut self, id: usize, _: &[f64], value: f64) {
        self.call(json!({"op": "tell", "trial": id, "value": value})).expect("optuna tell");
    }
}

impl Drop for Optuna {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs 40 evaluations with `slots` points running at a time (the oldest finishes first) and
/// returns the simple regret after each budget.
fn run(searcher: &mut dyn Searcher, problem: &Problem, seed: u64, slots: usize) -> Vec<f64> {
    let total = *BUDGETS.last().expect("budgets");
    let mut running = std::collections::VecDeque::new();
    let (mut best_observed, mut best_clean) = (f64::INFINITY, f64::INFINITY);
    let mut regrets = Vec::new();
    for eval in 0..total {
        while running.len() < slots {
            running.push_back(searcher.ask());
        }
        let (id, x) = running.pop_front().expect("a running point");
        let y = problem.observe(&x, seed, eval);
        searcher.tell(id, &x, y);
        if y < best_observed {
            best_observed = y;
            best_clean = (problem.f)(&x);
        }
        if BUDGETS.contains(&(eval + 1)) {
            regrets.push((best_clean - problem.minimum).max(0.0));
        }
    }
    regrets
}

/// Per method, per seed, the regrets at each budget.
type Results = Vec<(String, Vec<Vec<f64>>)>;

fn ours(problem: &Problem, space: &Space, seeds: u64, settings: &Settings, slots: usize) -> Vec<Vec<f64>> {
    (problem.seed_base..problem.seed_base + seeds)
        .map(|seed| {
            let tpe = Tpe { seed, settings: settings.clone() };
            let mut s = Ours { tpe, space, observations: Vec::new(), pending: Vec::new(), asked: 0 };
            run(&mut s, problem, seed, slots)
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// P-value of the one-sided Mann-Whitney U test that `a` tends to be smaller than `b`.
fn mann_whitney_less(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u: f64 = a
        .iter()
        .map(|x| {
            b.iter()
                .map(|y| {
                    if x < y {
                        1.0
                    } else if x == y {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = all[i..].iter().take_while(|&&v| v == all[i]).count();
        ties += (j * j * j - j) as f64;
        i += j;
    }
    let n = n1 + n2;
    let sd = (n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
    if sd == 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / sd;
    // P(Z >= z).
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// P-value of the one-sided Wilcoxon signed-rank test that `a` tends to be smaller than `b`,
/// seed by seed: the bench's methods share each seed's noise, and `bayes` and `random` also
/// its random startup points, so their regrets are paired. Pairs with equal regrets are
/// dropped (Wilcoxon's rule, scipy's default); normal approximation with tie and continuity
/// corrections.
fn wilcoxon_less(a: &[f64], b: &[f64]) -> f64 {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).filter(|d| *d != 0.0).collect();
    if d.is_empty() {
        return 1.0;
    }
    d.sort_by(|x, y| x.abs().total_cmp(&y.abs()));
    let n = d.len() as f64;
    let (mut w_plus, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < d.len() {
        let j = d[i..].iter().take_while(|v| v.abs() == d[i].abs()).count();
        let rank = (2 * i + j + 1) as f64 / 2.0;
        w_plus += rank * d[i..i + j].iter().filter(|v| **v > 0.0).count() as f64;
        ties += (j * j * j - j) as f64;
        i += j;
    }
    let sd = (n * (n + 1.0) * (2.0 * n + 1.0) / 24.0 - ties / 48.0).sqrt();
    // A small sum of positive ranks means `a` is smaller: P(W+ <= observed).
    let z = (w_plus - n * (n + 1.0) / 4.0 + 0.5) / sd;
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

fn column(results: &[Vec<f64>], b: usize) -> Vec<f64> {
    results.iter().map(|r| r[b]).collect()
}

fn print_table(problem: &Problem, results: &Results) {
    println!("\n{} (regret: median [q25, q75] over {} seeds)", problem.name, results[0].1.len());
    print!("  {:<11}", "method");
    BUDGETS.iter().for_each(|b| print!(" {:>30}", format!("after {b}")));
    println!();
    for (name, runs) in results {
        print!("  {name:<11}");
        for b in 0..BUDGETS.len() {
            let mut xs = column(runs, b);
            xs.sort_by(f64::total_cmp);
            let cell = format!("{:.4} [{:.4}, {:.4}]", quantile(&xs, 0.5), quantile(&xs, 0.25), quantile(&xs, 0.75));
            print!(" {cell:>30}");
        }
        println!();
    }
}

fn print_tests(results: &Results) {
    let get = |name: &str| results.iter().find(|(n, _)| n == name).map(|(_, r)| r);
    let pairs = [
        ("bayes", "random"),
        ("bayes x4", "random"),
        ("bayes", "optuna"),
        ("bayes x4", "optuna x4"),
        ("bayes", "bayes uni"),
        ("bayes", "bayes joint"),
    ];
    for (a, b) in pairs {
        let (Some(ra), Some(rb)) = (get(a), get(b)) else { continue };
        print!("  {:<22}", format!("{a} vs {b}"));
        for (i, budget) in BUDGETS.iter().enumerate() {
            let (xa, xb) = (column(ra, i), column(rb, i));
            let (less, more) = (mann_whitney_less(&xa, &xb), mann_whitney_less(&xb, &xa));
            let (paired_less, paired_more) = (wilcoxon_less(&xa, &xb), wilcoxon_less(&xb, &xa));
            print!("  @{budget:<2} U<{less:<7.1e} U>{more:<7.1e} W<{paired_less:<7.1e} W>{paired_more:<7.1e}");
        }
        println!();
    }
}

/// The Optuna version the bench installs into `target/optuna-venv` when it has none.
const OPTUNA_VERSION: &str = "5.0.0";

/// A Python with optuna: `DBSWEEP_OPTUNA_PYTHON`, else `target/optuna-venv`, created with
/// optuna [`OPTUNA_VERSION`] from PyPI on first use (`None`, with a note, when that fails).
fn python() -> Option<PathBuf> {
    let has_optuna = |python: &Path| {
        let ok = Command::new(python).args(["-c", "import optuna"]).stderr(Stdio::null()).status();
        ok.is_ok_and(|s| s.success())
    };
    if let Some(given) = std::env::var_os("DBSWEEP_OPTUNA_PYTHON").map(PathBuf::from) {
        return has_optuna(&given).then_some(given);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/optuna-venv");
    let python = venv.join("bin/python");
    if has_optuna(&python) {
        return Some(python);
    }
    println!("installing optuna {OPTUNA_VERSION} into {}", venv.display());
    let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success())
        && Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"])
            .arg(format!("optuna=={OPTUNA_VERSION}"))
            .status()
            .is_ok_and(|s| s.success());
    if !made {
        println!("(could not install optuna: python3 with venv and PyPI are needed; Optuna is skipped)");
    }
    (made && has_optuna(&python)).then_some(python)
}

fn latency() {
    println!("\nproposal latency (median of 15, ms; random observations in [0, 1]^d)");
    for d in [2, 6] {
        let params: Vec<Parameter> = (0..d)
            .map(|i| {
                let at = |v: f64| Located { value: v, at: Location { file: "bench".into(), line: 1, column: 1 } };
                Parameter {
                    key: format!("x{i}"),
                    at: at(0.0).at,
                    domain: Domain::Uniform { min: at(0.0), max: at(1.0) },
                }
            })
            .collect();
        let space = Space::new(&params).expect("space");
        for n in [100, 1000] {
            let mut rng = Rng::new(n as u64 + d as u64);
            let observations: Vec<Observation> = (0..n)
                .map(|_| {
                    let x: Vec<f64> = (0..d).map(|_| rng.next_f64()).collect();
                    Observation {
                        value: x.iter().map(|v| (v - 0.3).powi(2)).sum(),
                        point: Point(x.into_iter().map(|v| json!(v)).collect()),
                    }
                })
                .collect();
            for multivariate in [true, false] {
                let tpe = Tpe { seed: 1, settings: Settings { multivariate, ..Settings::default() } };
                let mut ms: Vec<f64> = (0..15)
                    .map(|i| {
                        let start = Instant::now();
                        std::hint::black_box(tpe.propose(
                            &space,
                            n as u64 + i,
                            &History { observations: &observations, ..History::default() },
                            Goal::Minimize,
                        ));
                        start.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                ms.sort_by(f64::total_cmp);
                let mode = if multivariate { "joint" } else { "univariate" };
                println!("  {d}-D, {n:>4} observations, {mode:<10} {:>8.2} ms", ms[ms.len() / 2]);
            }
        }
    }
}

fn main() {
    let seeds: u64 = std::env::var("DBSWEEP_SEARCH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut optuna = match python() {
        Some(p) => Optuna::start(&p),
        None => None,
    };
    if optuna.is_none() {
        println!(
            "optuna: skipped (no Python with optuna: set DBSWEEP_OPTUNA_PYTHON or run `python3 -m venv \
             target/optuna-venv && target/optuna-venv/bin/pip install optuna numpy`)"
        );
    }
    let defaults = Settings::default();
    let univariate = Settings { multivariate: !defaults.multivariate, ..defaults.clone() };
    let random = Settings { n_startup: usize::MAX, ..defaults.clone() };
    let other = if defaults.multivariate { "bayes uni" } else { "bayes joint" };
    println!(
        "bayes: {}",
        if defaults.multivariate { "joint (multivariate) densities" } else { "univariate densities" }
    );
    let mut all = Vec::new();
    for problem in problems() {
        let space = Space::new(&problem.parameters()).expect("space");
        let start = Instant::now();
        let mut results: Results = vec![
            ("bayes".into(), ours(&problem, &space, seeds, &defaults, 1)),
            ("bayes x4".into(), ours(&problem, &space, seeds, &defaults, SLOTS)),
            (other.into(), ours(&problem, &space, seeds, &univariate, 1)),
            ("random".into(), ours(&problem, &space, seeds, &random, 1)),
        ];
        let ours_s = start.elapsed().as_secs_f64();
        if let Some(o) = optuna.as_mut() {
            let start = Instant::now();
            for (name, slots) in [("optuna", 1), ("optuna x4", SLOTS)] {
                let runs = (problem.seed_base..problem.seed_base + seeds)
                    .map(|seed| {
                        o.study(&problem, seed);
                        run(o, &problem, seed, slots)
                    })
                    .collect();
                results.push((name.into(), runs));
            }
            println!("{}: dbsweep {ours_s:.1} s, optuna {:.1} s", problem.name, start.elapsed().as_secs_f64());
        }
        all.push((problem, results));
    }
    for (problem, results) in &all {
        print_table(problem, results);
    }
    println!(
        "\none-sided P-values across seeds that the first has lower (<) or higher (>) regret: U = Mann-Whitney U \
         (unpaired), W = Wilcoxon signed-rank (paired by seed)"
    );
    for (problem, results) in &all {
        println!(" {}", problem.name);
        print_tests(results);
    }
    latency();
}
