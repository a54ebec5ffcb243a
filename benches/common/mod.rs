//! What the benchmarks share: running the release `dbsweep` binary in a scratch output root,
//! and one training step as the trainer computes it.

#![allow(dead_code)] // each benchmark uses what it needs

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use dbsweep::config::ExperimentConfig;
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::pipeline::StableDiffusion;
use dbsweep::rng::Rng;
use dbsweep::train::loss::dreambooth_loss;
use dbsweep::train::optimizer::{AdamW, AdamWConfig};
use dbsweep::train::trainable::Trainable;

/// Runs `dbsweep --root ROOT ARGS...` from the repository root; returns its wall time in
/// seconds and its standard output. Panics with its standard error when it fails.
pub fn dbsweep(root: &Path, args: &[&str]) -> (f64, String) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("dbsweep runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (start.elapsed().as_secs_f64(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One DreamBooth training step of a model as the trainer computes it (VAE encode, text
/// encoder, UNet forward and backward with the run's trainable modules, AdamW), on random
/// images of one size; `batch` rows, half instance and half class prompts. With cached
/// latents the images are encoded once, as the trainer does for centre-cropped images, and
/// each step only samples from their latent distributions.
pub struct StepRig {
    /// The model.
    pub model: StableDiffusion,
    /// What is trained.
    pub trainable: Trainable,
    /// The optimiser.
    pub optimizer: AdamW,
    ids: Tensor,
    images: Tensor,
    /// The images' latent mean and log-variance, when they are encoded once.
    cached: Option<(Tensor, Tensor)>,
    rng: Rng,
    train_text: bool,
    mode: AttentionMode,
}

impl StepRig {
    /// The model in `folder` set up for `cfg` (its method, optimiser, savers, text encoder),
    /// attending as `mode` says; `cache_latents` encodes the images once instead of every step.
    pub fn new(
        folder: &Path,
        cfg: &ExperimentConfig,
        resolution: usize,
        batch: usize,
        mode: AttentionMode,
        cache_latents: bool,
    ) -> Self {
        let dev = Device::Cpu;
        let mut model = StableDiffusion::load(folder, &dev, mode).unwrap();
        let trainable = Trainable::new(cfg, &mut model, DType::F32).unwrap();
        let half = batch / 2;
        let prompts: Vec<&str> =
            (0..batch).map(|i| if i < half { "a photo of sks dog" } else { "a photo of a dog" }).collect();
        let ids = model.token_ids(&prompts).unwrap();
        let mut rng = Rng::new(0);
        let images: Vec<f32> =
            (0..batch * 3 * resolution * resolution).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let images = Tensor::from_vec(images, (batch, 3, resolution, resolution), &dev).unwrap();
        let adam = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
        let optimizer = AdamW::new(trainable.parameters(&model), adam, cfg.train.optimizer).unwrap();
        let cached = cache_latents.then(|| {
            let dist = model.vae.encode(&images).unwrap();
            (dist.mean.detach(), dist.logvar.detach())
        });
        let train_text = cfg.train.train_text_encoder;
        Self { model, trainable, optimizer, ids, images, cached, rng, train_text, mode }
    }

    /// One step; returns its loss.
    pub fn step(&mut self) -> f32 {
        let (model, dev) = (&self.model, Device::Cpu);
        let rng = &mut self.rng;
        let (mean, logvar) = match &self.cached {
            Some(cached) => cached.clone(),
            None => {
                let dist = model.vae.encode(&self.images).unwrap();
                (dist.mean, dist.logvar)
            }
        };
        let eps = Tensor::from_vec(rng.normals_f32(mean.elem_count()), mean.shape(), &dev).unwrap();
        let latents = (&mean + ((&logvar * 0.5).unwrap().exp().unwrap() * eps).unwrap()).unwrap();
        let latents = model.vae.scale(&latents).unwrap().detach();
        let noise = Tensor::from_vec(rng.normals_f32(latents.elem_count()), latents.shape(), &dev).unwrap();
        let ts: Vec<usize> = (0..latents.dim(0).unwrap()).map(|_| rng.below(1000) as usize).collect();
        let noisy = model.schedule.add_noise(&latents, &noise, &ts).unwrap();
        let built = self.trainable.step_models(model, DType::F32, self.train_text, self.mode, 0).unwrap();
        let unet = built.as_ref().map_or(&model.unet, |b| &b.unet);
        let hidden = match built.as_ref().and_then(|b| b.text_encoder.as_ref()) {
            Some(text) => text.forward(&self.ids).unwrap(),
            None if self.train_text => model.text_encoder.forward(&self.ids).unwrap(),
            None => model.text_encoder.forward(&self.ids).unwrap().detach(),
        };
        let t = Tensor::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), &dev).unwrap();
        let pred = unet.forward(&noisy, &t, &hidden).unwrap();
        let loss = dreambooth_loss(&pred, &noise, 0.7).unwrap();
        let mut grads = loss.backward().unwrap();
        self.trainable.merge_recomputed(&mut grads).unwrap();
        self.optimizer.step(&grads, 5e-6, 1.0).unwrap();
        loss.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Milliseconds per step over `steps` steps after one warm-up step.
    pub fn time(&mut self, steps: usize) -> f64 {
        self.step();
        let start = Instant::now();
        for _ in 0..steps {
            assert!(self.step().is_finite());
        }
        start.elapsed().as_secs_f64() * 1000.0 / steps as f64
    }
}

/// The run of median time among `runs`, `time` giving each run's (`None` for no runs).
pub fn median_by<T: Copy>(runs: &mut [T], time: impl Fn(&T) -> f64) -> Option<T> {
    runs.sort_by(|a, b| time(a).total_cmp(&time(b)));
    runs.get(runs.len() / 2).copied()
}

/// Peak resident memory of this process, in MiB.
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}
