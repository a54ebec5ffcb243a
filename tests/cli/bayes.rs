//! `method: bayes` end to end: the shipped `sweeps/lr_bayes.yaml` planned and run to its
//! `run_cap`, resume after kill -9 giving the runs of an uninterrupted sweep (one slot), four
//! slots and two orchestrators never proposing a point twice, `metric.target`, failed and
//! early-stopped runs, and the reports on a bayes sweep.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::{Env, query, spawn};

/// Shortens the runs of `sweeps/lr_bayes.yaml` for tests.
const SHORT: [&str; 6] =
    ["--set", "train.max_train_steps=4", "--set", "validation.every_steps=2", "--set", "checkpoint.every_steps=2"];

/// A bayes sweep file `name` on the built-in model: `run_cap`, `steps` steps per run (validation
/// and a checkpoint every 2), `metric` and `parameters` as YAML flow mappings.
fn bayes_file(env: &Env, name: &str, run_cap: u32, steps: u32, metric: &str, parameters: &str) -> String {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    env.write(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nextends: {}\nmethod: bayes\nseed: 5\nrun_cap: {run_cap}\nmetric: {metric}\nbase:\n  data: {{num_class_images: 2}}\n  train: {{max_train_steps: {steps}}}\n  validation: {{every_steps: 2}}\n  checkpoint: {{every_steps: 2}}\nparameters: {parameters}\n",
            base.display()
        ),
    )
}

/// The learning rate, log-uniform, and the prior-loss weight, uniform.
const CONTINUOUS: &str = "{train.learning_rate: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-3}, train.prior_loss_weight: {min: 0.0, max: 1.5}}";

/// The sweep's runs by position.
fn runs_in_order(env: &Env) -> Vec<String> {
    query(env, "SELECT run_id FROM sweep_runs ORDER BY position")
}

/// How each proposal was made, by position.
fn hows(env: &Env) -> Vec<String> {
    query(env, "SELECT how FROM proposals ORDER BY position")
}

#[test]
fn lr_bayes_plans_its_random_phase_runs_to_its_cap_and_every_report_reads_it() {
    let env = Env::new();
    let mut plan_args = vec!["plan", "sweeps/lr_bayes.yaml", "--json"];
    plan_args.extend(SHORT);
    let plan = env.json(&plan_args);
    assert_eq!((plan["method"].as_str(), plan["run_cap"].as_u64()), (Some("bayes"), Some(6)));
    let planned: Vec<&str> = plan["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(planned.len(), 4, "the random phase");
    assert!(plan["note"].as_str().unwrap().contains("runs #4-#5 depend on results"), "{plan}");
    let table = env.ok(&["plan", "sweeps/lr_bayes.yaml"]);
    assert!(
        table.starts_with("sweep lr_bayes-") && table.contains("(bayes, up to 6 runs, minimize val/loss)"),
        "{table}"
    );

    let mut args = vec!["run", "sweeps/lr_bayes.yaml", "--gpus", "none"];
    args.extend(SHORT);
    let out = env.ok(&args);
    assert!(
        out.contains("(bayes, up to 6 runs)") && out.contains("sweep done: 6 finished, 0 failed, 0 remaining"),
        "{out}"
    );
    assert_eq!(out.matches("proposed ").count(), 6, "{out}");
    let runs = runs_in_order(&env);
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[..4], planned, "the random phase `plan` showed");
    assert_eq!(hows(&env), ["random", "random", "random", "random", "tpe", "tpe"]);
    // `show` explains a proposal: how it was made and what it learned from.
    let text = env.ok(&["show", &runs[5]]);
    assert!(text.contains("proposed     by sweep lr_bayes-") && text.contains("at #5: TPE's"), "{text}");
    assert!(text.contains("learned from 5 result(s), val/loss (best of each run): "), "{text}");
    for earlier in &runs[..5] {
        assert!(text.contains(earlier.as_str()), "{text}");
    }
    let rec = env.json(&["show", &runs[5], "--json"]);
    let observed = rec["proposals"][0]["observed"].as_array().unwrap();
    let best_of_first: f64 =
        query(&env, &format!("SELECT MIN(value) FROM metrics WHERE run_id = '{}' AND key = 'val/loss'", runs[0]))[0];
    assert_eq!(observed[0]["value"].as_f64(), Some(best_of_first), "the best val/loss of each run");
    // The reports read a bayes sweep as any other.
    let c = env.json(&["compare", "lr_bayes", "--json"]);
    assert_eq!(c["rows"].as_array().unwrap().len(), 6);
    let best = env.json(&["best", "lr_bayes", "--json"]);
    assert!(runs.contains(&best["run_id"].as_str().unwrap().to_string()));
    let ls = env.ok(&["ls", "lr_bayes"]);
    assert!(ls.contains("(bayes, 6 runs: 6 finished)"), "{ls}");
    let page = env.ok(&["dashboard", "lr_bayes"]);
    assert!(page.contains(".html"), "{page}");
    let tb = env.ok(&["tensorboard", "lr_bayes"]);
    let dir = std::path::PathBuf::from(tb.trim().strip_prefix("tensorboard --logdir ").unwrap());
    assert_eq!(std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count(), 6);
    // Run again: nothing is proposed or trained.
    let again = env.ok(&args);
    assert!(!again.contains("proposed") && !again.contains("started"), "{again}");
}

