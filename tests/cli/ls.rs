use crate::Env;

#[test]
fn empty_root_says_how_to_start() {
    let env = Env::new();
    let out = env.ok(&["ls"]);
    assert!(out.contains("no sweeps yet") && out.contains("dbsweep submit"), "{out}");
    assert_eq!(env.json(&["ls", "--json"]), serde_json::json!([]));
    assert!(!env.db().exists());
}

#[test]
fn lists_sweeps_with_status_counts_and_runs() {
    let env = Env::new();
    let reg = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    env.ok(&["submit", "sweeps/lr_random.yaml"]);
    let out = env.ok(&["ls"]);
    assert!(out.contains("(grid, 8 runs: 8 pending)"), "{out}");
    assert!(out.contains("(random, 6 runs: 6 pending)"), "{out}");
    for run in reg["runs"].as_array().unwrap() {
        assert!(out.contains(run["run_id"].as_str().unwrap()), "{out}");
    }
    let only = env.json(&["ls", "lr_grid", "--json"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    let runs = only[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    assert_eq!(runs[7]["swept"]["train.epochs"], 4);
    assert_eq!(runs[7]["status"], "pending");
    assert_eq!(runs[0]["run_id"], reg["runs"][0]["run_id"], "`run_id`, as plan, submit and compare name it");
}

#[test]
fn runs_trained_outside_sweeps_are_listed_and_the_same_settings_are_the_same_run() {
    let env = Env::new();
    let args =
        ["train", "sweeps/base/tiny.yaml", "--set", "train.max_train_steps=2", "--set", "validation.every_steps=2"];
    let first = env.ok(&args);
    let id = first.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    let again = env.ok(&args);
    assert!(again.contains(&format!("run {id} already finished with these settings")), "{again}");
    assert_eq!(env.json(&["show", &id, "--json"])["attempt"], 1, "not retrained");
    let out = env.ok(&["ls"]);
    assert!(out.contains("runs outside sweeps (1):") && out.contains(&id), "{out}");
    let json = env.json(&["ls", "--json"]);
    assert_eq!(json[0]["sweep"], serde_json::Value::Null);
    assert_eq!(json[0]["runs"][0]["run_id"], id.as_str());
    let rerun = env.ok(&[&args[..], &["--rerun"]].concat());
    assert!(rerun.contains("finished at step 2/2") && !rerun.contains(&format!("run {id}:")), "{rerun}");
}

#[test]
fn unknown_sweep_is_bad_input_with_a_suggestion() {
    let env = Env::new();
    env.ok(&["submit", "sweeps/lr_grid.yaml"]);
    let run = env.run(&["ls", "lr_gird"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no sweep `lr_gird`") && run.stderr.contains("did you mean `lr_grid`?"),
        "{}",
        run.stderr
    );
}
