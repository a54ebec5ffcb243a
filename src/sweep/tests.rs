//! Sweep-file errors, expansion order, random search, and properties of grid expansion.

use std::collections::HashSet;
use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::{ConfigError, Layers, yaml};

fn spec(text: &str) -> Result<SweepSpec, ConfigError> {
    parse(yaml::parse(Path::new("s.yaml"), text)?)
}

fn plan(text: &str) -> Result<Plan, ConfigError> {
    Plan::build(spec(text)?, Vec::new(), &[])
}

fn errors(result: Result<impl std::fmt::Debug, ConfigError>) -> Vec<String> {
    result.unwrap_err().problems().iter().map(|p| p.to_string()).collect()
}

fn values(plan: &Plan) -> Vec<Vec<Value>> {
    plan.runs.iter().map(|r| plan.values(r).cloned().collect()).collect()
}

#[test]
fn grid_is_cartesian_in_file_order_last_fastest() {
    let p =
        plan("parameters:\n  train.learning_rate: {values: [1.0e-4, 2.0e-4]}\n  train.epochs: {values: [1, 2, 3]}\n")
            .unwrap();
    assert_eq!(p.keys, ["train.learning_rate", "train.epochs"]);
    let got = values(&p);
    let expected: Vec<Vec<Value>> = [(1e-4, 1), (1e-4, 2), (1e-4, 3), (2e-4, 1), (2e-4, 2), (2e-4, 3)]
        .iter()
        .map(|(a, b)| vec![json!(a), json!(b)])
        .collect();
    assert_eq!(got, expected);
    assert_eq!(p.runs.iter().map(|r| r.position).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
}

#[test]
fn run_cap_keeps_the_first_points() {
    let p = plan("run_cap: 2\nparameters:\n  train.epochs: {values: [1, 2, 3]}\n").unwrap();
    assert_eq!(values(&p), vec![vec![json!(1)], vec![json!(2)]]);
}

#[test]
fn nested_parameters_and_constants() {
    let p =
        plan("parameters:\n  train:\n    parameters:\n      epochs: {values: [1, 2]}\n  seed: {value: 3}\n").unwrap();
    assert_eq!(p.keys, ["train.epochs", "seed"]);
    assert_eq!(values(&p), vec![vec![json!(1), json!(3)], vec![json!(2), json!(3)]]);
}

#[test]
fn int_uniform_and_q_uniform_enumerate_in_a_grid() {
    let p = plan("parameters:\n  train.epochs: {min: 1, max: 3}\n  train.offset_noise: {distribution: q_uniform, min: 0, max: 0.1, q: 0.05}\n").unwrap();
    assert_eq!(p.runs.len(), 9);
    assert_eq!(values(&p)[1], vec![json!(1), json!(0.05)]);
}

#[test]
fn values_are_normalised_by_the_key_type() {
    let p = plan("parameters:\n  train.learning_rate: {values: [1, 2]}\n").unwrap();
    assert_eq!(values(&p), vec![vec![json!(1.0)], vec![json!(2.0)]]);
}

#[test]
fn random_search_is_seeded_bounded_and_capped() {
    let text = "method: random\nseed: 11\nrun_cap: 20\nparameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n  train.epochs: {distribution: int_uniform, min: 1, max: 4}\n  train.lr_scheduler: {values: [constant, cosine]}\n";
    let a = plan(text).unwrap();
    let b = plan(text).unwrap();
    assert_eq!(a.runs, b.runs);
    assert_eq!(a.runs.len(), 20);
    for v in values(&a) {
        let lr = v[0].as_f64().unwrap();
        assert!((1e-6..=1e-3).contains(&lr), "{lr}");
        assert!((1..=4).contains(&v[1].as_i64().unwrap()));
        assert!(v[2] == json!("constant") || v[2] == json!("cosine"));
    }
    let c = plan(&text.replace("seed: 11", "seed: 12")).unwrap();
    assert_ne!(a.runs, c.runs);
}

#[test]
fn random_search_over_a_small_space_stops_when_exhausted() {
    let p = plan("method: random\nrun_cap: 10\nparameters:\n  train.epochs: {values: [1, 2, 3]}\n").unwrap();
    assert_eq!(p.runs.len(), 3);
    let distinct: HashSet<_> = p.runs.iter().map(|r| r.config_hash).collect();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn sweep_file_errors_name_position_key_and_expectation() {
    let cases: [(&str, &str); 14] = [
        (
            "paramters: {}\nparameters: {seed: {value: 1}}\n",
            "s.yaml:1:1: key `paramters`: unknown key (did you mean `parameters`?)",
        ),
        (
            "method: bayesian\nparameters: {seed: {value: 1}}\n",
            "s.yaml:1:9: key `method`: expected grid, random or bayes, found \"bayesian\"",
        ),
        (
            "method: random\nparameters: {seed: {value: 1}}\n",
            "s.yaml:1:1: missing: expected `run_cap:` (random search needs a number of runs)",
        ),
        (
            "run_cap: 0\nparameters: {seed: {value: 1}}\n",
            "s.yaml:1:10: key `run_cap`: expected an integer >= 1, found 0",
        ),
        ("name: x\n", "s.yaml:1:1: missing: expected `parameters:` (the swept settings)"),
        (
            "parameters:\n  seed: {values: []}\n",
            "s.yaml:2:18: key `parameters.seed.values`: expected a non-empty list of values, found []",
        ),
        (
            "parameters:\n  seed: {min: 3, max: 1}\n",
            "s.yaml:2:15: key `parameters.seed.min`: expected min <= max (1), found 3",
        ),
        (
            "parameters:\n  x: {distribution: uniform, min: 0, max: 1, q: 2, foo: 1}\n",
            "s.yaml:2:52: key `parameters.x.foo`: unknown key (see the sweep-file reference in README.md)",
        ),
        (
            "parameters:\n  x: {distribution: unifrom, min: 0, max: 1}\n",
            "s.yaml:2:21: key `parameters.x.distribution`: expected one of categorical, uniform, log_uniform_values, int_uniform, q_uniform (did you mean uniform?), found \"unifrom\"",
        ),
        (
            "parameters:\n  x: {distribution: log_uniform_values, min: 0, max: 1}\n",
            "s.yaml:2:46: key `parameters.x.min`: expected a number > 0 (log scale), found 0",
        ),
        (
            "parameters:\n  x: {distribution: q_uniform, min: 0, max: 1, q: 0}\n",
            "s.yaml:2:51: key `parameters.x.q`: expected a number > 0, found 0",
        ),
        (
            "parameters:\n  1x: {value: 1}\n",
            "s.yaml:2:3: key `parameters.1x`: expected a parameter name matching [A-Za-z_][A-Za-z0-9_.-]*, found \"1x\"",
        ),
        (
            "metric: {name: loss, goal: lowest}\nparameters: {seed: {value: 1}}\n",
            "s.yaml:1:28: key `metric.goal`: expected minimize or maximize, found \"lowest\"",
        ),
        (
            "parameters:\n  x: {values: [1, 2], probabilities: [0.5]}\n",
            "s.yaml:2:38: key `parameters.x.probabilities`: expected 2 numbers >= 0 that sum to 1, one per value, found [0.5]",
        ),
    ];
    let wrong: Vec<_> = cases.iter().map(|(t, e)| (errors(spec(t)), e)).filter(|(got, e)| *got != [**e]).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn bayes_needs_a_metric_with_a_goal_and_a_run_cap() {
    let lr = "parameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n";
    let cases: [(&str, &str); 7] = [
        (
            "method: bayes\nrun_cap: 4\n",
            "s.yaml:1:1: missing: expected `metric:` with `name` and `goal` (bayes search learns from it)",
        ),
        (
            "method: bayes\nmetric: {name: val/loss, goal: minimize}\n",
            "s.yaml:1:1: missing: expected `run_cap:` (bayes search needs a number of runs)",
        ),
        (
            "method: bayes\nrun_cap: 4\nmetric: {name: val/loss}\n",
            "s.yaml:3:1: key `metric`: missing: expected `goal:` (minimize or maximize: bayes search needs the direction)",
        ),
        (
            "method: bayes\nrun_cap: 4\nmetric: {name: val/loss, goal: minimize, use: mean}\n",
            "s.yaml:3:47: key `metric.use`: expected best or last (which of a run's values bayes search learns from), found \"mean\"",
        ),
        (
            "method: bayes\nrun_cap: 4\nmetric: {name: val/loss, goal: minimize, target: low}\n",
            "s.yaml:3:50: key `metric.target`: expected a number (stop proposing once a run reaches it), found \"low\"",
        ),
        (
            "method: random\nrun_cap: 4\nmetric: {name: val/loss, goal: minimize, target: 0.1}\n",
            "s.yaml:3:50: key `metric.target`: expected no such key with grid or random search (it applies to `method: bayes`), found 0.1",
        ),
        (
            "metric: {name: val/loss, use: last}\n",
            "s.yaml:1:31: key `metric.use`: expected no such key with grid or random search (it applies to `method: bayes`), found \"last\"",
        ),
    ];
    let wrong: Vec<_> =
        cases.iter().map(|(t, e)| (errors(spec(&format!("{t}{lr}"))), e)).filter(|(got, e)| *got != [**e]).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    let ok = spec(&format!(
        "method: bayes\nrun_cap: 4\nmetric: {{name: val/loss, goal: maximize, target: 0.5, use: last}}\n{lr}"
    ))
    .unwrap();
    let metric = ok.metric.unwrap();
    assert_eq!((metric.use_, metric.target, metric.goal), (MetricUse::Last, Some(0.5), Goal::Maximize));
}

#[test]
fn bayes_refuses_a_parameter_it_cannot_model_naming_it() {
    let text = "method: bayes\nrun_cap: 4\nmetric: {name: val/loss, goal: minimize}\nparameters:\n  train.learning_rate: {values: [1.0e-4]}\n  train.max_train_steps: {min: 1, max: 100000000000000000}\n";
    assert_eq!(
        errors(plan(text)),
        ["s.yaml:6:3: key `train.max_train_steps`: bayes search cannot model this parameter: bounds beyond ±2^53"]
    );
    // The same parameter is fine for random search, which only draws.
    plan(&text.replace("method: bayes", "method: random")).unwrap();
}

#[test]
fn a_bayes_plan_holds_its_random_phase_and_its_id_follows_target_and_use() {
    let text = "name: b\nmethod: bayes\nseed: 3\nrun_cap: 9\nmetric: {name: val/loss, goal: minimize}\nparameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n  train.lr_scheduler: {values: [constant, cosine]}\n";
    let p = plan(text).unwrap();
    assert_eq!(p.runs.len(), bayes::N_STARTUP, "only the random phase is known before results");
    assert_eq!(values(&p), values(&plan(text).unwrap()), "deterministic");
    assert_eq!(p.runs.iter().map(|r| r.position).collect::<Vec<_>>(), (0..bayes::N_STARTUP).collect::<Vec<_>>());
    for v in values(&p) {
        assert!(
            (1e-6..=1e-3).contains(&v[0].as_f64().unwrap()) && ["constant", "cosine"].contains(&v[1].as_str().unwrap())
        );
    }
    let few = plan(&text.replace("run_cap: 9", "run_cap: 2")).unwrap();
    assert_eq!(values(&few), values(&p)[..2], "a smaller cap keeps the first points");
    let other_seed = plan(&text.replace("seed: 3", "seed: 4")).unwrap();
    assert_ne!(values(&other_seed), values(&p));
    let with_target = text.replace("goal: minimize}", "goal: minimize, target: 0.1}");
    assert_ne!(plan(&with_target).unwrap().sweep_id, p.sweep_id);
    let with_use = text.replace("goal: minimize}", "goal: minimize, use: last}");
    assert_ne!(plan(&with_use).unwrap().sweep_id, p.sweep_id);
}

#[test]
fn plan_errors_point_at_the_sweep_file() {
    let cases: [(&str, &str); 6] = [
        (
            "parameters:\n  train.learnin_rate: {values: [1]}\n",
            "s.yaml:2:3: key `train.learnin_rate`: unknown key (did you mean `train.learning_rate`?)",
        ),
        (
            "parameters:\n  train.learning_rate: {values: [1.0e-4, -1]}\n",
            "s.yaml:2:42: key `train.learning_rate`: expected a number > 0, found -1",
        ),
        (
            "parameters:\n  train.epochs: {values: [1, two]}\n",
            "s.yaml:2:30: key `train.epochs`: expected an integer >= 1, found \"two\"",
        ),
        (
            "parameters:\n  train.epochs: {values: [1, 1]}\n",
            "s.yaml:2:30: key `train.epochs`: expected each value once, found 1 again",
        ),
        (
            "parameters:\n  train.learning_rate: {min: 1.0e-5, max: 1.0e-3}\n",
            "s.yaml:2:3: key `train.learning_rate`: a grid needs a finite set of values: use `values:`, int_uniform or q_uniform, or `method: random`",
        ),
        (
            "parameters:\n  train.epochs: {values: [1]}\n  train:\n    parameters:\n      epochs: {values: [2]}\n",
            "s.yaml:5:7: key `train.epochs`: swept twice; keep one declaration",
        ),
    ];
    let wrong: Vec<_> = cases.iter().map(|(t, e)| (errors(plan(t)), e)).filter(|(got, e)| *got != [**e]).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_swept_key_cannot_also_be_forced_by_flag_or_env() {
    let s = spec("parameters:\n  train.epochs: {values: [1, 2]}\n").unwrap();
    let err = Plan::build(s.clone(), Vec::new(), &["train.epochs=3".into()]).unwrap_err().to_string();
    assert_eq!(
        err,
        "s.yaml:2:3: key `train.epochs`: swept here but also set by flag --set train.epochs=3; remove one of them"
    );
    let env = vec![("DBSWEEP_TRAIN__EPOCHS".to_string(), "3".to_string())];
    let err = Plan::build(s, env, &[]).unwrap_err().to_string();
    assert!(err.contains("also set by environment variable DBSWEEP_TRAIN__EPOCHS"), "{err}");
}

#[test]
fn extends_is_resolved_relative_to_the_sweep_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("base")).unwrap();
    std::fs::write(dir.path().join("base/exp.yaml"), "train:\n  batch_size: 3\n").unwrap();
    std::fs::write(dir.path().join("s.yaml"), "extends: base/exp.yaml\nparameters:\n  seed: {values: [1]}\n").unwrap();
    let p = Plan::build(load(&dir.path().join("s.yaml")).unwrap(), Vec::new(), &[]).unwrap();
    assert_eq!(p.base.config.train.batch_size, 3);
    std::fs::write(dir.path().join("s.yaml"), "extends: nope.yaml\nparameters:\n  seed: {values: [1]}\n").unwrap();
    let err = Plan::build(load(&dir.path().join("s.yaml")).unwrap(), Vec::new(), &[]).unwrap_err().to_string();
    assert!(err.contains("s.yaml:1:10: key `extends`: expected a readable experiment file"), "{err}");
}

#[test]
fn sweep_id_is_stable_and_follows_settings() {
    let text = "name: demo\nparameters:\n  seed: {values: [1, 2]}\n";
    let a = plan(text).unwrap();
    assert_eq!(a.sweep_id, plan(text).unwrap().sweep_id);
    assert!(a.sweep_id.starts_with("demo-"));
    let b = Plan::build(spec(text).unwrap(), Vec::new(), &["train.batch_size=2".into()]).unwrap();
    assert_ne!(a.sweep_id, b.sweep_id);
}

#[test]
fn too_large_a_grid_is_refused_unless_capped() {
    let many: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let list = many.join(", ");
    let keys = ["seed", "train.epochs", "train.batch_size", "validation.steps"];
    let params: String = keys.iter().map(|k| format!("  {k}: {{values: [{list}]}}\n")).collect();
    let err = errors(plan(&format!("parameters:\n{params}")));
    assert!(err[0].contains("the grid has 100000000 points"), "{err:?}");
    assert_eq!(plan(&format!("run_cap: 5\nparameters:\n{params}")).unwrap().runs.len(), 5);
}

/// Keys whose values can be any integer from 1 to 99 (floats accept integers too).
const KEYS: [&str; 6] =
    ["seed", "train.epochs", "train.batch_size", "train.learning_rate", "train.prior_loss_weight", "validation.steps"];

fn grid_text(sets: &[Vec<u32>]) -> String {
    let mut text = String::from("parameters:\n");
    for (key, values) in KEYS.iter().zip(sets) {
        let list: Vec<String> = values.iter().map(u32::to_string).collect();
        text.push_str(&format!("  {key}: {{values: [{}]}}\n", list.join(", ")));
    }
    text
}

fn value_sets() -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop::collection::vec(
        prop::collection::btree_set(1u32..100, 1..5).prop_map(|s| s.into_iter().collect()),
        1..=KEYS.len(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn grid_has_every_combination_exactly_once(sets in value_sets()) {
        let p = plan(&grid_text(&sets)).unwrap();
        let expected: usize = sets.iter().map(Vec::len).product();
        prop_assert_eq!(p.runs.len(), expected);
        let combos: HashSet<Vec<String>> = p.runs.iter().map(|r| p.values(r).map(|v| v.to_string()).collect()).collect();
        prop_assert_eq!(combos.len(), expected);
        let ids: HashSet<&str> = p.runs.iter().map(|r| r.run_id.as_str()).collect();
        prop_assert_eq!(ids.len(), expected);
        let hashes: HashSet<ConfigHash> = p.runs.iter().map(|r| r.config_hash).collect();
        prop_assert_eq!(hashes.len(), expected);
    }

    #[test]
    fn expansion_is_deterministic(sets in value_sets()) {
        let a = plan(&grid_text(&sets)).unwrap();
        let b = plan(&grid_text(&sets)).unwrap();
        prop_assert_eq!(&a.runs, &b.runs);
        prop_assert_eq!(a.sweep_id, b.sweep_id);
    }

    #[test]
    fn config_hash_is_the_identity_of_the_fully_resolved_config(sets in value_sets()) {
        let p = plan(&grid_text(&sets)).unwrap();
        for run in p.runs.iter().take(6) {
            let flags: Vec<String> = p.keys.iter().zip(p.values(run)).map(|(k, v)| format!("{k}={v}")).collect();
            let resolved = Layers::new().flags(&flags).resolve().unwrap();
            prop_assert_eq!(resolved.canonical_text(), p.config_text(run));
            prop_assert_eq!(Fingerprints::default().hash(&resolved.json).unwrap(), run.config_hash);
            prop_assert_eq!(&run.run_id, &run_id(run.config_hash, MIN_HEX));
        }
    }
}

#[test]
fn early_terminate_is_parsed_and_checked() {
    let ok = spec(
        "metric: {name: val/loss}\nearly_terminate: {type: hyperband, min_iter: 3}\nparameters: {seed: {value: 1}}\n",
    )
    .unwrap();
    assert_eq!(ok.early_terminate, Some(EarlyTerminate { min_iter: 3, eta: 3 }));
    let errs = errors(spec("early_terminate: {type: hyperband, min_iter: 3}\nparameters: {seed: {value: 1}}\n"));
    assert_eq!(errs, ["s.yaml:1:1: missing: expected `metric:` (early termination ranks runs by it)"]);
    let errs =
        errors(spec("metric: {name: m}\nearly_terminate: {type: asha, min_iter: 3}\nparameters: {seed: {value: 1}}\n"));
    assert_eq!(errs, ["s.yaml:2:25: key `early_terminate.type`: expected hyperband, found \"asha\""]);
    let errs = errors(spec(
        "metric: {name: m}\nearly_terminate: {type: hyperband, min_iter: 0, eta: 1}\nparameters: {seed: {value: 1}}\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
}

/// Settings added after runs were registered leave old identities alone while at their
/// defaults, also when a sweep varies them and a point lands on the default.
#[test]
fn settings_added_later_keep_old_run_ids() {
    let defaults = Layers::new().resolve().unwrap();
    let mut old = defaults.json.clone();
    for late in crate::sweep::ADDED_LATER {
        let path: Vec<&str> = late.split('.').collect();
        let (parent, last) = path.split_at(path.len() - 1);
        let parent = crate::config::leaf_mut(&mut old, parent).unwrap();
        assert!(parent.as_object_mut().unwrap().remove(last[0]).is_some(), "{late} is a setting");
    }
    let mut fp = Fingerprints::default();
    let before = fp.hash(&old).unwrap();
    assert_eq!(fp.hash(&defaults.json).unwrap(), before, "an older dbsweep's run keeps its id");
    let set = Layers::new().flags(&["lora.rank=8".into()]).resolve().unwrap();
    assert_ne!(fp.hash(&set.json).unwrap(), before, "a new setting in use is part of the identity");

    let p = plan("parameters:\n  lora.rank: {values: [4, 8]}\n").unwrap();
    assert_eq!(p.runs[0].config_hash, before, "rank 4 is the default: the same run as one without lora settings");
    assert_eq!(p.runs[1].config_hash, fp.hash(&set.json).unwrap());
}

#[test]
fn the_stored_searcher_makes_the_planned_random_phase_and_reads_runs_back() {
    let text = "method: bayes\nrun_cap: 6\nmetric: {name: val/loss, goal: minimize, target: 0.25}\nparameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n  train.epochs: {values: [1, 2]}\n  data.instance_dir: {values: [examples/instance]}\n";
    let p = plan(text).unwrap();
    // As `dbsweep resume` builds it: the stored file and base configuration.
    let searcher = bayes::Searcher::from_stored(&p.spec, p.base.json.clone()).unwrap();
    assert_eq!(searcher.keys(), p.keys);
    let mut pending = Vec::new();
    for planned in &p.runs {
        let history = bayes::History { pending: &pending, ..Default::default() };
        let proposal = searcher.propose(planned.position as u64, &history).unwrap();
        assert_eq!(proposal.how, bayes::How::Random);
        let config = searcher.config(&proposal.point).unwrap();
        assert_eq!(config.to_string(), p.config_text(planned), "the configuration the plan shows");
        assert_eq!(Fingerprints::default().hash(&config).unwrap(), planned.config_hash, "the run the plan shows");
        assert_eq!(searcher.point_of(&config), proposal.point, "a run's configuration gives its point back");
        pending.push(proposal.point);
    }
    let folder = &searcher.point_of(&searcher.config(&pending[0]).unwrap()).0[2];
    assert!(std::path::Path::new(folder.as_str().unwrap()).is_absolute(), "listed paths are absolute: {folder}");
    assert_eq!(searcher.value(&[0.5, 0.2, 0.3]), Some(0.2), "best by default");
    assert_eq!(searcher.value(&[]), None);
    assert!(searcher.reaches_target(0.25) && searcher.reaches_target(0.1) && !searcher.reaches_target(0.3));
    let last =
        bayes::Searcher::from_stored(&spec(&text.replace("target: 0.25", "use: last")).unwrap(), p.base.json).unwrap();
    assert_eq!(last.value(&[0.5, 0.2, 0.3]), Some(0.3));
    assert!(!last.reaches_target(-1.0), "no target, never reached");
}
