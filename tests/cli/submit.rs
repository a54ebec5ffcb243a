use crate::Env;

#[test]
fn resubmitting_the_same_file_adds_nothing() {
    let env = Env::new();
    let first = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    assert_eq!(first["sweep_created"], true);
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    assert!(runs.iter().all(|r| r["outcome"]["kind"] == "new" && r["status"] == "pending"));
    let second = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    assert_eq!(second["sweep_created"], false);
    assert!(second["runs"].as_array().unwrap().iter().all(|r| r["outcome"]["kind"] == "existing"));
    assert_eq!(
        first["runs"].as_array().unwrap().iter().map(|r| &r["run_id"]).collect::<Vec<_>>(),
        second["runs"].as_array().unwrap().iter().map(|r| &r["run_id"]).collect::<Vec<_>>()
    );
    let text = env.ok(&["submit", "sweeps/lr_grid.yaml"]);
    assert!(text.contains("0 new runs, 8 reused"), "{text}");
}

#[test]
fn different_settings_make_a_different_sweep_and_runs() {
    let env = Env::new();
    let a = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    let b = env.json(&["submit", "sweeps/lr_grid.yaml", "--set", "train.batch_size=2", "--json"]);
    assert_ne!(a["sweep_id"], b["sweep_id"]);
    assert!(b["runs"].as_array().unwrap().iter().all(|r| r["outcome"]["kind"] == "new"));
    let ls = env.json(&["ls", "--json"]);
    assert_eq!(ls.as_array().unwrap().len(), 2);
}

#[test]
fn root_comes_from_the_environment_too() {
    let env = Env::new();
    let other = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dbsweep"));
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DBSWEEP_ROOT", other.path())
        .args(["submit", "sweeps/lr_grid.yaml"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(other.path().join("dbsweep.sqlite").exists());
    assert!(!env.db().exists());
}
