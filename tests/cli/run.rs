//! `dbsweep run` / `resume`: slots, retries, failures, interruption and chaos.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Env, query, settle, spawn, try_query};

/// A sweep of `n` short runs (seeds 1..=n) on the built-in model.
fn sweep(env: &Env, n: usize, steps: u32) -> String {
    let seeds: Vec<String> = (1..=n).map(|s| s.to_string()).collect();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    let instance = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance");
    env.write(
        "s.yaml",
        &format!(
            "name: chaos\nextends: {}\nbase:\n  data: {{instance_dir: {}, num_class_images: 2}}\n  train: {{max_train_steps: {steps}}}\n  checkpoint: {{every_steps: 2}}\n  validation: {{every_steps: 1000}}\nparameters:\n  seed: {{values: [{}]}}\n",
            base.display(),
            instance.display(),
            seeds.join(", ")
        ),
    )
}

fn assert_each_point_once(env: &Env, steps: i64) {
    let counts: Vec<i64> = query(env, "SELECT COUNT(*) FROM metrics WHERE key = 'train/loss' GROUP BY run_id");
    assert!(counts.iter().all(|&c| c == steps), "train/loss points per run: {counts:?}");
    let steps_seen: Vec<i64> =
        query(env, "SELECT COUNT(DISTINCT step) FROM metrics WHERE key = 'train/loss' GROUP BY run_id");
    assert!(steps_seen.iter().all(|&c| c == steps));
}

#[test]
fn four_fake_gpus_run_four_at_once_and_refill_a_freed_slot_at_once() {
    let env = Env::new();
    let file = sweep(&env, 6, 6);
    let path = crate::fake_nvidia_smi(&env, 4);
    let run = env.run_with(&["run", &file, "--gpus", "0,1,2,3", "--json"], &[("PATH", &path)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.stdout;
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "sweep", "the first event names the sweep: {kinds:?}");
    assert!(events[0]["sweep_id"].as_str().unwrap().starts_with("chaos-"), "{:?}", events[0]);
    assert_eq!(&kinds[1..5], ["started"; 4], "four runs start before any ends: {kinds:?}");
    let slots: std::collections::HashSet<&str> = events[1..5].iter().map(|e| e["slot"].as_str().unwrap()).collect();
    assert_eq!(slots.len(), 4, "each on its own GPU: {slots:?}");
    let devices: Vec<String> = query(&env, "SELECT device FROM runs ORDER BY device");
    for gpu in 0..4 {
        assert!(devices.iter().any(|d| d == &format!("cpu (CUDA_VISIBLE_DEVICES={gpu})")), "{devices:?}");
    }
    // The fifth run is claimed within a second of the first run ending.
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let first_end: f64 = conn.query_row("SELECT MIN(julianday(ended_at)) FROM runs", [], |r| r.get(0)).unwrap();
    let starts: Vec<f64> = query(&env, "SELECT julianday(started_at) FROM runs ORDER BY started_at");
    let gap = (starts[4] - first_end) * 86400.0;
    assert!(gap < 1.0, "fifth start {gap:.3}s after the first end");
    assert_eq!(kinds.last(), Some(&"done"));
    assert_eq!(events.last().unwrap()["finished"], 6);
}

#[test]
fn a_failing_run_is_retried_from_its_checkpoint_and_the_sweep_finishes() {
    let env = Env::new();
    let file = sweep(&env, 2, 8);
    let run = env.run_with(&["run", &file, "--gpus", "none"], &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.matches("failed   ").count(), 2, "{}", run.stdout);
    assert_eq!(query::<i64>(&env, "SELECT attempt FROM runs"), [2, 2]);
    assert_eq!(query::<String>(&env, "SELECT status FROM runs"), ["finished", "finished"]);
    let errors: Vec<String> = query(&env, "SELECT reason FROM run_events WHERE to_status = 'failed'");
    assert!(errors.iter().all(|e| e.contains("last lines of")), "{errors:?}");
    let resumed: Vec<String> =
        query(&env, "SELECT reason FROM run_events WHERE to_status = 'running' AND reason LIKE 'attempt 2%'");
    assert_eq!(resumed.len(), 2);
    assert_each_point_once(&env, 8);
}

#[test]
fn deterministic_failures_stop_the_sweep_and_fail_fast_stops_at_once() {
    // Every run's first attempt dies at once (after step 1, before any checkpoint).
    let crash = [("DBSWEEP_TEST_CRASH_AT_STEP", "1")];
    let env = Env::new();
    let file = sweep(&env, 5, 8);
    let run = env.run_with(&["run", &file, "--gpus", "none", "--max-retries", "0"], &crash);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("stopping: 3 runs failed right after starting"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("started ").count(), 3, "{}", run.stdout);
    assert!(run.stdout.contains("no retries left (1 attempts)"), "the reason and the retry decision: {}", run.stdout);
    let env = Env::new();
    let file = sweep(&env, 5, 8);
    let run = env.run_with(&["run", &file, "--gpus", "none", "--max-retries", "0", "--fail-fast"], &crash);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("(--fail-fast)") && run.stdout.matches("started ").count() == 1, "{}", run.stdout);
}

