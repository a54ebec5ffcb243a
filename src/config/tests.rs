//! Layering, provenance and every class of configuration error.

use std::path::Path;

use serde_json::json;

use super::*;

fn doc(name: &str, text: &str) -> yaml::YamlDoc {
    yaml::parse(Path::new(name), text).expect("valid YAML")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn one_problem(err: ConfigError) -> Problem {
    assert_eq!(err.problems().len(), 1, "{err}");
    err.problems()[0].clone()
}

#[test]
fn precedence_defaults_file_base_env_flag() {
    let exp = doc("exp.yaml", "train:\n  learning_rate: 1.0e-4\n  epochs: 3\n  batch_size: 2\n  adam_beta1: 0.8\n");
    let sweep = doc("sweep.yaml", "base:\n  train:\n    epochs: 4\n    batch_size: 3\n    adam_beta1: 0.7\n");
    let r = Layers::new()
        .file(&exp, &[])
        .file(&sweep, &["base"])
        .env(env(&[("DBSWEEP_TRAIN__BATCH_SIZE", "5"), ("DBSWEEP_TRAIN__ADAM_BETA1", "0.6"), ("OTHER", "x")]))
        .flags(&["train.adam_beta1=0.5".into()])
        .resolve()
        .unwrap();
    let t = &r.config.train;
    assert_eq!((t.learning_rate, t.epochs, t.batch_size, t.adam_beta1), (1e-4, 4, 5, 0.5));
    assert_eq!(r.config.train.adam_beta2, 0.999, "untouched keys keep defaults");
    let at = |f: &str, line, column| Origin::File(Location { file: f.into(), line, column });
    assert_eq!(r.provenance["train.learning_rate"], at("exp.yaml", 2, 18));
    assert_eq!(r.provenance["train.epochs"], at("sweep.yaml", 3, 13));
    assert_eq!(r.provenance["train.batch_size"], Origin::Env("DBSWEEP_TRAIN__BATCH_SIZE".into()));
    assert_eq!(r.provenance["train.adam_beta1"], Origin::Flag("train.adam_beta1=0.5".into()));
    assert_eq!(r.provenance["train.adam_beta2"], Origin::Default);
}

#[test]
fn canonical_json_has_sorted_keys_at_every_level() {
    let r = Layers::new().resolve().unwrap();
    let text = r.canonical_text();
    assert!(text.starts_with("{\"checkpoint\":{\"every_steps\":500,"), "{text}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), r.json);
}

#[test]
fn null_clears_an_optional_key_and_flags_take_yaml_values() {
    let exp = doc("exp.yaml", "train:\n  snr_gamma: 5.0\n  max_train_steps: 10\n");
    let r = Layers::new()
        .file(&exp, &[])
        .flags(&["train.snr_gamma=null".into(), "validation.prompts=[a, b c]".into(), "data.class_dir=".into()])
        .resolve()
        .unwrap();
    assert_eq!(r.config.train.snr_gamma, None);
    assert_eq!(r.config.train.max_train_steps, Some(10));
    assert_eq!(r.config.validation.prompts, vec!["a".to_string(), "b c".to_string()]);
    assert_eq!(r.config.data.class_dir.as_deref(), Some(""));
}

#[test]
fn root_variable_is_not_a_config_key() {
    let r = Layers::new().env(env(&[("DBSWEEP_ROOT", "/tmp/x")])).resolve();
    assert!(r.is_ok(), "{:?}", r.err());
}

#[test]
fn unknown_keys_are_reported_with_suggestions_and_positions() {
    let exp = doc("exp.yaml", "train:\n  learnin_rate: 1\nmodle: {}\nbanana: 1\n");
    let err = Layers::new().file(&exp, &[]).resolve().unwrap_err();
    let text: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        [
            "exp.yaml:2:3: key `train.learnin_rate`: unknown key (did you mean `train.learning_rate`?)",
            "exp.yaml:3:1: key `modle`: unknown key (did you mean `model`?)",
            "exp.yaml:4:1: key `banana`: unknown key (see the sweep-file reference in README.md)",
        ]
    );
}

#[test]
fn unknown_keys_from_env_and_flags_name_their_source() {
    let err = Layers::new()
        .env(env(&[("DBSWEEP_TRAIN__EPOCS", "3")]))
        .flags(&["train.lerning_rate=1".into()])
        .resolve()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "environment variable DBSWEEP_TRAIN__EPOCS: key `train.epocs`: unknown key (did you mean `train.epochs`?)"
        ),
        "{text}"
    );
    assert!(text.contains("flag --set train.lerning_rate=1: key `train.lerning_rate`: unknown key (did you mean `train.learning_rate`?)"), "{text}");
}

