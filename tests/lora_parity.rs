//! LoRA and training-loop parity with PyTorch, PEFT, diffusers and kohya-ss, on fixtures made
//! by `tests/fixtures/make_lora_fixtures.py` with the real libraries (run by hand; CI reads its
//! committed outputs):
//!
//! - adapter files written by diffusers (PEFT layout with alpha in the metadata, and the
//!   layout diffusers' DreamBooth LoRA script writes) and kohya-ss's layout read as the same
//!   adapters, and dbsweep's exports are those files;
//! - the adapted text encoder's and UNet's outputs, and the gradients of every adapter
//!   matrix, match PEFT; a diffusers sample with `load_lora_weights` is reproduced, at scale 1
//!   and 0.5;
//! - three optimiser steps of `dbsweep train` (full, LoRA, LoRA with the text encoder), fed the
//!   script's noise and timesteps through the `DBSWEEP_TEST_STEP_INPUTS` hook, end where
//!   `torch.optim.AdamW`, `clip_grad_norm_` and diffusers' `get_scheduler` end;
//! - a text encoder saved by transformers 5 (keys without `text_model.`) loads.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixtures, metadata, rel_err};
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::lora::adapters::AdapterSet;
use dbsweep::model::lora::files::{self, METADATA_KEY};
use dbsweep::model::lora::{Attach, targets};
use dbsweep::model::pipeline::{SampleRequest, StableDiffusion};

