//! `dbsweep train` end to end on the built-in tiny model and the shipped example images.

use std::path::Path;
use std::process::Command;

use crate::Env;

/// The shipped tiny experiment, short: 8 steps, checkpoints every 2, validation every 4.
const SHORT: [&str; 8] = [
    "--set",
    "train.max_train_steps=8",
    "--set",
    "checkpoint.every_steps=2",
    "--set",
    "validation.every_steps=4",
    "--set",
    "data.num_class_images=4",
];

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "sweeps/base/tiny.yaml"];
    args.extend(SHORT);
    args.extend(extra);
    args
}

fn run_id(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string()
}

fn series(env: &Env, id: &str, key: &str) -> Vec<(i64, f64)> {
    let rec = env.json(&["show", id, "--json"]);
    assert!(rec["metrics"].as_array().unwrap().iter().any(|m| m["key"] == key), "no {key} in {rec}");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt =
        conn.prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step").unwrap();
    stmt.query_map([id, key], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn final_weights(env: &Env, id: &str) -> Vec<u8> {
    std::fs::read(env.root().join("runs").join(id).join("checkpoints/step-00000008/unet.safetensors")).unwrap()
}

#[test]
fn trains_checkpoints_validates_and_records_lineage() {
    let env = Env::new();
    let out = env.ok(&train_args(&[]));
    let id = run_id(&out);
    assert!(out.contains("finished at step 8/8"), "{out}");
    let rec = env.json(&["show", &id, "--json"]);
    assert_eq!(rec["status"], "finished");
    assert_eq!(rec["attempt"], 1);
    assert_eq!(rec["data_fingerprints"].as_object().unwrap().len(), 2, "instance and class data fingerprinted");
    let kept: Vec<&String> = rec["checkpoints"].as_object().unwrap().keys().collect();
    assert_eq!(kept.len(), 2, "total_limit 2 of the shipped experiment keeps two: {kept:?}");
    assert!(kept.contains(&&"8".to_string()), "the newest is always kept: {kept:?}");
    let losses = series(&env, &id, "train/loss");
    assert_eq!(losses.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert!(losses.iter().all(|p| p.1.is_finite() && p.1 > 0.0));
    assert_eq!(series(&env, &id, "val/loss").iter().map(|p| p.0).collect::<Vec<_>>(), [4, 8]);
    assert_eq!(series(&env, &id, "val/prior_drift").len(), 2);
    let samples = rec["artifacts"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "one validation prompt, one image, at steps 4 and 8");
    assert!(env.root().join("runs").join(&id).join(samples[0].as_str().unwrap()).exists());
    let journal = std::fs::read_to_string(env.root().join("runs").join(&id).join("journal.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"key\":\"train/loss\"")).count(), 8);
}

#[test]
fn a_second_run_reuses_class_images_and_latents() {
    let env = Env::new();
    let first = env.ok(&train_args(&[]));
    assert!(first.contains("class images generated: 4, images encoded: 8"), "{first}");
    let second = env.ok(&train_args(&["--set", "train.learning_rate=1e-4"]));
    assert!(second.contains("class images generated: 0, images encoded: 0"), "{second}");
    let more = env.ok(&train_args(&["--set", "train.learning_rate=2e-4", "--set", "data.num_class_images=6"]));
    assert!(more.contains("class images generated: 2, images encoded: 2"), "tops up: {more}");
}

#[test]
fn text_embeddings_of_a_frozen_text_encoder_are_cached_and_change_nothing() {
    let warm = Env::new();
    let first = warm.ok(&train_args(&["--set", "train.learning_rate=1e-4"]));
    assert!(first.contains("prompts encoded: 2"), "instance and class prompt: {first}");
    let second = warm.ok(&train_args(&[]));
    assert!(second.contains("prompts encoded: 0"), "{second}");
    let other = warm.ok(&train_args(&["--set", "data.class_prompt=a photo of a cat"]));
    assert!(other.contains("prompts encoded: 1"), "only the new prompt: {other}");
    let trained = warm.ok(&train_args(&["--set", "train.train_text_encoder=true"]));
    assert!(trained.contains("prompts encoded: 0"), "a trained encoder is never cached: {trained}");
    // The run trained from cached embeddings matches the same run computing them.
    let cold = Env::new();
    let id = run_id(&cold.ok(&train_args(&[])));
    assert_eq!(run_id(&second), id);
    assert_eq!(series(&warm, &id, "train/loss"), series(&cold, &id, "train/loss"));
}

#[test]
fn a_text_encoder_trained_for_some_steps_resumes_exactly_after_it_stopped() {
    let args = train_args(&["--set", "train.train_text_encoder=true", "--set", "train.stop_text_encoder_after=3"]);
    let straight = Env::new();
    let id = run_id(&straight.ok(&args));
    let env = Env::new();
    assert_ne!(env.run_with(&args, &[("DBSWEEP_TEST_CRASH_AT_STEP", "7")]).code, 0);
    let resumed = env.ok(&args);
    assert!(resumed.contains("attempt 2") && resumed.contains("finished at step 8/8"), "{resumed}");
    assert_eq!(series(&env, &id, "train/loss"), series(&straight, &id, "train/loss"));
    assert_eq!(final_weights(&env, &id), final_weights(&straight, &id));
}

#[test]
fn a_killed_run_resumes_exactly() {
    let straight = Env::new();
    let id = run_id(&straight.ok(&train_args(&[])));
    let expected = series(&straight, &id, "train/loss");

    let env = Env::new();
    let crashed = env.run_with(&train_args(&[]), &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]);
    assert_ne!(crashed.code, 0, "the process was killed");
    let id2 = run_id(&crashed.stdout);
    assert_eq!(id2, id, "same configuration, same run id");
    let rec = env.json(&["show", &id, "--json"]);
    assert_eq!(rec["status"], "running", "a killed process leaves its run running");
    // The store loses what the dead attempt committed: resuming replays it from the journal.
    rusqlite::Connection::open(env.db()).unwrap().execute("DELETE FROM metric_points", []).unwrap();
    let resumed = env.ok(&train_args(&[]));
    assert!(resumed.contains("attempt 2") && resumed.contains("finished at step 8/8"), "{resumed}");
    assert_eq!(series(&env, &id, "train/loss"), expected, "every step's loss is identical, each once");
    assert_eq!(final_weights(&env, &id), final_weights(&straight, &id), "identical final weights");
}

#[test]
fn evaluation_of_a_killed_run_resumes_exactly() {
    let eval = [
        "--set",
        "evaluation.clip_model=builtin:clip-tiny",
        "--set",
        "evaluation.dino_model=builtin:dino-tiny",
        "--set",
        "evaluation.prompts=[\"a {} on the beach\", \"a {} in the snow\"]",
        "--set",
        "evaluation.images_per_prompt=2",
        "--set",
        "evaluation.steps=3",
        "--set",
        "evaluation.every_steps=4",
    ];
    let straight = Env::new();
    let id = run_id(&straight.ok(&train_args(&eval)));
    let env = Env::new();
    assert_ne!(env.run_with(&train_args(&eval), &[("DBSWEEP_TEST_CRASH_AT_STEP", "6")]).code, 0);
    assert_eq!(series(&env, &id, "eval/dino").iter().map(|p| p.0).collect::<Vec<_>>(), [0, 4], "before the kill");
    let resumed = env.ok(&train_args(&eval));
    assert!(resumed.contains("attempt 2"), "{resumed}");
    for key in dbsweep::eval::METRICS {
        let expected = series(&straight, &id, key);
        assert_eq!(expected.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 4, 8], "{key}");
        assert_eq!(series(&env, &id, key), expected, "{key}: every evaluation identical, each once");
    }
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let straight = Env::new();
    let id = run_id(&straight.ok(&train_args(&[])));
    let env = Env::new();
    env.run_with(&train_args(&[]), &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]);
    let ckpt = env.root().join("runs").join(&id).join("checkpoints");
    let file = ckpt.join("step-00000004/unet.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let run = env.run(&train_args(&[]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("skipping unusable checkpoint") && run.stderr.contains("step-00000004"),
        "{}",
        run.stderr
    );
    assert_eq!(series(&env, &id, "train/loss"), series(&straight, &id, "train/loss"));
    assert_eq!(final_weights(&env, &id), final_weights(&straight, &id));
}

