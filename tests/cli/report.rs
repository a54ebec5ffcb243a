//! After the sweep: compare, best, sample from a checkpoint, reproduce, export, tensorboard,
//! gc, on a sweep run by the shipped `sweeps/lr_grid.yaml` (shortened with --set).

use std::path::PathBuf;

use crate::Env;

const SHORT: [&str; 8] = [
    "--set",
    "train.max_train_steps=4",
    "--set",
    "validation.every_steps=2",
    "--set",
    "checkpoint.every_steps=2",
    "--set",
    "checkpoint.total_limit=3",
];

fn ran_grid() -> Env {
    let env = Env::new();
    let mut args = vec!["run", "sweeps/lr_grid.yaml", "--gpus", "none", "--max-parallel", "2"];
    args.extend(SHORT);
    env.ok(&args);
    env
}

#[test]
fn compare_best_and_sampling_the_best_checkpoint() {
    let env = ran_grid();
    let c = env.json(&["compare", "lr_grid", "--json", "--sort"]);
    assert_eq!(c["metric"], "val/loss");
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let bests: Vec<f64> = rows.iter().map(|r| r["best_value"].as_f64().unwrap()).collect();
    assert!(bests.windows(2).all(|w| w[0] <= w[1]), "sorted best first: {bests:?}");
    assert!(rows.iter().all(|r| r["steps"] == 4 && r["status"] == "finished"));
    let table = env.ok(&["compare", "lr_grid"]);
    assert!(table.contains("train.learning_rate") && table.lines().count() == 10, "{table}");
    let csv = env.ok(&["compare", "lr_grid", "--csv"]);
    assert!(csv.starts_with("RUN ID,train.epochs,train.learning_rate,train.prior_loss_weight,STATUS"), "{csv}");

    let best = env.json(&["best", "lr_grid", "--json"]);
    assert_eq!(best["run_id"], rows[0]["run_id"]);
    assert_eq!(best["value"].as_f64().unwrap(), bests[0]);
    assert!(best["rule"].as_str().unwrap().contains("lowest val/loss"));
    let folder =
        env.root().join("runs").join(best["run_id"].as_str().unwrap()).join(best["checkpoint_path"].as_str().unwrap());
    assert!(folder.join("unet.safetensors").exists());

    let out = env.root().join("best-samples");
    let printed = env.ok(&[
        "sample",
        "--model",
        "best:lr_grid",
        "--prompt",
        "a photo of sks dog",
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(printed.contains("using run") && out.join("sample-00-seed0.png").exists(), "{printed}");
    let rec = env.json(&["show", best["run_id"].as_str().unwrap(), "--json"]);
    assert!(
        rec["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().ends_with("best-samples/sample-00-seed0.png"))
    );
    // A fine-tuned checkpoint samples differently from the base model with the same seed.
    let base = env.root().join("base-samples");
    env.ok(&["sample", "--prompt", "a photo of sks dog", "--steps", "3", "--out", base.to_str().unwrap()]);
    assert_ne!(
        std::fs::read(out.join("sample-00-seed0.png")).unwrap(),
        std::fs::read(base.join("sample-00-seed0.png")).unwrap()
    );
}

#[test]
fn bad_names_are_bad_input() {
    let env = ran_grid();
    let run = env.run(&["compare", "lr_grid", "--metric", "val/los"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no run of sweep") && run.stderr.contains("val/loss"), "{}", run.stderr);
    assert_eq!(env.run(&["best", "no_such_sweep"]).code, 2);
    let id = env.json(&["compare", "lr_grid", "--json"])["rows"][0]["run_id"].as_str().unwrap().to_string();
    let run = env.run(&["sample", "--model", &format!("{id}@999"), "--prompt", "x", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("has no checkpoint at step 999; its checkpoints: 2, 4"), "{}", run.stderr);
    let run = env.run(&["reproduce", "brave-otter-000000"]);
    assert_eq!(run.code, 2);
    let run = env.run(&["gc", "lr_grid", "--keep", "everything"]);
    assert_eq!(run.code, 2);
}

#[test]
fn reproduce_verifies_identical_series_and_refuses_changed_data() {
    let env = Env::new();
    let data = env.root().join("instance");
    std::fs::create_dir(&data).unwrap();
    for f in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/instance")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let set = format!("data.instance_dir={}", data.display());
    let out = env.ok(&[
        "train",
        "sweeps/base/tiny.yaml",
        "--set",
        &set,
        "--set",
        "train.max_train_steps=4",
        "--set",
        "validation.every_steps=2",
    ]);
    let id = out.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    let out = env.ok(&["reproduce", &id, "--verify"]);
    assert!(out.contains("verify: identical"), "{out}");
    let copy = out.lines().find_map(|l| l.strip_prefix(&format!("reproducing {id} as "))).unwrap().to_string();
    let rec = env.json(&["show", &copy, "--json"]);
    assert_eq!(rec["reproduced_from"], id.as_str());
    assert_eq!(rec["config_hash"], env.json(&["show", &id, "--json"])["config_hash"]);

    std::fs::copy(data.join("sks-dog-0.png"), data.join("sks-dog-9.png")).unwrap();
    let run = env.run(&["reproduce", &id]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no longer match") && run.stderr.contains("--allow-data-change"), "{}", run.stderr);
    let out = env.ok(&["reproduce", &id, "--allow-data-change"]);
    assert!(out.contains("finished"), "{out}");
}

#[test]
fn export_writes_a_diffusers_folder_that_loads_bit_exactly() {
    let env = ran_grid();
    let id = env.json(&["compare", "lr_grid", "--json"])["rows"][3]["run_id"].as_str().unwrap().to_string();
    let out = env.root().join("export");
    env.ok(&["export", &format!("{id}@4"), "--format", "diffusers", out.to_str().unwrap()]);
    for file in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ] {
        assert!(out.join(file).exists(), "missing {file}");
    }
    let model = dbsweep::model::pipeline::StableDiffusion::load(
        &out,
        &candle_core::Device::Cpu,
        dbsweep::model::attention::AttentionMode::Full,
    )
    .unwrap();
    let ckpt = candle_core::safetensors::load(
        env.root().join("runs").join(&id).join("checkpoints/step-00000004/unet.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let vars = model.unet_vars.data().lock().unwrap();
    assert_eq!(vars.len(), ckpt.len());
    for (name, tensor) in &ckpt {
        let a = vars[name].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{name}");
    }
    let again = env.run(&["export", &id, out.to_str().unwrap()]);
    assert_eq!(again.code, 2, "an existing folder is not overwritten");
}

#[test]
fn tensorboard_command_and_gc() {
    let env = ran_grid();
    let cmd = env.ok(&["tensorboard", "lr_grid"]);
    let dir = std::path::PathBuf::from(cmd.trim().strip_prefix("tensorboard --logdir ").unwrap());
    let runs: Vec<std::path::PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(runs.len(), 8);
    for run in &runs {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains("learning_rate=") && name.contains("prior_loss_weight="), "{name}");
        let links: Vec<_> = std::fs::read_dir(run).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(!links.is_empty() && links.iter().all(|l| l.is_symlink() && l.exists()), "{links:?}");
    }
    let summaries = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
    assert_eq!(summaries, 2, "the HParams experiment summary and the custom-scalars layout");
    let best = env.json(&["best", "lr_grid", "--json"]);
    let before: usize = env.json(&["compare", "lr_grid", "--json"])["rows"].as_array().unwrap().len();
    assert_eq!(before, 8);
    let out = env.ok(&["gc", "lr_grid", "--keep", "last"]);
    assert!(out.starts_with("removed ") && out.contains("freed"), "{out}");
    let best_folder =
        env.root().join("runs").join(best["run_id"].as_str().unwrap()).join(best["checkpoint_path"].as_str().unwrap());
    assert!(best_folder.exists(), "gc never deletes the checkpoint best returns");
    let after = env.json(&["best", "lr_grid", "--json"]);
    assert_eq!(after["checkpoint_path"], best["checkpoint_path"]);
}

#[test]
fn dashboard_of_the_shipped_grid_shows_every_run_and_one_grid_per_epochs_value() {
    let env = ran_grid();
    let file = env.root().join("lr_grid.html");
    let printed = env.ok(&["dashboard", "lr_grid", "--out", file.to_str().unwrap()]);
    let best = env.json(&["best", "lr_grid", "--json"]);
    assert!(printed.contains(best["run_id"].as_str().unwrap()), "the best run is named: {printed}");
    let html = std::fs::read_to_string(&file).unwrap();
    for row in env.json(&["compare", "lr_grid", "--json"])["rows"].as_array().unwrap() {
        assert!(html.contains(row["run_id"].as_str().unwrap()));
    }
    assert!(html.contains("train.epochs = 2") && html.contains("train.epochs = 4"), "one image grid per epochs value");
    assert_eq!(html.matches("data:image/png;base64,").count(), 8, "each run's latest validation sample");
    for network in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(network), "self-contained: found {network}");
    }
}