fn lora_dir() -> PathBuf {
    fixtures().join("lora")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn sd1() -> StableDiffusion {
    StableDiffusion::load(&fixtures().join("sd1"), &Device::Cpu, AttentionMode::Full).unwrap()
}

/// The adapters of the fixture file `name`, read for the sd1 model.
fn read(model: &mut StableDiffusion, name: &str) -> files::PipelineAdapters {
    let unet = targets::layers(&mut model.unet);
    let text = targets::layers(&mut model.text_encoder);
    files::read(&lora_dir().join(name), &unet, &text, &Device::Cpu).unwrap()
}

/// A name of dbsweep's (text-encoder layers start `text_model.`) as the fixtures name it
/// (transformers 5 PEFT writes them without).
fn theirs(name: &str) -> &str {
    name.strip_prefix("text_model.").unwrap_or(name)
}

fn assert_same(a: &AdapterSet, b: &AdapterSet, what: &str) {
    let (a, b) = (a.tensors(), b.tensors());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: layers");
    for (k, t) in &a {
        assert_eq!(rel_err(t, &b[k]), 0.0, "{what}: {k}");
    }
}

#[test]
fn the_layouts_diffusers_and_kohya_write_read_as_the_same_adapters() {
    let mut model = sd1();
    let peft = read(&mut model, "adapter-peft.safetensors");
    let script = read(&mut model, "adapter-diffusers-script.safetensors");
    let kohya = read(&mut model, "adapter-kohya.safetensors");
    let (unet, text) = (peft.unet.as_ref().unwrap(), peft.text_encoder.as_ref().unwrap());
    assert_eq!(unet.layers.len(), 63);
    assert_eq!(text.layers.len(), 8);
    assert!(text.layers.iter().all(|l| l.name.starts_with("text_model.encoder.layers.")));
    // The metadata's alpha (3) over the shapes' rank (2); the script's file has none: alpha = rank.
    assert!(unet.layers.iter().chain(&text.layers).all(|l| l.rank == 2 && l.alpha == 3.0));
    assert!(script.unet.as_ref().unwrap().layers.iter().all(|l| l.alpha == 2.0));
    for (name, other) in [("diffusers script", &script), ("kohya", &kohya)] {
        assert_same(unet, other.unet.as_ref().unwrap(), name);
        assert_same(text, other.text_encoder.as_ref().unwrap(), name);
    }
    assert!(kohya.unet.as_ref().unwrap().layers.iter().all(|l| l.alpha == 3.0), "kohya's .alpha tensors");
}

#[test]
fn adapted_outputs_and_every_adapter_gradient_match_peft() {
    let mut model = sd1();
    let reference = load(&lora_dir().join("reference.safetensors"));
    let adapters = read(&mut model, "adapter-peft.safetensors");
    let (unet, text) = (adapters.unet.unwrap(), adapters.text_encoder.unwrap());
    let train = Attach { dtype: DType::F32, trainable: true, strength: 1.0, dropout: None };
    unet.attach(&mut model.unet, train, "the UNet").unwrap();
    text.attach(&mut model.text_encoder, train, "the text encoder").unwrap();
    let ids = reference["text.ids"].to_dtype(DType::U32).unwrap();
    let hidden = model.text_encoder.forward(&ids).unwrap();
    let e = rel_err(&hidden, &reference["text.hidden"]);
    assert!(e < 1e-4, "text encoder rel err {e}");
    let t = reference["unet.timesteps"].to_dtype(DType::F32).unwrap();
    let out = model.unet.forward(&reference["unet.latents"], &t, &hidden).unwrap();
    let e = rel_err(&out, &reference["unet.out"]);
    assert!(e < 1e-4, "UNet rel err {e}");
    let grads = (out * &reference["unet.w"]).unwrap().sum_all().unwrap().backward().unwrap();
    let mut worst = (0f32, String::new());
    for (prefix, set) in [("unet", &unet), ("text_encoder", &text)] {
        for (name, var) in set.vars.data().lock().unwrap().iter() {
            let ours = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {prefix}.{name}"));
            let e = rel_err(ours, &reference[&format!("grad.{prefix}.{}", theirs(name))]);
            if e > worst.0 {
                worst = (e, format!("{prefix}.{name}"));
            }
        }
    }
    eprintln!("worst adapter gradient rel err {:.2e} at {}", worst.0, worst.1);
    assert!(worst.0 < 1e-3, "worst gradient rel err {} at {}", worst.0, worst.1);
}

#[test]
fn a_diffusers_sample_with_load_lora_weights_is_reproduced_at_each_scale() {
    let reference = load(&lora_dir().join("reference.safetensors"));
    for (scale, key) in [(1.0, "sample.image"), (0.5, "sample.image_scale_0.5")] {
        let mut model = sd1();
        files::apply(&lora_dir().join("adapter-peft.safetensors"), &mut model, scale).unwrap();
        let mut req = SampleRequest::seeded("a photo of sks dog", 4, 7.5, 0, 1, 16);
        req.latents = Some(reference["sample.latents"].clone());
        let image = model.sample(&req).unwrap().images;
        let e = rel_err(&image, &reference[key]);
        assert!(e < 1e-4, "scale {scale}: image rel err {e}");
    }
}

#[test]
fn exports_write_what_diffusers_and_kohya_write() {
    let mut model = sd1();
    let peft = read(&mut model, "adapter-peft.safetensors");
    let (unet, text) = (peft.unet.as_ref().unwrap(), peft.text_encoder.as_ref());
    let dir = tempfile::tempdir().unwrap();

    // diffusers: the same tensors under the same names (dbsweep keeps the text encoder's
    // `text_model.`, which older and newer diffusers both load) and the same LoraConfig.
    let ours_path = dir.path().join("ours.safetensors");
    files::write_diffusers(&ours_path, unet, text).unwrap();
    let (ours, reference) = (load(&ours_path), load(&lora_dir().join("adapter-peft.safetensors")));
    let renamed: BTreeMap<String, &Tensor> =
        ours.iter().map(|(k, v)| (k.replacen("text_encoder.text_model.", "text_encoder.", 1), v)).collect();
    let sorted = |keys: Vec<&String>| -> Vec<String> {
        let mut keys: Vec<String> = keys.into_iter().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(sorted(renamed.keys().collect()), sorted(reference.keys().collect()));
    for (k, v) in &renamed {
        assert_eq!(rel_err(v, &reference[k]), 0.0, "{k}");
    }
    let config = |path: &Path| -> serde_json::Value { serde_json::from_str(&metadata(path)[METADATA_KEY]).unwrap() };
    let (ours_config, their_config) = (config(&ours_path), config(&lora_dir().join("adapter-peft.safetensors")));
    for key in ["unet.r", "unet.lora_alpha", "text_encoder.r", "text_encoder.lora_alpha"] {
        assert_eq!(ours_config[key].as_f64(), their_config[key].as_f64(), "{key}");
    }

    // kohya: exactly the keys, shapes and values of the fixture kohya's own code accepted, each
    // a module kohya-ss's lora_diffusers.py creates for this model.
    let kohya_path = dir.path().join("kohya.safetensors");
    files::write_kohya(&kohya_path, unet, text).unwrap();
    let (ours, reference) = (load(&kohya_path), load(&lora_dir().join("adapter-kohya.safetensors")));
    assert_eq!(ours.len(), reference.len(), "as many keys as kohya's");
    for (k, v) in &reference {
        let mine = ours.get(k).unwrap_or_else(|| panic!("missing {k}"));
        assert_eq!(mine.dims(), v.dims(), "{k}");
        assert_eq!(rel_err(mine, v), 0.0, "{k}");
    }
    let modules: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lora_dir().join("kohya-modules.json")).unwrap()).unwrap();
    let modules = serde_json::to_string(&modules).unwrap();
    for k in ours.keys() {
        let module = k.split('.').next().unwrap();
        assert!(modules.contains(&format!("\"{module}\"")), "kohya creates no module {module}");
    }
}