#[test]
fn killing_the_orchestrator_at_random_moments_loses_nothing() {
    let env = Env::new();
    let file = sweep(&env, 4, 10);
    let mut rng = dbsweep::rng::Rng::new(2026);
    let mut first = true;
    for _ in 0..3 {
        let args: Vec<&str> = if first {
            vec!["run", &file, "--gpus", "none", "--max-parallel", "2"]
        } else {
            vec!["resume", "chaos", "--gpus", "none", "--max-parallel", "2"]
        };
        first = false;
        let mut child = spawn(&env, &args, &[]);
        std::thread::sleep(Duration::from_millis(400 + rng.below(1500)));
        child.kill().unwrap();
        child.wait().unwrap();
        settle(&env);
    }
    let out = env.ok(&["resume", "chaos", "--gpus", "none", "--max-parallel", "2"]);
    assert!(out.contains("sweep done: 4 finished, 0 failed, 0 remaining"), "{out}");
    assert_eq!(
        query::<i64>(&env, "SELECT COUNT(*) FROM run_events WHERE to_status = 'finished'"),
        [4],
        "each run finished once"
    );
    assert_each_point_once(&env, 10);
}

#[test]
fn two_orchestrators_never_train_the_same_run_twice() {
    let env = Env::new();
    let file = sweep(&env, 4, 4);
    env.ok(&["submit", &file]);
    let a = spawn(&env, &["resume", "chaos", "--gpus", "none"], &[]);
    let b = spawn(&env, &["resume", "chaos", "--gpus", "none"], &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.code().is_some() && b.status.code().is_some());
    assert_eq!(
        query::<i64>(&env, "SELECT attempt FROM runs"),
        [1, 1, 1, 1],
        "every run trained by exactly one process"
    );
    assert_eq!(query::<String>(&env, "SELECT DISTINCT status FROM runs"), ["finished"]);
}

#[test]
fn ctrl_c_stops_launching_checkpoints_children_and_resume_finishes() {
    let env = Env::new();
    let file = sweep(&env, 3, 60);
    let child = spawn(&env, &["run", &file, "--gpus", "none"], &[]);
    std::thread::sleep(Duration::from_millis(2500));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("stopping: interrupted"), "{stdout}");
    let statuses: Vec<String> = query(&env, "SELECT status FROM runs ORDER BY status");
    assert!(statuses.contains(&"interrupted".to_string()), "{statuses:?}");
    let out = env.ok(&["resume", "chaos", "--gpus", "none"]);
    assert!(out.contains("sweep done: 3 finished"), "{out}");
    assert_each_point_once(&env, 60);
}

#[test]
fn json_events_report_each_runs_progress() {
    let env = Env::new();
    let file = sweep(&env, 1, 40);
    let out = env.ok(&["run", &file, "--gpus", "none", "--json"]);
    let progress: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "{out}");
    let steps: Vec<u64> = progress.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]) && steps.iter().all(|&s| s <= 40), "{steps:?}");
    assert!(progress.iter().all(|p| p["total"] == 40 && p["loss"].as_f64().unwrap().is_finite()));
}

#[test]
fn hyperband_stops_runs_that_fall_behind_and_gives_their_slot_on() {
    let env = Env::new();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    let instance = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance");
    // train/lr is constant per run, so the ranking is known: the smallest rate is best.
    let file = env.write(
        "hb.yaml",
        &format!(
            "name: hb\nextends: {}\nbase:\n  data: {{instance_dir: {}, num_class_images: 2}}\n  train: {{max_train_steps: 80}}\n  validation: {{every_steps: 1000}}\n  checkpoint: {{every_steps: 1000}}\nmetric: {{name: train/lr, goal: minimize}}\nearly_terminate: {{type: hyperband, min_iter: 3, eta: 2}}\nparameters:\n  train.learning_rate: {{values: [1.0e-5, 1.0e-4, 1.0e-3]}}\n",
            base.display(),
            instance.display()
        ),
    );
    let out = env.ok(&["run", &file, "--gpus", "none"]);
    assert!(out.contains("sweep done: 1 finished, 2 stopped early, 0 failed, 0 remaining"), "{out}");
    assert_eq!(out.matches("early stop ").count(), 2, "{out}");
    assert_eq!(
        query::<String>(&env, "SELECT status FROM runs ORDER BY json_extract(config_json, '$.train.learning_rate')"),
        ["finished", "stopped", "stopped"]
    );
    let steps: Vec<i64> =
        query(&env, "SELECT COUNT(*) FROM metrics WHERE key = 'train/loss' GROUP BY run_id ORDER BY COUNT(*) DESC");
    assert!(steps[0] == 80 && steps[1] < 80 && steps[2] < 80, "{steps:?}");
    let again = env.ok(&["resume", "hb", "--gpus", "none"]);
    assert!(!again.contains("started"), "stopped runs are not resumed: {again}");
}

