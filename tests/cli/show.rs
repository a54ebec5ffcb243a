use crate::Env;

#[test]
fn shows_the_whole_lineage_record() {
    let env = Env::new();
    let reg = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    let id = reg["runs"][7]["run_id"].as_str().unwrap().to_string();
    let rec = env.json(&["show", &id, "--json"]);
    assert_eq!(rec["run_id"], id.as_str());
    assert_eq!(rec["status"], "pending");
    assert_eq!(rec["config"]["train"]["prior_loss_weight"], 1.0);
    assert_eq!(rec["config"]["train"]["epochs"], 4);
    assert_eq!(rec["config"]["train"]["learning_rate"], 5e-4);
    assert_eq!(rec["config"]["data"]["resolution"], 32, "from the extended experiment file");
    assert_eq!(rec["sweeps"][0]["sweep_id"], reg["sweep_id"]);
    assert_eq!(rec["code_version"]["version"], env!("CARGO_PKG_VERSION"));
    let param = |key: &str| rec["params"].as_array().unwrap().iter().find(|p| p["key"] == key).cloned().unwrap();
    assert_eq!(param("train.epochs")["detail"], "sweeps/lr_grid.yaml:28:3");
    assert_eq!(param("train.epochs")["swept"], true);
    assert_eq!(param("data.resolution")["detail"], "sweeps/base/tiny.yaml:11:15");
    assert_eq!(param("train.lr_scheduler")["detail"], "sweeps/lr_grid.yaml:8:19");
    let text = env.ok(&["show", &id]);
    assert!(text.contains(&format!("run {id}  status pending")), "{text}");
    assert!(text.contains("planned by sweep lr_grid-"), "{text}");
}

#[test]
fn unknown_run_is_bad_input_with_a_suggestion() {
    let env = Env::new();
    let none = env.run(&["show", "brave-otter-000000"]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    let reg = env.json(&["submit", "sweeps/lr_grid.yaml", "--json"]);
    let id = reg["runs"][0]["run_id"].as_str().unwrap();
    let typo = &id[..id.len() - 1];
    let run = env.run(&["show", typo]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&format!("did you mean `{id}`?")), "{}", run.stderr);
}