/// Runs `dbsweep train` on the sd1 fixture for three steps with the loop fixture `variant`'s
/// inputs and settings; returns the root and the run id.
fn train_with_pytorch_inputs(variant: &str) -> (tempfile::TempDir, String, serde_json::Value) {
    let file = lora_dir().join(format!("loop-{variant}.safetensors"));
    let s: serde_json::Value = serde_json::from_str(&metadata(&file)["settings"]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut set = vec![
        format!("model.pretrained={}", fixtures().join("sd1").display()),
        "data.resolution=16".into(),
        "data.num_class_images=1".into(),
        "data.class_generation.steps=1".into(),
        format!("data.instance_prompt={}", s["prompts"]["instance"].as_str().unwrap()),
        format!("data.class_prompt={}", s["prompts"]["class"].as_str().unwrap()),
        "train.max_train_steps=3".into(),
        format!("train.learning_rate={}", s["lr"]),
        format!("train.lr_scheduler={}", s["lr_scheduler"].as_str().unwrap()),
        format!("train.lr_warmup_steps={}", s["lr_warmup_steps"]),
        format!("train.max_grad_norm={}", s["max_norm"]),
        format!("train.prior_loss_weight={}", s["prior_loss_weight"]),
        format!("train.adam_weight_decay={}", s["weight_decay"]),
        format!("train.adam_epsilon={}", s["eps"]),
        "checkpoint.every_steps=3".into(),
        "validation.every_steps=1000".into(),
        "tracking.tensorboard=false".into(),
    ];
    if let Some(lora) = s.get("lora") {
        set.push("train.method=lora".into());
        set.push(format!("lora.rank={}", lora["r"]));
        set.push(format!("lora.alpha={}", lora["lora_alpha"]));
        let targets = |k: &str| serde_json::to_string(&lora[k]).unwrap();
        set.push(format!("lora.target_modules={}", targets("unet_target_modules")));
        if !lora["text_encoder_target_modules"].is_null() {
            set.push("train.train_text_encoder=true".into());
            set.push(format!("lora.text_target_modules={}", targets("text_encoder_target_modules")));
        }
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dbsweep"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("--root").arg(root.path()).args(["train", "sweeps/base/tiny.yaml"]);
    for kv in &set {
        cmd.args(["--set", kv]);
    }
    let out = cmd.env_remove("DBSWEEP_ROOT").env("DBSWEEP_TEST_STEP_INPUTS", &file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{variant}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let id = stdout.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    (root, id, s)
}

/// Compares the run's final trained tensors, and its per-step loss, gradient norm and learning
/// rate, with the PyTorch loop of `variant`.
fn check_loop(variant: &str) {
    let (root, id, settings) = train_with_pytorch_inputs(variant);
    let file = lora_dir().join(format!("loop-{variant}.safetensors"));
    let expected = load(&file);
    let checkpoint = root.path().join("runs").join(&id).join("checkpoints/step-00000003");
    let mut ours: HashMap<String, Tensor> = HashMap::new();
    for (name, prefix) in [
        ("unet.safetensors", "unet"),
        ("unet_lora.safetensors", "unet"),
        ("text_encoder_lora.safetensors", "text_encoder"),
    ] {
        if checkpoint.join(name).exists() {
            ours.extend(load(&checkpoint.join(name)).into_iter().map(|(k, v)| (format!("{prefix}.{}", theirs(&k)), v)));
        }
    }
    // Parameters whose gradient is analytically zero get AdamW updates from rounding noise on
    // both sides (up to the sum of the learning rates); they are compared to that tolerance.
    let zero: Vec<String> = serde_json::from_value(settings["structurally_zero_grads"].clone()).unwrap_or_default();
    let lrs: f32 =
        (0..3).map(|s| expected[&format!("lr.{s}")].flatten_all().unwrap().to_vec1::<f64>().unwrap()[0] as f32).sum();
    let mut worst = (0f32, String::new());
    let mut compared = 0;
    for (key, want) in expected.iter().filter(|(k, _)| k.starts_with("expected.")) {
        let name = &key["expected.".len()..];
        let got = ours.get(name).unwrap_or_else(|| panic!("{variant}: the run did not train {name}"));
        if zero.iter().any(|z| z == name) {
            let diff = common::max_abs(&(got - want).unwrap());
            assert!(diff <= lrs * 1.01, "{variant}: {name} moved {diff}, more than the learning rates allow");
            continue;
        }
        compared += 1;
        let e = rel_err(got, want);
        if e > worst.0 {
            worst = (e, name.to_string());
        }
    }
    assert!(compared > 0);
    eprintln!("{variant}: {compared} tensors, worst rel err {:.2e} at {}", worst.0, worst.1);
    assert!(worst.0 < 1e-4, "{variant}: worst trained tensor rel err {} at {}", worst.0, worst.1);
    let conn = rusqlite::Connection::open(root.path().join("dbsweep.sqlite")).unwrap();
    for (key, ours_key) in [("loss", "train/loss"), ("grad_norm", "train/grad_norm"), ("lr", "train/lr")] {
        for step in 0..3 {
            let want = expected[&format!("{key}.{step}")].flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
            let got: f64 = conn
                .query_row(
                    "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 AND step = ?3",
                    (&id, ours_key, step + 1),
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1e-6),
                "{variant}: {key} of step {step}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn three_full_fine_tuning_steps_match_pytorch() {
    check_loop("full");
}

#[test]
fn three_lora_steps_match_peft() {
    check_loop("lora");
}

#[test]
fn three_lora_steps_with_the_text_encoder_match_peft() {
    check_loop("lora-te");
}

/// transformers 5 writes a CLIPTextModel built from its config without the `text_model.` key
/// prefix; such a folder loads, unmodified, and computes what transformers computes.
#[test]
fn a_text_encoder_saved_by_transformers_5_loads_unmodified() {
    let saved = fixtures().join("transformers5/text_encoder/model.safetensors");
    assert!(load(&saved).keys().all(|k| !k.starts_with("text_model.")), "the fixture is unprefixed");
    let folder = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("sd1"), folder.path());
    std::fs::remove_dir_all(folder.path().join("text_encoder")).unwrap();
    copy_tree(&fixtures().join("transformers5/text_encoder"), &folder.path().join("text_encoder"));
    let model = StableDiffusion::load(folder.path(), &Device::Cpu, AttentionMode::Full).unwrap();
    let reference = load(&fixtures().join("transformers5/reference.safetensors"));
    let hidden = model.text_encoder.forward(&reference["ids"].to_dtype(DType::U32).unwrap()).unwrap();
    let e = rel_err(&hidden, &reference["hidden"]);
    assert!(e < 1e-5, "rel err {e}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