#[test]
fn ctrl_c_checkpoints_and_exits_130_then_resume_finishes() {
    let env = Env::new();
    let mut args = train_args(&[]);
    args.extend([
        "--set",
        "train.max_train_steps=120",
        "--set",
        "checkpoint.every_steps=1000",
        "--set",
        "validation.every_steps=1000",
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--root")
        .arg(env.root())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal_has_steps = |root: &Path| {
        std::fs::read_dir(root.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("journal.jsonl")).ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The journal is flushed at checkpoints; the run folder appears when training starts.
    while journal_has_steps(env.root()).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = run_id(&stdout);
    let rec = env.json(&["show", &id, "--json"]);
    assert_eq!(rec["status"], "interrupted");
    let (step, _) = rec["checkpoints"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| (k.parse::<u64>().unwrap(), v.clone()))
        .unwrap();
    assert!(step > 0 && step < 120, "checkpointed at the interruption, step {step}");
    let resumed = env.ok(&["train", "--run", &id, "--resume", "latest"]);
    assert!(resumed.contains("finished at step 120/120"), "{resumed}");
    let losses = series(&env, &id, "train/loss");
    assert_eq!(losses.len(), 120);
}

#[test]
fn bad_training_input_is_named_with_exit_code_2() {
    let env = Env::new();
    let run = env.run(&train_args(&["--set", "data.instance_dir=no/such/folder"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no/such/folder") && run.stderr.contains("cannot read the image folder"),
        "{}",
        run.stderr
    );
    let run = env.run(&train_args(&["--set", "data.resolution=24"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("key `data.resolution`: expected a multiple of 16 pixels")
            && run.stderr.contains("found 24"),
        "{}",
        run.stderr
    );
    let run = env.run(&["train", "--run", "brave-otter-000000"]);
    assert_eq!(run.code, 2);
    let run = env.run(&train_args(&["--set", "model.mixed_precision=bf16"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("model.mixed_precision bf16") && run.stderr.contains("use fp16"), "{}", run.stderr);
}

/// The dtypes of the tensors in a safetensors file, from its JSON header.
fn dtypes(file: &Path) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].to_string())
        .collect()
}

#[test]
fn fp16_training_scales_the_loss_skips_overflowing_steps_keeps_f32_masters_and_resumes_exactly() {
    // A first scale far too large for f16: the first steps overflow until it has halved enough.
    let fp16 = [
        "--set",
        "model.mixed_precision=fp16",
        "--set",
        "train.loss_scale_init=524288",
        "--set",
        "train.loss_scale_growth_interval=3",
    ];
    let straight = Env::new();
    let id = run_id(&straight.ok(&train_args(&fp16)));
    let scales = series(&straight, &id, "train/loss_scale");
    let skipped: Vec<bool> = series(&straight, &id, "train/step_skipped").iter().map(|p| p.1 == 1.0).collect();
    assert_eq!((scales.len(), skipped.len()), (8, 8));
    assert!(skipped[0] && skipped.contains(&false), "{skipped:?} at scales {scales:?}");
    // Every recorded scale follows from the previous step: halved after an overflow, doubled
    // after three clean steps in a row.
    let mut clean = 0;
    for k in 0..7 {
        let expected = if skipped[k] {
            clean = 0;
            scales[k].1 / 2.0
        } else {
            clean += 1;
            if clean == 3 {
                clean = 0;
                scales[k].1 * 2.0
            } else {
                scales[k].1
            }
        };
        assert_eq!(scales[k + 1].1, expected, "step {}: {scales:?} {skipped:?}", k + 2);
    }
    // A skipped step has no finite norm to report; applied ones do.
    let norms: Vec<i64> = series(&straight, &id, "train/grad_norm").iter().map(|p| p.0).collect();
    assert_eq!(norms, (1..=8).filter(|s| !skipped[*s as usize - 1]).collect::<Vec<_>>());
    let ckpt = straight.root().join("runs").join(&id).join("checkpoints/step-00000008");
    assert_eq!(dtypes(&ckpt.join("unet.safetensors")), ["\"F32\"".to_string()].into(), "master weights stay f32");

    // Before any update, the f16 forward pass gives the f32 loss to f16's precision.
    let full = Env::new();
    let full_id = run_id(&full.ok(&train_args(&[])));
    let (half, single) = (series(&straight, &id, "train/loss")[0].1, series(&full, &full_id, "train/loss")[0].1);
    assert!((half - single).abs() < 1e-2 * single, "f16 loss {half} vs f32 {single}");

    // Killed after step 5 and resumed: the same losses, scales and final weights.
    let env = Env::new();
    let crashed = env.run_with(&train_args(&fp16), &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]);
    assert_ne!(crashed.code, 0);
    let resumed = env.ok(&train_args(&fp16));
    assert!(resumed.contains("attempt 2") && resumed.contains("finished at step 8/8"), "{resumed}");
    for key in ["train/loss", "train/loss_scale", "train/step_skipped"] {
        assert_eq!(series(&env, &id, key), series(&straight, &id, key), "{key}");
    }
    assert_eq!(final_weights(&env, &id), final_weights(&straight, &id));
}

#[test]
fn random_crops_are_encoded_afresh_and_stay_deterministic() {
    let args = train_args(&["--set", "data.center_crop=false", "--set", "data.random_flip=true"]);
    let (a, b) = (Env::new(), Env::new());
    let out = a.ok(&args);
    assert!(
        out.contains("finished at step 8/8") && out.contains("images encoded: 0"),
        "no latent cache with random crops: {out}"
    );
    let id = run_id(&out);
    b.ok(&args);
    assert_eq!(series(&a, &id, "train/loss"), series(&b, &id, "train/loss"), "same seed, same random crops");
}

#[test]
fn files_get_the_mode_the_umask_gives() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let args: Vec<String> = train_args(&[]).iter().map(|s| s.to_string()).collect();
    let status = Command::new("sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_dbsweep"))
        .arg("--root")
        .arg(env.root())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut files = Vec::new();
    let mut dirs = vec![env.root().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    assert!(files.len() > 30, "{files:?}");
    let private: Vec<_> =
        files.iter().filter(|f| std::fs::metadata(f).unwrap().permissions().mode() & 0o777 != 0o644).collect();
    assert!(private.is_empty(), "every file 0644 under umask 022: {private:?}");
}

#[test]
fn an_unreachable_wandb_server_costs_a_run_seconds_and_says_sync_has_work() {
    let env = Env::new();
    // Nothing listens on port 1: every W&B request is refused.
    let vars = [("WANDB_BASE_URL", "http://127.0.0.1:1"), ("WANDB_API_KEY", "k")];
    let run = env.run_with(&train_args(&["--set", "tracking.wandb.project=p"]), &vars);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = run_id(&run.stdout);
    assert!(
        run.stdout.contains("spooled for W&B") && run.stdout.contains(&format!("`dbsweep sync {id}`")),
        "{}",
        run.stdout
    );
    // The end of the run waited at most the documented few seconds for the server, not 30.
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let ended: f64 = conn
        .query_row(
            "SELECT (julianday(r.ended_at) - julianday(MAX(m.wall_time) / 86400.0 + 2440587.5)) * 86400
             FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ended < 10.0, "{ended:.1} s between the last metric and the run's end");
    assert!(env.ok(&["show", &id]).contains("entries spooled, not delivered: `dbsweep sync"));
    assert!(env.ok(&["ls"]).contains("have W&B data spooled, not delivered: `dbsweep sync`"));
}

#[test]
fn hyperparameters_keep_the_configurations_words() {
    let env = Env::new();
    let run = env.run(&train_args(&["--set", "tracking.wandb.project=p", "--set", "tracking.wandb.mode=offline"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let spool = env.root().join("runs").join(run_id(&run.stdout)).join("wandb-spool/0001.jsonl");
    // Spool lines are `<checksum> <entry JSON>`.
    let line = std::fs::read_to_string(spool).unwrap().lines().next().unwrap().to_string();
    let first: serde_json::Value = serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
    let text = first.to_string();
    assert!(text.contains(r#"\"train.lr_scheduler\":{\"value\":\"constant\"}"#), "{text}");
}

#[test]
fn with_both_memory_savers_a_killed_run_resumes_exactly() {
    let savers = ["--set", "train.gradient_checkpointing=true", "--set", "train.optimizer=adamw8bit"];
    let straight = Env::new();
    let id = run_id(&straight.ok(&train_args(&savers)));
    let env = Env::new();
    assert_ne!(env.run_with(&train_args(&savers), &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]).code, 0);
    let resumed = env.ok(&train_args(&savers));
    assert!(resumed.contains("attempt 2"), "{resumed}");
    assert_eq!(series(&env, &id, "train/loss"), series(&straight, &id, "train/loss"));
    assert_eq!(final_weights(&env, &id), final_weights(&straight, &id));
    // The savers change memory, not the run: checkpointing alone gives the plain run's losses
    // to rounding, and 8-bit moments stay close to f32 ones over these steps.
    let plain = Env::new();
    let plain_id = run_id(&plain.ok(&train_args(&[])));
    let checkpointed = Env::new();
    let ckpt_id = run_id(&checkpointed.ok(&train_args(&savers[..2])));
    let (a, b) = (series(&plain, &plain_id, "train/loss"), series(&checkpointed, &ckpt_id, "train/loss"));
    assert!(a.iter().zip(&b).all(|(x, y)| (x.1 - y.1).abs() <= 1e-5 * x.1.abs()), "{a:?}\n{b:?}");
    let eight = series(&straight, &id, "train/loss");
    assert!(a.iter().zip(&eight).all(|(x, y)| (x.1 - y.1).abs() <= 0.05 * x.1.abs()), "{a:?}\n{eight:?}");
}
