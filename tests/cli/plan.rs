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
