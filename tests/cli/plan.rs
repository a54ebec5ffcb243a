use crate::Env;

#[test]
fn lr_grid_plans_eight_runs_in_documented_order() {
    let env = Env::new();
    let plan = env.json(&["plan", "sweeps/lr_grid.yaml", "--json"]);
    assert_eq!(plan["method"], "grid");
    assert_eq!(plan["keys"], serde_json::json!(["train.learning_rate", "train.prior_loss_weight", "train.epochs"]));
    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    let epochs: Vec<i64> = runs.iter().map(|r| r["values"]["train.epochs"].as_i64().unwrap()).collect();
    assert_eq!(epochs, [2, 4, 2, 4, 2, 4, 2, 4], "last parameter varies fastest");
    let lrs: Vec<f64> = runs.iter().map(|r| r["values"]["train.learning_rate"].as_f64().unwrap()).collect();
    assert_eq!(lrs, [1e-4, 1e-4, 1e-4, 1e-4, 5e-4, 5e-4, 5e-4, 5e-4]);
    let ids: std::collections::HashSet<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8);
    assert!(runs.iter().all(|r| r["in_store"].is_null()));
    assert!(!env.db().exists(), "plan writes nothing");
}

#[test]
fn plan_is_deterministic_across_invocations() {
    let (a, b) = (Env::new(), Env::new());
    assert_eq!(a.ok(&["plan", "sweeps/lr_random.yaml"]), b.ok(&["plan", "sweeps/lr_random.yaml"]));
}

#[test]
fn random_example_draws_within_its_bounds() {
    let env = Env::new();
    let plan = env.json(&["plan", "sweeps/lr_random.yaml", "--json"]);
    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6);
    for r in runs {
        let lr = r["values"]["train.learning_rate"].as_f64().unwrap();
        let w = r["values"]["train.prior_loss_weight"].as_f64().unwrap();
        assert!((1e-5..=1e-3).contains(&lr) && (0.0..=1.5).contains(&w), "{r}");
    }
}

#[test]
fn table_shows_store_state_after_submit() {
    let env = Env::new();
    let before = env.ok(&["plan", "sweeps/lr_grid.yaml"]);
    assert!(before.lines().nth(1).unwrap().contains("IN STORE"));
    assert!(before.lines().skip(2).all(|l| l.trim_end().ends_with('-')), "{before}");
    env.ok(&["submit", "sweeps/lr_grid.yaml"]);
    let after = env.ok(&["plan", "sweeps/lr_grid.yaml"]);
    assert_eq!(after.lines().skip(2).filter(|l| l.trim_end().ends_with("pending")).count(), 8, "{after}");
}

/// Runs `dbsweep ARGS` under a 1.5 GB address-space limit (a runaway allocation aborts).
fn with_memory_limit(env: &Env, args: &[&str]) -> crate::Run {
    let line = format!(
        "ulimit -v 1500000; exec \"$0\" --root \"$1\" {}",
        (0..args.len()).map(|i| format!("\"${}\"", i + 2)).collect::<Vec<_>>().join(" ")
    );
    let out = std::process::Command::new("sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .arg("-c")
        .arg(line)
        .arg(env!("CARGO_BIN_EXE_dbsweep"))
        .arg(env.root())
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(128);
    crate::Run {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn a_grid_over_a_huge_range_is_sized_before_any_value_is_listed() {
    let env = Env::new();
    let huge = env.write("huge.yaml", "parameters:\n  seed: {distribution: int_uniform, min: 0, max: 100000000000}\n");
    let run = with_memory_limit(&env, &["plan", &huge]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("the grid has 100000000001 points, more than 10000000; set `run_cap:`"),
        "{}",
        run.stderr
    );
    let fine = env.write(
        "fine.yaml",
        "parameters:\n  train.learning_rate: {distribution: q_uniform, min: 0.000001, max: 1, q: 1.0e-12}\n",
    );
    let run = with_memory_limit(&env, &["plan", &fine]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("more than 10000000"), "{}", run.stderr);
    // With a cap, only the first points are listed.
    let capped = env.write(
        "capped.yaml",
        "run_cap: 5\nparameters:\n  seed: {distribution: int_uniform, min: 0, max: 100000000000}\n",
    );
    let run = with_memory_limit(&env, &["plan", &capped, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let seeds: Vec<i64> =
        plan["runs"].as_array().unwrap().iter().map(|r| r["values"]["seed"].as_i64().unwrap()).collect();
    assert_eq!(seeds, [0, 1, 2, 3, 4]);
}

#[test]
fn a_long_values_list_is_validated_in_one_pass() {
    let env = Env::new();
    // 200,000 distinct values and one repeat: checked with a set, not value against value.
    let mut values: Vec<String> = (1..=200_000).map(|i| i.to_string()).collect();
    values.push("17".into());
    let file =
        env.write("long.yaml", &format!("run_cap: 3\nparameters:\n  seed: {{values: [{}]}}\n", values.join(", ")));
    let run = env.run(&["plan", &file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("key `seed`: expected each value once, found 17 again"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn relative_data_paths_follow_the_file_that_declares_them_and_the_images_make_the_run() {
    let env = Env::new();
    let project = env.root().join("project");
    let images = project.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance");
    for f in std::fs::read_dir(&shipped).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), images.join(f.file_name())).unwrap();
    }
    std::fs::write(project.join("exp.yaml"), "data:\n  instance_dir: images\n  num_class_images: 2\n").unwrap();
    let sweep = project.join("s.yaml");
    std::fs::write(&sweep, "name: rel\nextends: exp.yaml\nparameters:\n  seed: {values: [1]}\n").unwrap();
    let sweep = sweep.to_str().unwrap();
    // Planned from the repository root, the folder is the experiment file's `images/`.
    let first = env.json(&["submit", sweep, "--json"]);
    let id = first["runs"][0]["run_id"].as_str().unwrap().to_string();
    let config = env.json(&["show", &id, "--json"])["config"].clone();
    assert_eq!(config["data"]["instance_dir"], images.display().to_string());
    // The same images: the same run. Other images: a new run, never "already finished".
    assert_eq!(env.json(&["submit", sweep, "--json"])["runs"][0]["run_id"], id.as_str());
    std::fs::copy(images.join("sks-dog-0.png"), images.join("sks-dog-9.png")).unwrap();
    let changed = env.json(&["plan", sweep, "--json"]);
    assert_ne!(changed["runs"][0]["run_id"], id.as_str(), "changed images are a new run");
    assert!(changed["runs"][0]["in_store"].is_null(), "{changed}");
    // A folder without images is found at once, where it was written.
    for f in std::fs::read_dir(&images).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let run = env.run(&["plan", sweep]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("exp.yaml:2:17: key `data.instance_dir`: expected a folder of images")
            && run.stderr.contains("no images"),
        "{}",
        run.stderr
    );
}
