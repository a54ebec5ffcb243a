//! LoRA runs (`train.method: lora`) end to end: what a checkpoint holds, exact resume, sampling
//! at a strength, the export formats read back, and the settings' errors.

use std::path::Path;

use crate::Env;

/// The shipped tiny experiment as a short LoRA run: 8 steps, checkpoints every 2.
fn lora_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "sweeps/base/tiny.yaml",
        "--set",
        "train.method=lora",
        "--set",
        "train.learning_rate=1e-2",
        "--set",
        "train.max_train_steps=8",
        "--set",
        "checkpoint.every_steps=2",
        "--set",
        "validation.every_steps=4",
        "--set",
        "data.num_class_images=4",
    ];
    args.extend(extra);
    args
}

fn run_id(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string()
}

fn losses(env: &Env, id: &str) -> Vec<(i64, f64)> {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt =
        conn.prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = 'train/loss' ORDER BY step").unwrap();
    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn checkpoint(env: &Env, id: &str, step: u32) -> std::path::PathBuf {
    env.root().join("runs").join(id).join(format!("checkpoints/step-{step:08}"))
}

/// The pixels of a PNG.
fn pixels(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

fn sample(env: &Env, model: &str, extra: &[&str], out: &str) -> Vec<u8> {
    let out = env.root().join(out);
    let out_arg = out.display().to_string();
    let mut args =
        vec!["sample", "--model", model, "--prompt", "a photo of sks dog", "--steps", "4", "--out", &out_arg];
    args.extend(extra);
    env.ok(&args);
    pixels(&out.join("sample-00-seed0.png"))
}

#[test]
fn a_lora_run_checkpoints_only_its_adapters_and_resumes_exactly() {
    let straight = Env::new();
    let id = run_id(&straight.ok(&lora_args(&[])));
    let files: Vec<String> = std::fs::read_dir(checkpoint(&straight, &id, 8))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.contains(&"unet_lora.safetensors".into()) && !files.contains(&"unet.safetensors".into()),
        "{files:?}"
    );
    let adapters = std::fs::metadata(checkpoint(&straight, &id, 8).join("unet_lora.safetensors")).unwrap().len();
    let full = Env::new();
    let full_id = run_id(&full.ok(&[&lora_args(&[])[..2], &lora_args(&[])[6..]].concat()));
    let weights = std::fs::metadata(checkpoint(&full, &full_id, 8).join("unet.safetensors")).unwrap().len();
    assert!(adapters * 10 < weights, "adapters {adapters} B vs full weights {weights} B");

    let env = Env::new();
    assert_ne!(env.run_with(&lora_args(&[]), &[("DBSWEEP_TEST_CRASH_AT_STEP", "5")]).code, 0);
    let resumed = env.ok(&lora_args(&[]));
    assert!(resumed.contains("attempt 2") && resumed.contains("finished at step 8/8"), "{resumed}");
    assert_eq!(losses(&env, &id), losses(&straight, &id), "every step's loss identical");
    let read = |e: &Env| std::fs::read(checkpoint(e, &id, 8).join("unet_lora.safetensors")).unwrap();
    assert_eq!(read(&env), read(&straight), "identical adapters");
}

#[test]
fn text_encoder_adapters_in_fp16_resume_exactly() {
    let extra = ["--set", "train.train_text_encoder=true", "--set", "model.mixed_precision=fp16"];
    let straight = Env::new();
    let id = run_id(&straight.ok(&lora_args(&extra)));
    assert!(checkpoint(&straight, &id, 8).join("text_encoder_lora.safetensors").exists());
    let env = Env::new();
    assert_ne!(env.run_with(&lora_args(&extra), &[("DBSWEEP_TEST_CRASH_AT_STEP", "3")]).code, 0);
    env.ok(&lora_args(&extra));
    assert_eq!(losses(&env, &id), losses(&straight, &id));
    let read = |e: &Env| std::fs::read(checkpoint(e, &id, 8).join("text_encoder_lora.safetensors")).unwrap();
    assert_eq!(read(&env), read(&straight));
}

#[test]
fn samples_scale_with_the_adapters_and_every_export_samples_the_same_image() {
    let env = Env::new();
    let id = run_id(&env.ok(&lora_args(&["--set", "train.train_text_encoder=true", "--set", "lora.alpha=6"])));
    let base = sample(&env, "builtin:tiny", &[], "base");
    let trained = sample(&env, &id, &[], "trained");
    assert_ne!(base, trained, "the adapters change the image");
    assert_eq!(sample(&env, &id, &["--lora-scale", "0"], "off"), base, "strength 0 is the base model");
    assert_ne!(sample(&env, &id, &["--lora-scale", "0.5"], "half"), trained);

    let lora = env.root().join("lora").display().to_string();
    let kohya = env.root().join("kohya").display().to_string();
    let merged = env.root().join("merged").display().to_string();
    env.ok(&["export", &id, "--format", "diffusers-lora", &lora]);
    env.ok(&["export", &id, "--format", "kohya", &kohya]);
    env.ok(&["export", &id, &merged]);
    let file = format!("{lora}/pytorch_lora_weights.safetensors");
    assert_eq!(sample(&env, "builtin:tiny", &["--lora", &file], "from-diffusers-file"), trained);
    let file = format!("{kohya}/{id}.safetensors");
    assert_eq!(sample(&env, "builtin:tiny", &["--lora", &file], "from-kohya-file"), trained);
    // Merged into the weights: the same model up to float rounding (at most one level).
    let from_merged = sample(&env, &merged, &[], "from-merged");
    assert!(from_merged.iter().zip(&trained).all(|(a, b)| a.abs_diff(*b) <= 1), "merged export differs");
}

#[test]
fn lora_mistakes_are_named_before_training() {
    let env = Env::new();
    let typo = env.run(&lora_args(&["--set", "lora.target_modules=[to_q, to_qq]"]));
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    assert!(
        typo.stderr.contains("lora.target_modules") && typo.stderr.contains("did you mean `to_q`?"),
        "{}",
        typo.stderr
    );
    assert!(!env.root().join("runs").exists() || std::fs::read_dir(env.root().join("runs")).unwrap().next().is_none());
    let rank = env.run(&lora_args(&["--set", "lora.rank=0"]));
    assert_eq!(rank.code, 2);
    assert!(rank.stderr.contains("lora.rank") && rank.stderr.contains(">= 1"), "{}", rank.stderr);
    // A full run has no adapters to export.
    let id = run_id(&env.ok(&[&lora_args(&[])[..2], &lora_args(&[])[6..]].concat()));
    let out = env.root().join("x").display().to_string();
    let refused = env.run(&["export", &id, "--format", "kohya", &out]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("train.method full") && refused.stderr.contains("--format diffusers"),
        "{}",
        refused.stderr
    );
    let bogus = env.write("bogus.safetensors", "not a safetensors file");
    let bad = env.run(&["sample", "--lora", &bogus, "--prompt", "x", "--steps", "1", "--out", &out]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("bogus.safetensors"), "{}", bad.stderr);
}
