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
    let csv = env.ok(&["compare", "lr_grid", "--csv", "--sort"]);
    assert!(csv.starts_with("RUN ID,train.epochs,train.learning_rate,train.prior_loss_weight,STATUS"), "{csv}");
    // CSV carries every digit: the BEST column reads back as the very number JSON has.
    let best_column = csv.lines().next().unwrap().split(',').position(|h| h == "BEST").unwrap();
    let first_best: f64 = csv.lines().nth(1).unwrap().split(',').nth(best_column).unwrap().parse().unwrap();
    assert_eq!(first_best.to_bits(), bests[0].to_bits(), "{csv}");

    let best = env.json(&["best", "lr_grid", "--json"]);
    assert_eq!(best["run_id"], rows[0]["run_id"]);
    assert_eq!(best["value"].as_f64().unwrap(), bests[0]);
    assert!(best["rule"].as_str().unwrap().contains("lowest val/loss"));
    let folder =
        env.root().join("runs").join(best["run_id"].as_str().unwrap()).join(best["checkpoint_path"].as_str().unwrap());
    assert!(folder.join("unet.safetensors").exists());

    let out = env.root().join("best-samples");
    let run = env.run(&[
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
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The note goes to stderr; stdout lists only the images written.
    assert!(run.stderr.contains("using run"), "{}", run.stderr);
    let image = out.join("sample-00-seed0.png");
    assert_eq!(run.stdout, format!("{}\n", image.display()), "{}", run.stdout);
    assert!(image.exists());
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
    let count = |env: &Env| -> usize {
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        conn.query_row("SELECT COUNT(*) FROM checkpoints", [], |r| r.get::<_, i64>(0)).unwrap() as usize
    };
    let all = count(&env);
    let dry = env.ok(&["gc", "lr_grid", "--keep", "last", "--dry-run"]);
    let would = dry.lines().filter(|l| l.starts_with("would remove ") && l.contains(" step ")).count();
    assert!(would > 0 && dry.contains("(dry run)"), "{dry}");
    assert_eq!(count(&env), all, "a dry run deletes nothing");
    let out = env.ok(&["gc", "lr_grid", "--keep", "last"]);
    assert!(out.starts_with(&format!("removed {would} checkpoints")) && out.contains("freed"), "{out}");
    assert_eq!(count(&env), all - would);
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
    // Without --out the page goes under the output root, and the full path is printed.
    let printed = env.ok(&["dashboard", "lr_grid"]);
    let sweep = env.json(&["compare", "lr_grid", "--json"])["sweep_id"].as_str().unwrap().to_string();
    let default = env.root().join("dashboards").join(format!("{sweep}.html"));
    assert!(default.exists() && printed.contains(&default.display().to_string()), "{printed}");
}

/// A two-run sweep of 4 steps (checkpoints at 2 and 4); its output root.
fn small_sweep(name: &str) -> (Env, String) {
    let env = Env::new();
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    let file = env.write(
        "s.yaml",
        &format!(
            "name: {name}\nextends: {}\nmetric: {{name: val/loss, goal: minimize}}\nbase:\n  data: {{num_class_images: 2}}\n  train: {{max_train_steps: 4}}\n  checkpoint: {{every_steps: 2}}\n  validation: {{every_steps: 2}}\nparameters:\n  seed: {{values: [1, 2]}}\n",
            base.display()
        ),
    );
    env.ok(&["run", &file, "--gpus", "none"]);
    (env, file)
}

#[test]
fn a_corrupt_checkpoint_is_refused_by_every_reader() {
    let (env, _) = small_sweep("corrupt");
    let best = env.json(&["best", "corrupt", "--json"]);
    let run = best["run_id"].as_str().unwrap().to_string();
    let step = best["checkpoint_step"].as_i64().unwrap();
    let unet =
        env.root().join("runs").join(&run).join(best["checkpoint_path"].as_str().unwrap()).join("unet.safetensors");
    let mut bytes = std::fs::read(&unet).unwrap();
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 4] {
        *b ^= 0xff;
    }
    std::fs::write(&unet, bytes).unwrap();
    let reference = format!("{run}@{step}");
    let out = env.root().join("samples");
    for args in [
        vec!["sample", "--model", &reference, "--prompt", "x", "--steps", "2", "--out", out.to_str().unwrap()],
        vec!["sample", "--model", "best:corrupt", "--prompt", "x", "--steps", "2", "--out", out.to_str().unwrap()],
        vec!["export", &reference, env.root().join("exported").to_str().unwrap()],
    ] {
        let r = env.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("unet.safetensors") && r.stderr.contains("sha256"), "{args:?}: {}", r.stderr);
    }
    assert!(!out.exists() && !env.root().join("exported").exists(), "nothing written from a corrupt checkpoint");
}

#[test]
fn a_reproduction_is_linked_to_its_original_and_stays_out_of_its_sweep() {
    let (env, file) = small_sweep("repro");
    let runs = env.json(&["ls", "repro", "--json"])[0]["runs"].clone();
    let original = runs[0]["run_id"].as_str().unwrap().to_string();
    let out = env.ok(&["reproduce", &original]);
    let copy = out.lines().find_map(|l| l.strip_prefix(&format!("reproducing {original} as "))).unwrap().to_string();
    // Running the sweep file again reuses its own runs, never the reproduction.
    let again = env.ok(&["run", &file, "--gpus", "none"]);
    assert!(!again.contains("started"), "{again}");
    let listed = env.json(&["ls", "repro", "--json"])[0]["runs"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["run_id"], original.as_str());
    let compared = env.json(&["compare", "repro", "--json"]);
    assert!(compared["rows"].as_array().unwrap().iter().all(|r| r["run_id"] != copy.as_str()), "{compared}");
    let submitted = env.json(&["submit", &file, "--json"]);
    assert_eq!(submitted["runs"][0]["run_id"], original.as_str());
    assert_eq!(env.json(&["show", &copy, "--json"])["reproduced_from"], original.as_str());
    assert!(env.ok(&["ls"]).contains(&copy), "listed among the runs outside sweeps");
}

