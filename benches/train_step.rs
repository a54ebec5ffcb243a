//! One DreamBooth training step on the tiny fixture architecture (VAE encode + text encoder +
//! UNet forward/backward + AdamW), in dbsweep (candle) and, when a Python with torch +
//! diffusers is available, the identical step in PyTorch (`benches/torch_step.py`), side by
//! side with their ratio.
//!
//! `cargo bench --bench train_step`. The PyTorch side runs when `DBSWEEP_TORCH_PYTHON` names a
//! Python interpreter with torch and diffusers, or `target/fixtures-venv/bin/python` exists
//! (see `tests/fixtures/make_fixtures.py`). Each configuration runs in a fresh child process so
//! that the thread count (`RAYON_NUM_THREADS` for candle, `torch.set_num_threads`) is exact.
//! `batch` counts rows: half instance, half class (prior-preservation) examples.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::pipeline::StableDiffusion;
use dbsweep::rng::Rng;
use dbsweep::train::loss::dreambooth_loss;

const CHILD: &str = "DBSWEEP_BENCH_CHILD";

/// The same allocator as the `dbsweep` binary (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn child(resolution: usize, batch: usize, steps: usize) -> f64 {
    let dev = Device::Cpu;
    let model = StableDiffusion::load(&repo().join("tests/fixtures/sd1"), &dev, AttentionMode::Full).unwrap();
    let half = batch / 2;
    let prompts: Vec<&str> =
        (0..batch).map(|i| if i < half { "a photo of sks dog" } else { "a photo of a dog" }).collect();
    let ids = model.token_ids(&prompts).unwrap();
    let mut rng = Rng::new(0);
    let images: Vec<f32> =
        (0..batch * 3 * resolution * resolution).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
    let images = Tensor::from_vec(images, (batch, 3, resolution, resolution), &dev).unwrap();
    let mut vars = model.unet_vars.all_vars();
    vars.extend(model.text_vars.all_vars());
    let mut opt = AdamW::new(vars, ParamsAdamW { lr: 5e-6, ..Default::default() }).unwrap();
    let mut step = || {
        let dist = model.vae.encode(&images).unwrap();
        let eps = Tensor::from_vec(rng.normals_f32(dist.mean.elem_count()), dist.mean.shape(), &dev).unwrap();
        let latents = (&dist.mean + ((&dist.logvar * 0.5).unwrap().exp().unwrap() * eps).unwrap()).unwrap();
        let latents = model.vae.scale(&latents).unwrap().detach();
        let noise = Tensor::from_vec(rng.normals_f32(latents.elem_count()), latents.shape(), &dev).unwrap();
        let ts: Vec<usize> = (0..batch).map(|_| rng.below(1000) as usize).collect();
        let noisy = model.schedule.add_noise(&latents, &noise, &ts).unwrap();
        let hidden = model.text_encoder.forward(&ids).unwrap();
        let t = Tensor::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), &dev).unwrap();
        let pred = model.unet.forward(&noisy, &t, &hidden).unwrap();
        let loss = dreambooth_loss(&pred, &noise, 0.7).unwrap();
        opt.backward_step(&loss).unwrap();
        loss.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
    };
    step();
    let start = Instant::now();
    for _ in 0..steps {
        assert!(step().is_finite());
    }
    start.elapsed().as_secs_f64() * 1000.0 / steps as f64
}

fn torch_python() -> Option<PathBuf> {
    std::env::var_os("DBSWEEP_TORCH_PYTHON").map(PathBuf::from).or_else(|| {
        let p = repo().join("target/fixtures-venv/bin/python");
        p.exists().then_some(p)
    })
}

fn ms_from_json(line: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(line.lines().last()?).ok()?["ms_per_step"].as_f64()
}

fn main() {
    // As the dbsweep binary does (src/main.rs).
    dbsweep::allocator::keep_freed_memory();
    if let Ok(spec) = std::env::var(CHILD) {
        let v: Vec<usize> = spec.split(',').map(|s| s.parse().unwrap()).collect();
        println!("{{\"ms_per_step\": {}}}", child(v[0], v[1], v[2]));
        return;
    }
    let python = torch_python();
    println!("one DreamBooth training step, tiny sd1 architecture (VAE /2, UNet 32/64, CLIP 2x32)");
    println!("{:>5} {:>5} {:>7} {:>12} {:>12} {:>8}", "px", "batch", "threads", "dbsweep ms", "pytorch ms", "ratio");
    for (resolution, batch) in [(32, 2), (32, 4), (64, 2), (64, 4)] {
        for threads in [1, 2] {
            let steps = if resolution == 32 { 5 } else { 2 };
            let exe = std::env::current_exe().unwrap();
            let out = Command::new(exe)
                .env(CHILD, format!("{resolution},{batch},{steps}"))
                .env("RAYON_NUM_THREADS", threads.to_string())
                .output()
                .unwrap();
            let ours = ms_from_json(&String::from_utf8_lossy(&out.stdout)).expect("child result");
            let theirs = python.as_ref().and_then(|py| {
                let out = Command::new(py)
                    .current_dir(repo())
                    .args([
                        "benches/torch_step.py",
                        "--resolution",
                        &resolution.to_string(),
                        "--batch",
                        &batch.to_string(),
                    ])
                    .args(["--threads", &threads.to_string(), "--steps", &steps.to_string()])
                    .output()
                    .ok()?;
                ms_from_json(&String::from_utf8_lossy(&out.stdout))
            });
            let (theirs_text, ratio) = match theirs {
                Some(t) => (format!("{t:.1}"), format!("{:.2}x", ours / t)),
                None => ("-".into(), "-".into()),
            };
            println!("{resolution:>5} {batch:>5} {threads:>7} {ours:>12.1} {theirs_text:>12} {ratio:>8}");
        }
    }
    if python.is_none() {
        println!("(no PyTorch: set DBSWEEP_TORCH_PYTHON to a Python with torch + diffusers for the baseline)");
    }
}