#[test]
fn a_run_that_fails_on_bad_input_is_not_retried_and_the_sweep_says_why() {
    let env = Env::new();
    // An image that cannot be decoded is found only when the run trains: exit 2, bad input.
    let images = env.root().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), images.join(entry.file_name())).unwrap();
    }
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    let file = env.write(
        "bad.yaml",
        &format!(
            "name: badimg\nextends: {}\nbase:\n  data: {{instance_dir: {}, num_class_images: 2}}\n  train: {{max_train_steps: 2}}\nparameters:\n  seed: {{values: [1]}}\n",
            base.display(),
            images.display()
        ),
    );
    let run = env.run(&["run", &file, "--gpus", "none"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.matches("started ").count(), 1, "tried once, not retried: {}", run.stdout);
    assert!(run.stdout.contains("broken.png"), "the failure names the file: {}", run.stdout);
    assert!(run.stdout.contains("bad input: not retried"), "{}", run.stdout);
    assert!(run.stdout.contains("sweep done: 0 finished, 1 failed, 0 remaining"), "{}", run.stdout);
    assert_eq!(query::<i64>(&env, "SELECT exit_code FROM runs"), [2]);
    // Resuming does not retry it either.
    let again = env.run(&["resume", "badimg", "--gpus", "none"]);
    assert_eq!(again.code, 1);
    assert!(!again.stdout.contains("started"), "{}", again.stdout);
}

#[test]
fn an_orchestrator_that_finishes_first_leaves_the_other_ones_run_to_it() {
    let env = Env::new();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    // Run 1 is short, run 2 long: A takes run 1, B (started once A trains) takes run 2.
    let file = env.write(
        "two.yaml",
        &format!(
            "name: two\nextends: {}\nbase:\n  data: {{num_class_images: 2}}\n  validation: {{every_steps: 1000}}\n  checkpoint: {{every_steps: 1000}}\nparameters:\n  train.max_train_steps: {{values: [3, 60]}}\n",
            base.display()
        ),
    );
    env.ok(&["submit", &file]);
    let a = spawn(&env, &["resume", "two", "--gpus", "none"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while query::<i64>(&env, "SELECT COUNT(*) FROM runs WHERE status = 'running'")[0] == 0 {
        assert!(Instant::now() < deadline, "A never started a run");
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = spawn(&env, &["resume", "two", "--gpus", "none"], &[]);
    let a = a.wait_with_output().unwrap();
    let a_out = String::from_utf8_lossy(&a.stdout);
    assert_eq!(a.status.code(), Some(0), "the run left is being trained: {a_out}");
    assert!(a_out.contains("1 run is being trained by another process:"), "{a_out}");
    let long: String =
        query(&env, "SELECT id FROM runs WHERE json_extract(config_json, '$.train.max_train_steps') = 60")
            .pop()
            .unwrap();
    assert!(a_out.contains(&format!("{long} (pid ")), "names the run and its process: {a_out}");
    let b = b.wait_with_output().unwrap();
    assert_eq!(b.status.code(), Some(0), "{}", String::from_utf8_lossy(&b.stdout));
    assert_eq!(query::<String>(&env, "SELECT DISTINCT status FROM runs"), ["finished"]);
    assert_eq!(query::<i64>(&env, "SELECT attempt FROM runs"), [1, 1]);
}

#[test]
fn resume_right_after_kill_9_of_orchestrator_and_child_resumes_the_killed_run() {
    let env = Env::new();
    let file = sweep(&env, 3, 40);
    let mut orchestrator = spawn(&env, &["run", &file, "--gpus", "none"], &[]);
    // Wait until the first trainer has recorded its own process (and trained a little).
    let deadline = Instant::now() + Duration::from_secs(60);
    let trainer: i64 = loop {
        let pids: Vec<i64> =
            try_query(&env, "SELECT pid FROM runs WHERE status = 'running' AND device LIKE 'cpu%'").unwrap_or_default();
        let trained =
            try_query::<i64>(&env, "SELECT COUNT(*) FROM metrics WHERE key = 'train/loss'").map_or(0, |c| c[0]);
        if let (Some(&pid), true) = (pids.first(), trained > 2) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no trainer started");
        std::thread::sleep(Duration::from_millis(20));
    };
    Command::new("kill").args(["-9", &orchestrator.id().to_string(), &trainer.to_string()]).status().unwrap();
    // At once: the killed trainer may still be a zombie nobody collected.
    let run = env.run(&["resume", "chaos", "--gpus", "none"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("resuming 1 run(s) whose process was gone"), "{}", run.stdout);
    assert!(run.stdout.contains("sweep done: 3 finished, 0 failed, 0 remaining"), "{}", run.stdout);
    orchestrator.wait().unwrap();
    assert_each_point_once(&env, 40);
}
