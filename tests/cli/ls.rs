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