#[test]
fn read_only_results_can_be_read() {
    let (env, _) = small_sweep("archived");
    let id = env.json(&["ls", "archived", "--json"])[0]["runs"][0]["run_id"].as_str().unwrap().to_string();
    // The whole root read-only, read by a user who cannot write it (root writes anywhere).
    let status = std::process::Command::new("chmod").args(["-R", "a-w,a+rX"]).arg(env.root()).status().unwrap();
    assert!(status.success());
    // SAFETY: geteuid has no preconditions.
    let unprivileged = unsafe { libc::geteuid() } == 0;
    let run = |args: &[&str]| {
        let mut cmd = if unprivileged {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(env!("CARGO_BIN_EXE_dbsweep"));
            c
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        };
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("DBSWEEP_ROOT").arg("--root").arg(env.root());
        let out = cmd.args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    for args in [
        vec!["ls"],
        vec!["show", &id],
        vec!["compare", "archived"],
        vec!["best", "archived"],
        vec!["plan", "sweeps/lr_grid.yaml"],
    ] {
        let (code, out) = run(&args);
        assert_eq!(code, Some(0), "{args:?} on a read-only root: {out}");
    }
    let (_, out) = run(&["ls"]);
    assert!(out.contains(&id), "{out}");
    std::process::Command::new("chmod").args(["-R", "u+w"]).arg(env.root()).status().unwrap();
}

#[test]
fn the_main_job_is_evaluated_and_eval_rescores_a_checkpoint_to_the_same_numbers() {
    let env = ran_grid();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let ids: Vec<String> = {
        let mut stmt = conn.prepare("SELECT id FROM runs").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(ids.len(), 8);
    let series = |id: &str, key: &str| -> Vec<(i64, f64)> {
        let mut stmt =
            conn.prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step").unwrap();
        stmt.query_map([id, key], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    for id in &ids {
        for key in ["eval/dino", "eval/clip_i", "eval/clip_t", "eval/pres", "eval/div"] {
            let steps: Vec<i64> = series(id, key).iter().map(|p| p.0).collect();
            assert_eq!(steps, [0, 4], "{id} {key}: the base model and the end");
        }
    }
    // Step 0 is the base model's evaluation, computed once and shared by every run.
    let base: Vec<f64> = ids.iter().map(|id| series(id, "eval/dino")[0].1).collect();
    assert!(base.iter().all(|v| v.to_bits() == base[0].to_bits()), "{base:?}");
    assert_eq!(std::fs::read_dir(env.root().join("cache/eval")).unwrap().count(), 1);

    // `dbsweep eval` scores the finished checkpoint again: the numbers the run recorded.
    let id = &ids[3];
    let before: Vec<(String, f64)> =
        ["eval/dino", "eval/clip_t", "eval/pres"].iter().map(|k| (k.to_string(), series(id, k)[1].1)).collect();
    let rescored = env.json(&["eval", &format!("{id}@4"), "--json"]);
    assert_eq!(rescored.as_array().unwrap().len(), 1, "one checkpoint: {rescored}");
    let at4 = &rescored[0];
    assert_eq!(at4["step"], 4);
    for (key, value) in &before {
        assert_eq!(at4["metrics"][key].as_f64().unwrap().to_bits(), value.to_bits(), "{key}");
    }
    // Other settings score again and are recorded at the checkpoint's step.
    let more = env.json(&["eval", &format!("{id}@4"), "--set", "evaluation.images_per_prompt=3", "--json"]);
    assert_ne!(more[0]["metrics"]["eval/dino"], at4["metrics"]["eval/dino"]);
    assert_eq!(series(id, "eval/dino")[1].1, more[0]["metrics"]["eval/dino"].as_f64().unwrap());
    assert_eq!(env.run(&["eval", id, "--set", "train.learning_rate=1"]).code, 2, "only evaluation settings");

    // The Pareto front of subject against prompt fidelity, with the base model beside it.
    let out = env.ok(&["best", "lr_grid", "--pareto", "eval/dino,eval/clip_t"]);
    assert!(out.contains("base model (step 0)") && out.contains("rule: runs at steps where no other run"), "{out}");
    let front = env.json(&["best", "lr_grid", "--pareto", "eval/dino,eval/clip_t", "--json"]);
    let n = front["front"].as_u64().unwrap() as usize;
    let points = front["points"].as_array().unwrap();
    assert!(n >= 1 && n <= points.len() && points.len() == 8, "{front}");
    for p in &points[..n] {
        let dominated = points.iter().any(|q| {
            let (qx, qy, px, py) = (
                q["x"].as_f64().unwrap(),
                q["y"].as_f64().unwrap(),
                p["x"].as_f64().unwrap(),
                p["y"].as_f64().unwrap(),
            );
            qx >= px && qy >= py && (qx > px || qy > py)
        });
        assert!(!dominated, "a front point is not beaten in both: {p}");
    }
    // The dashboard shows the trade-off chart with the front and the base model.
    let file = env.root().join("d.html");
    env.ok(&["dashboard", "lr_grid", "--out", file.to_str().unwrap()]);
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("id=\"tradeoff\"") && html.contains("class=\"base\""), "the trade-off chart");
    assert_eq!(html.matches("class=\"point on-front\"").count(), n);
}
