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

#[test]
fn a_sweep_file_given_to_train_says_to_use_run() {
    let env = Env::new();
    let err = bad(&env, &["train", "sweeps/lr_grid.yaml"]);
    assert!(
        err.contains("sweeps/lr_grid.yaml:") && err.contains("this is a sweep file (it has `parameters:`)"),
        "{err}"
    );
    assert!(err.contains("dbsweep run sweeps/lr_grid.yaml"), "{err}");
    assert_eq!(err.lines().count(), 1, "one problem, not a list of unknown keys: {err}");
}

#[test]
fn gpus_that_do_not_exist_are_refused_before_anything_is_written() {
    let env = Env::new();
    // No nvidia-smi on PATH: this machine has no GPU.
    let run = env.run_with(&["run", "sweeps/lr_grid.yaml", "--gpus", "3"], &[("PATH", "/usr/bin:/bin")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--gpus: no GPU 3: this machine has no GPU"), "{}", run.stderr);
    assert!(run.stderr.contains("--gpus none"), "{}", run.stderr);
    assert!(!env.db().exists(), "nothing registered");
    // With two GPUs, naming a third lists the two.
    let path = crate::fake_nvidia_smi(&env, 2);
    let run = env.run_with(&["run", "sweeps/lr_grid.yaml", "--gpus", "0,3"], &[("PATH", &path)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no GPU 3: the GPUs here are 0 (Fake GPU), 1 (Fake GPU)"), "{}", run.stderr);
    assert!(!env.db().exists(), "nothing registered");
}

#[test]
fn model_data_and_wandb_problems_are_found_before_anything_runs() {
    let env = Env::new();
    let err = bad(&env, &["plan", "sweeps/lr_grid.yaml", "--set", "model.pretrained=builtin:huge"]);
    assert!(err.contains("key `model.pretrained`") && err.contains("builtin:tiny"), "{err}");
    let err = bad(&env, &["run", "sweeps/lr_grid.yaml", "--gpus", "none", "--set", "data.instance_dir=no/such/folder"]);
    assert!(
        err.contains("key `data.instance_dir`: expected a folder of images") && err.contains("no/such/folder"),
        "{err}"
    );
    // A model folder missing its VAE config.
    let broken = env.root().join("broken-model");
    copy_tree(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1"), &broken);
    std::fs::remove_file(broken.join("vae/config.json")).unwrap();
    let set = format!("model.pretrained={}", broken.display());
    let err = bad(&env, &["submit", "sweeps/lr_grid.yaml", "--set", &set]);
    assert!(err.contains("key `model.pretrained`") && err.contains("vae/config.json"), "{err}");
    // An evaluation model of the wrong family, or no model at all.
    let clip = format!(
        "evaluation.dino_model={}",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/clip").display()
    );
    let err = bad(&env, &["plan", "sweeps/lr_grid.yaml", "--set", &clip]);
    assert!(err.contains("key `evaluation.dino_model`") && err.contains("needs a ViTModel or Dinov2Model"), "{err}");
    let err = bad(&env, &["plan", "sweeps/lr_grid.yaml", "--set", "evaluation.clip_model=no/such/model"]);
    assert!(err.contains("key `evaluation.clip_model`") && err.contains("no/such/model"), "{err}");
    // W&B online without a key: said before any run starts, not inside each.
    let no_key = [("WANDB_API_KEY", ""), ("HOME", "/nonexistent"), ("NETRC", "/nonexistent/netrc")];
    let run =
        env.run_with(&["run", "sweeps/lr_grid.yaml", "--gpus", "none", "--set", "tracking.wandb.project=p"], &no_key);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("tracking.wandb") && run.stderr.contains("no W&B API key"), "{}", run.stderr);
    assert!(!env.db().exists(), "nothing registered");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn bayes_without_metric_or_run_cap_or_over_a_parameter_it_cannot_model() {
    let env = Env::new();
    let lr = "parameters:\n  train.learning_rate: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}\n";
    let f = env.write("s.yaml", &format!("method: bayes\nrun_cap: 4\n{lr}"));
    let err = bad(&env, &["run", &f, "--gpus", "none"]);
    assert!(err.contains("s.yaml:1:1: missing: expected `metric:` with `name` and `goal`"), "{err}");
    let f = env.write("s.yaml", &format!("method: bayes\nmetric: {{name: val/loss, goal: minimize}}\n{lr}"));
    let err = bad(&env, &["submit", &f]);
    assert!(err.contains("missing: expected `run_cap:` (bayes search needs a number of runs)"), "{err}");
    let f = env.write("s.yaml", &format!("method: bayes\nrun_cap: 4\nmetric: {{name: val/loss}}\n{lr}"));
    let err = bad(&env, &["plan", &f]);
    assert!(err.contains("s.yaml:3:1: key `metric`: missing: expected `goal:`"), "{err}");
    let f = env.write(
        "s.yaml",
        "method: bayes\nrun_cap: 4\nmetric: {name: val/loss, goal: minimize}\nparameters:\n  train.max_train_steps: {min: 1, max: 100000000000000000}\n",
    );
    let err = bad(&env, &["run", &f, "--gpus", "none"]);
    assert!(
        err.contains(
            "s.yaml:5:3: key `train.max_train_steps`: bayes search cannot model this parameter: bounds beyond ±2^53"
        ),
        "{err}"
    );
    let f =
        env.write("s.yaml", &format!("method: bayes\nrun_cap: 4\nmetric: {{name: val/loss, goal: minimize}}\n{lr}"));
    let err = bad(&env, &["run", &f, "--gpus", "none", "--rerun"]);
    assert!(err.contains("--rerun applies to grid and random sweeps"), "{err}");
}
