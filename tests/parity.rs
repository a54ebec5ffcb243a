//! Parity with PyTorch + diffusers on the tiny fixtures made by `tests/fixtures/make_fixtures.py`
//! (run by hand; CI only reads its committed outputs): tokenizer ids, text-encoder, UNet and
//! VAE outputs, a full DDIM + guidance sample, and the gradient of every trainable parameter
//! for the DreamBooth loss, for an SD 1.x-style (epsilon) and an SD 2.x-style (v-prediction,
//! linear projections, GELU text encoder, tokenizer.json) model.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{max_abs, rel_err};
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::pipeline::{SampleRequest, StableDiffusion};
use dbsweep::train::loss::dreambooth_loss;

struct Fixture {
    model: StableDiffusion,
    reference: HashMap<String, Tensor>,
    structurally_zero: Vec<String>,
}

fn fixture(name: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = StableDiffusion::load(&dir.join(name), &Device::Cpu, AttentionMode::Full)
        .expect("fixture folder loads unchanged");
    let ref_path = dir.join(format!("{name}-reference.safetensors"));
    let reference = candle_core::safetensors::load(&ref_path, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&ref_path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let zero =
        meta.metadata().as_ref().and_then(|m| m.get("grad.structurally_zero")).cloned().unwrap_or_else(|| "[]".into());
    Fixture { model, reference, structurally_zero: serde_json::from_str(&zero).unwrap() }
}

impl Fixture {
    fn get(&self, name: &str) -> &Tensor {
        self.reference.get(name).unwrap_or_else(|| panic!("reference lacks {name}"))
    }
}

/// An int64 timestep tensor as indices.
fn steps(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap().iter().map(|&t| t as usize).collect()
}

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn check_forward(name: &str) {
    let f = fixture(name);
    let m = &f.model;
    // Tokenizer.
    let ours = m.token_ids(&["a photo of sks dog", ""]).unwrap();
    assert_eq!(
        ours.to_vec2::<u32>().unwrap(),
        ids(f.get("text.input_ids")).to_vec2::<u32>().unwrap(),
        "{name}: token ids"
    );
    // Text encoder.
    let hidden = m.text_encoder.forward(&ours).unwrap();
    let e = rel_err(&hidden, f.get("text.last_hidden_state"));
    assert!(e < 1e-4, "{name}: text encoder rel err {e}");
    // UNet, one timestep per example.
    let t = f.get("unet.timestep").to_dtype(DType::F32).unwrap();
    let out = m.unet.forward(f.get("unet.sample"), &t, f.get("unet.encoder_hidden_states")).unwrap();
    let e = rel_err(&out, f.get("unet.out"));
    assert!(e < 1e-4, "{name}: unet rel err {e}");
    // VAE.
    let dist = m.vae.encode(f.get("vae.image")).unwrap();
    let e = rel_err(&dist.mean, f.get("vae.latent_mean")).max(rel_err(&dist.logvar, f.get("vae.latent_logvar")));
    assert!(e < 1e-4, "{name}: vae encode rel err {e}");
    let e = rel_err(&m.vae.decode(f.get("vae.latents")).unwrap(), f.get("vae.decoded"));
    assert!(e < 1e-4, "{name}: vae decode rel err {e}");
}

fn check_sample(name: &str) {
    let f = fixture(name);
    let init = f.get("ddim.latents");
    let (_, _, h, w) = init.dims4().unwrap();
    let scale = f.model.vae_scale_factor();
    let ts = steps(f.get("ddim.timesteps"));
    assert_eq!(f.model.schedule.inference_timesteps(4), ts, "{name}: DDIM timesteps");
    let req = SampleRequest {
        prompt: "a photo of sks dog".into(),
        negative_prompt: String::new(),
        steps: 4,
        guidance: 7.5,
        seed: 0,
        count: 1,
        size: (h * scale, w * scale),
        latents: Some(init.clone()),
    };
    let s = f.model.sample(&req).unwrap();
    let e = rel_err(&s.latents, f.get("ddim.final_latents"));
    assert!(e < 1e-4, "{name}: DDIM final latents rel err {e}");
    let e = rel_err(&s.images, f.get("ddim.image"));
    assert!(e < 1e-3, "{name}: DDIM image rel err {e}");
}

fn check_gradients(name: &str) {
    let f = fixture(name);
    let m = &f.model;
    let timesteps = steps(f.get("grad.timesteps"));
    let (latents, noise) = (f.get("grad.latents"), f.get("grad.noise"));
    let noisy = m.schedule.add_noise(latents, noise, &timesteps).unwrap();
    let target = m.schedule.target(latents, noise, &timesteps).unwrap();
    let context = m.text_encoder.forward(&ids(f.get("grad.input_ids"))).unwrap();
    let t = Tensor::new(timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let pred = m.unet.forward(&noisy, &t, &context).unwrap();
    let weight = f.get("grad.prior_loss_weight").to_vec1::<f32>().unwrap()[0] as f64;
    let loss = dreambooth_loss(&pred, &target, weight).unwrap();
    let expected = f.get("grad.loss").to_vec1::<f32>().unwrap()[0];
    let got = loss.to_scalar::<f32>().unwrap();
    assert!(((got - expected) / expected).abs() < 1e-5, "{name}: loss {got} vs {expected}");
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    let mut worst = 0f32;
    let mut failures = Vec::new();
    for (prefix, vars) in [("grad.unet.", &m.unet_vars), ("grad.text_encoder.", &m.text_vars)] {
        for (param, var) in vars.data().lock().unwrap().iter() {
            let key = format!("{prefix}{param}");
            let reference = f.get(&key);
            let Some(g) = grads.get(var.as_tensor()) else {
                failures.push(format!("{param}: no gradient"));
                continue;
            };
            let zero = f.structurally_zero.iter().any(|z| key.ends_with(z.as_str()) || z == &key || z == param);
            let (err, limit) = if zero { (max_abs(g), 1e-6) } else { (rel_err(g, reference), 1e-3) };
            if !zero {
                worst = worst.max(err);
            }
            if err > limit {
                failures.push(format!("{param}: error {err:.2e} > {limit:.0e}"));
            }
            checked += 1;
        }
    }
    eprintln!("{name}: {checked} gradients, worst relative error {worst:.2e}");
    assert!(failures.is_empty(), "{name}: {} of {checked} gradients differ:\n{}", failures.len(), failures.join("\n"));
    let expected_params =
        f.reference.keys().filter(|k| k.starts_with("grad.unet.") || k.starts_with("grad.text_encoder.")).count();
    assert_eq!(checked, expected_params, "{name}: every trainable parameter is checked");
}

#[test]
fn sd1_forward_matches_diffusers() {
    check_forward("sd1");
}

#[test]
fn sd2_forward_matches_diffusers() {
    check_forward("sd2");
}

#[test]
fn sd1_ddim_guided_sample_matches_diffusers() {
    check_sample("sd1");
}

#[test]
fn sd2_ddim_guided_sample_matches_diffusers() {
    check_sample("sd2");
}

#[test]
fn sd1_dreambooth_gradients_match_pytorch() {
    check_gradients("sd1");
}

#[test]
fn sd2_dreambooth_gradients_match_pytorch() {
    check_gradients("sd2");
}