#[test]
fn wrong_types_name_key_position_and_expectation() {
    let exp = doc("exp.yaml", "train:\n  epochs: three\n");
    let p = one_problem(Layers::new().file(&exp, &[]).resolve().unwrap_err());
    // The key's own rule, not its type's (epochs must be at least 1).
    assert_eq!(p.to_string(), "exp.yaml:2:11: key `train.epochs`: expected an integer >= 1, found \"three\"");
    let exp = doc("exp.yaml", "train:\n  lr_scheduler: cosin\n");
    let p = one_problem(Layers::new().file(&exp, &[]).resolve().unwrap_err());
    assert_eq!(p.key.as_deref(), Some("train.lr_scheduler"));
    let ProblemKind::Invalid { expected, .. } = &p.kind else { panic!("{p}") };
    assert!(expected.contains("cosine") && expected.contains("constant_with_warmup"), "{expected}");
    let exp = doc("exp.yaml", "train: 3\n");
    let p = one_problem(Layers::new().file(&exp, &[]).resolve().unwrap_err());
    assert_eq!(p.key.as_deref(), Some("train"));
}

#[test]
fn impossible_values_are_all_reported() {
    let exp =
        doc("exp.yaml", "train:\n  learning_rate: 0\n  prior_loss_weight: -0.5\n  epochs: 0\n  max_train_steps: 0\n");
    let err = Layers::new().file(&exp, &[]).resolve().unwrap_err();
    let text: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        [
            "exp.yaml:2:18: key `train.learning_rate`: expected a number > 0, found 0",
            "exp.yaml:3:22: key `train.prior_loss_weight`: expected a number >= 0, found -0.5",
            "exp.yaml:4:11: key `train.epochs`: expected an integer >= 1, found 0",
            "exp.yaml:5:20: key `train.max_train_steps`: expected an integer >= 1, or unset to use epochs, found 0",
        ]
    );
}

#[test]
fn malformed_flags_are_bad_input() {
    let err =
        Layers::new().flags(&["noequals".into(), "a b=1".into(), "train.epochs=[1".into()]).resolve().unwrap_err();
    assert_eq!(err.problems().len(), 3, "{err}");
    assert!(err.problems().iter().all(|p| matches!(p.origin, Origin::Flag(_))));
}

#[test]
fn a_non_mapping_base_is_rejected() {
    let sweep = doc("sweep.yaml", "base: [1, 2]\n");
    let p = one_problem(Layers::new().file(&sweep, &["base"]).resolve().unwrap_err());
    assert_eq!(p.to_string(), "sweep.yaml:1:7: key `base`: expected a mapping of settings, found [1,2]");
}

#[test]
fn probe_normalises_and_checks_values() {
    let r = Layers::new().resolve().unwrap();
    assert_eq!(r.probe("train.learning_rate", &json!(1)), Ok(json!(1.0)));
    assert_eq!(r.probe("train.epochs", &json!(3)), Ok(json!(3)));
    let e = r.probe("train.epochs", &json!(2.5)).unwrap_err();
    assert_eq!((e.key.as_str(), e.expected.as_str()), ("train.epochs", "an integer >= 1"));
    let e = r.probe("train.learning_rate", &json!(-1.0)).unwrap_err();
    assert_eq!(e.expected, "a number > 0");
}

#[test]
fn a_wrong_type_does_not_hide_the_other_problems() {
    let exp = doc(
        "exp.yaml",
        "model:\n  attention: flash\ntrain:\n  epochs: two\n  learning_rate: -1\n  lr_scheduler: cosin\n",
    );
    let err = Layers::new().file(&exp, &[]).resolve().unwrap_err();
    let keys: Vec<&str> = err.problems().iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        ["model.attention", "train.epochs", "train.learning_rate", "train.lr_scheduler"],
        "every problem at once: {err}"
    );
}

#[test]
fn type_errors_are_worded_for_people() {
    let text = |flag: &str| Layers::new().flags(&[flag.into()]).resolve().unwrap_err().to_string();
    let section = text("train=5");
    assert!(section.contains("key `train`: expected a mapping of `train.KEY: value` settings, found 5"), "{section}");
    let missing = text("tracking.wandb.mode=offline");
    assert!(
        missing.contains("key `tracking.wandb.project`: expected a value: `tracking.wandb.project` is required"),
        "{missing}"
    );
    let key = text("tracking.wandb.api_key=abc");
    assert!(key.contains("never a setting") && key.contains("WANDB_API_KEY"), "{key}");
    assert!(!key.contains("abc"), "the key is not repeated: {key}");
}

#[test]
fn relative_paths_are_relative_to_the_file_that_declares_them() {
    let exp = doc("/proj/sweeps/base/exp.yaml", "data:\n  instance_dir: ../../images\n  class_dir: ./class\n");
    let r = Layers::new().file(&exp, &[]).resolve().unwrap();
    assert_eq!(r.config.data.instance_dir, "/proj/images");
    assert_eq!(r.config.data.class_dir.as_deref(), Some("/proj/sweeps/base/class"));
    assert_eq!(r.config.model.pretrained, "builtin:tiny", "built-in names are not paths");
    // A flag's path is relative to the current folder.
    let r = Layers::new().flags(&["data.instance_dir=pics".into()]).resolve().unwrap();
    assert_eq!(r.config.data.instance_dir, std::env::current_dir().unwrap().join("pics").display().to_string());
}