/// Waits (bounded) until no process recorded for a running run is alive.
fn wait_for_trainers(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pids: Vec<i64> = query(env, "SELECT pid FROM runs WHERE status = 'running' AND pid IS NOT NULL");
        if pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            return;
        }
        assert!(Instant::now() < deadline, "training processes still alive after 60 s: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_bayes_sweep_killed_with_kill_9_ends_with_the_runs_of_an_uninterrupted_one() {
    // One slot: each proposal is made once every earlier run has ended, so it sees the same
    // results however often the orchestrator dies (see src/scheduler/propose.rs).
    let metric = "{name: val/loss, goal: minimize}";
    let whole = Env::new();
    let file = bayes_file(&whole, "det", 6, 8, metric, CONTINUOUS);
    let out = whole.ok(&["run", &file, "--gpus", "none"]);
    assert!(out.contains("sweep done: 6 finished"), "{out}");

    let killed = Env::new();
    let file = bayes_file(&killed, "det", 6, 8, metric, CONTINUOUS);
    let mut rng = dbsweep::rng::Rng::new(15);
    for round in 0..4 {
        let args: Vec<&str> =
            if round == 0 { vec!["run", &file, "--gpus", "none"] } else { vec!["resume", "det", "--gpus", "none"] };
        let mut child = spawn(&killed, &args, &[]);
        std::thread::sleep(Duration::from_millis(1500 + rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        wait_for_trainers(&killed);
    }
    let interrupted: Vec<i64> = query(&killed, "SELECT COUNT(*) FROM run_events WHERE to_status = 'interrupted'");
    assert!(interrupted[0] >= 1, "the kills interrupted runs");
    let out = killed.ok(&["resume", "det", "--gpus", "none"]);
    assert!(out.contains("sweep done: 6 finished, 0 failed, 0 remaining"), "{out}");
    assert_eq!(runs_in_order(&killed), runs_in_order(&whole), "the same runs at the same positions");
    let losses = |env: &Env| -> Vec<f64> {
        query(
            env,
            "SELECT m.value FROM metrics m JOIN sweep_runs s ON s.run_id = m.run_id WHERE m.key = 'val/loss' ORDER BY s.position, m.step",
        )
    };
    assert_eq!(losses(&killed), losses(&whole), "and the same results, which the proposals learned from");
    assert_eq!(hows(&killed), hows(&whole));
}

#[test]
fn four_slots_and_two_orchestrators_never_propose_a_point_twice() {
    // Nine points and a cap of nine: the last proposals must find the points left.
    let env = Env::new();
    let grid =
        "{train.learning_rate: {values: [1.0e-4, 3.0e-4, 1.0e-3]}, train.prior_loss_weight: {values: [0.0, 0.5, 1.0]}}";
    let file = bayes_file(&env, "async", 9, 6, "{name: val/loss, goal: minimize}", grid);
    env.ok(&["submit", &file]);
    let path = crate::fake_nvidia_smi(&env, 4);
    let a = spawn(&env, &["resume", "async", "--gpus", "0,1,2,3"], &[("PATH", &path)]);
    let b = spawn(&env, &["resume", "async", "--gpus", "0,1"], &[("PATH", &path)]);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let positions: Vec<i64> = query(&env, "SELECT position FROM sweep_runs ORDER BY position");
    assert_eq!(positions, (0..9).collect::<Vec<i64>>(), "one run per position");
    let configs: HashSet<String> = query::<String>(&env, "SELECT config_hash FROM runs").into_iter().collect();
    assert_eq!(configs.len(), 9, "nine different points");
    let points: HashSet<(String, String)> = query::<String>(&env, "SELECT json_extract(config_json, '$.train.learning_rate') || ' ' || json_extract(config_json, '$.train.prior_loss_weight') FROM runs")
        .into_iter()
        .map(|p| { let (a, b) = p.split_once(' ').unwrap(); (a.to_string(), b.to_string()) })
        .collect();
    assert_eq!(points.len(), 9, "every point of the space once: {points:?}");
    assert_eq!(query::<String>(&env, "SELECT DISTINCT status FROM runs"), ["finished"]);
    let with_pending: Vec<i64> = query(&env, "SELECT COUNT(*) FROM proposals WHERE pending_json != '[]'");
    assert!(with_pending[0] >= 3, "proposals made while other runs were running: {with_pending:?}");
}

#[test]
fn the_target_ends_proposals_and_failed_runs_are_avoided_but_not_learned_from() {
    let env = Env::new();
    let file = bayes_file(&env, "target", 4, 4, "{name: val/loss, goal: minimize, target: 100.0}", CONTINUOUS);
    let out = env.ok(&["run", &file, "--gpus", "none"]);
    let first = runs_in_order(&env);
    assert_eq!(first.len(), 1, "{out}");
    assert!(out.contains(&format!("no more proposals: run {} reached the target val/loss 100", first[0])), "{out}");
    assert!(out.contains("sweep done: 1 finished, 0 failed, 0 remaining"), "{out}");
    let again = env.ok(&["resume", "target", "--gpus", "none"]);
    assert!(!again.contains("proposed"), "{again}");

    // Every run's only attempt crashes: each failed run is excluded from later proposals (never
    // proposed again, not learned from), and the sweep stops after three immediate failures.
    let env = Env::new();
    let file = bayes_file(&env, "failing", 5, 4, "{name: val/loss, goal: minimize}", CONTINUOUS);
    let crash = [("DBSWEEP_TEST_CRASH_AT_STEP", "1")];
    let run = env.run_with(&["run", &file, "--gpus", "none", "--max-retries", "0"], &crash);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("sweep done: 0 finished, 3 failed, 2 remaining"), "{}", run.stdout);
    let runs = runs_in_order(&env);
    let excluded: Vec<String> = query(&env, "SELECT excluded_json FROM proposals ORDER BY position");
    let observed: Vec<String> = query(&env, "SELECT observed_json FROM proposals ORDER BY position");
    assert_eq!(
        excluded,
        ["[]".to_string(), format!("[\"{}\"]", runs[0]), format!("[\"{}\",\"{}\"]", runs[0], runs[1])]
    );
    assert!(observed.iter().all(|o| o == "[]"), "{observed:?}");
}

#[test]
fn a_run_hyperband_stops_counts_with_its_value_at_the_stop() {
    // train/lr is constant per run, so the ranking is the learning rates' (as the Hyperband
    // test of tests/cli/run.rs). With seed 5 the second random draw has the higher rate, so it
    // stops at the first rung; the third proposal learns from it.
    let env = Env::new();
    let metric = "{name: train/lr, goal: minimize}\nearly_terminate: {type: hyperband, min_iter: 3, eta: 2}";
    let lr = "{train.learning_rate: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-3}}";
    let file = bayes_file(&env, "hb", 3, 30, metric, lr);
    let out = env.ok(&["run", &file, "--gpus", "none"]);
    assert!(out.contains("early stop "), "{out}");
    let stopped: Vec<String> = query(&env, "SELECT id FROM runs WHERE status = 'stopped'");
    assert!(!stopped.is_empty(), "{out}");
    let last = runs_in_order(&env).pop().unwrap();
    let rec = env.json(&["show", &last, "--json"]);
    let observed = rec["proposals"][0]["observed"].as_array().unwrap();
    let seen = observed.iter().find(|o| o["run_id"] == stopped[0].as_str()).expect("the stopped run is a result");
    let reported: Vec<f64> =
        query(&env, &format!("SELECT value FROM metrics WHERE run_id = '{}' AND key = 'train/lr'", stopped[0]));
    assert!(reported.len() < 30, "stopped early: {} reports", reported.len());
    assert_eq!(seen["value"].as_f64(), reported.iter().copied().reduce(f64::min), "its value at the stop");
}
