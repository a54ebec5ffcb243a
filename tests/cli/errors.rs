//! Bad input of every kind exits with code 2 and a message naming file, line, column, key and
//! what is expected; nothing is written.

use crate::Env;

fn bad(env: &Env, args: &[&str]) -> String {
    let run = env.run(args);
    assert_eq!(run.code, 2, "dbsweep {args:?}: stdout {} stderr {}", run.stdout, run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(!env.db().exists(), "bad input must not write the store");
    run.stderr
}

#[test]
fn yaml_syntax_error() {
    let env = Env::new();
    let f = env.write("s.yaml", "parameters:\n  seed: {values: [1, 2}\n");
    let err = bad(&env, &["submit", &f]);
    assert!(err.contains("s.yaml:2:") && err.contains("invalid YAML"), "{err}");
}

#[test]
fn unknown_key_in_base_with_suggestion() {
    let env = Env::new();
    let f = env.write("s.yaml", "base:\n  train:\n    learnin_rate: 0.1\nparameters:\n  seed: {values: [1]}\n");
    let err = bad(&env, &["submit", &f]);
    assert!(
        err.contains("s.yaml:3:5: key `train.learnin_rate`: unknown key (did you mean `train.learning_rate`?)"),
        "{err}"
    );
}

#[test]
fn impossible_swept_value() {
    let env = Env::new();
    let f = env.write("s.yaml", "parameters:\n  train.prior_loss_weight: {values: [1.0, -0.5]}\n");
    let err = bad(&env, &["submit", &f]);
    assert!(err.contains("s.yaml:2:43: key `train.prior_loss_weight`: expected a number >= 0, found -0.5"), "{err}");
}

#[test]
fn missing_sweep_file() {
    let env = Env::new();
    let err = bad(&env, &["plan", "sweeps/nope.yaml"]);
    assert!(err.contains("sweeps/nope.yaml: cannot read file"), "{err}");
}

#[test]
fn bad_flag_and_bad_environment_variable() {
    let env = Env::new();
    let err = bad(&env, &["submit", "sweeps/lr_grid.yaml", "--set", "train.batch_size"]);
    assert!(err.contains("flag --set train.batch_size: expected key=value"), "{err}");
    let err = bad(&env, &["submit", "sweeps/lr_grid.yaml", "--set", "train.batch_size=0"]);
    assert!(
        err.contains("flag --set train.batch_size=0: key `train.batch_size`: expected an integer >= 1, found 0"),
        "{err}"
    );
    let run = env.run_with(&["submit", "sweeps/lr_grid.yaml"], &[("DBSWEEP_TRAIN__BATCH_SIZE", "many")]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("environment variable DBSWEEP_TRAIN__BATCH_SIZE: key `train.batch_size`"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_are_bad_input_and_help_is_not() {
    let env = Env::new();
    assert_eq!(env.run(&["plan"]).code, 2);
    assert_eq!(env.run(&["frobnicate"]).code, 2);
    let help = env.run(&["--help"]);
    assert_eq!(help.code, 0);
    for cmd in ["plan", "submit", "ls", "show"] {
        assert!(help.stdout.contains(cmd), "{}", help.stdout);
    }
}

#[test]
fn several_problems_are_reported_together() {
    let env = Env::new();
    let f = env.write("s.yaml", "base:\n  train: {epochs: 0, learning_rate: -1}\nparameters:\n  seed: {values: [1]}\n");
    let err = bad(&env, &["plan", &f]);
    assert!(err.contains("key `train.epochs`") && err.contains("key `train.learning_rate`"), "{err}");
}
