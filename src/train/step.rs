//! One optimiser step: its micro-batches (examples drawn in the epoch's order, noise,
//! timesteps, the forward and backward pass), gradient accumulation, clipping, loss scaling
//! and the AdamW update.
//!
//! Determinism: every random choice derives from the run seed and the position (epoch, step,
//! micro-batch) through the project's generator, never from generator state carried between
//! steps. A checkpoint therefore only needs the step, and a run resumed from step S draws
//! exactly what the uninterrupted run drew after S.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::data::{self, Crop};
use super::error::TrainError;
use super::example::Example;
use super::loss::loss_terms;
use super::lr_schedule::learning_rate;
use super::optimizer::clip_factor;
use super::prepare::Setup;
use crate::config::ExperimentConfig;
use crate::model::noise_schedule::PredictionType;
use crate::rng::Rng;

/// A fresh stream for one purpose at one position (seed, tag, a, b).
pub fn stream(seed: u64, tag: &str, a: u64, b: u64) -> Rng {
    let key = format!("{seed}|{tag}|{a}|{b}");
    Rng::new(xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// The shuffled example order, drawn once per epoch from the run seed and the epoch.
pub struct EpochOrder {
    seed: u64,
    len: usize,
    epoch: Option<u64>,
    order: Vec<usize>,
}

impl EpochOrder {
    /// The order of a run with `seed` and `len` examples per epoch.
    pub fn new(seed: u64, len: usize) -> Self {
        Self { seed, len, epoch: None, order: Vec::new() }
    }

    /// The example at position `pos` of the whole run (epoch `pos / len`).
    fn at(&mut self, pos: usize) -> usize {
        let epoch = (pos / self.len) as u64;
        if self.epoch != Some(epoch) {
            self.order = permutation(self.len, &mut stream(self.seed, "order", epoch, 0));
            self.epoch = Some(epoch);
        }
        self.order[pos % self.len]
    }
}

/// A permutation of `0..n` (Fisher-Yates).
fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

/// What one optimiser step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The loss (instance + weighted prior), summed over micro-batches.
    pub loss: f64,
    /// The instance term.
    pub instance_loss: f64,
    /// The prior-preservation term.
    pub prior_loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The global gradient norm (before clipping, after unscaling).
    pub grad_norm: f64,
    /// The fp16 loss scale used (1 without scaling).
    pub loss_scale: f64,
    /// Whether the update was applied (an fp16 step whose gradients overflowed is skipped).
    pub applied: bool,
}

impl Setup {
    /// Runs optimiser step `step` (0-based: the step about to be done) of a run with `cfg`,
    /// drawing examples in `order`.
    pub fn step(
        &mut self,
        cfg: &ExperimentConfig,
        step: u64,
        order: &mut EpochOrder,
    ) -> Result<StepReport, TrainError> {
        let t = &cfg.train;
        let device = self.model.device.clone();
        let (batch, accum) = (self.schedule.batch, self.schedule.accum);
        let prior = t.with_prior_preservation;
        let train_text = t.train_text_encoder && t.stop_text_encoder_after.is_none_or(|s| step < s);
        let alphas = &self.model.schedule.alphas_cumprod;
        let prediction = self.model.schedule.config.prediction_type;
        let mut grads: Option<GradStore> = None;
        let (mut loss_sum, mut inst_sum, mut prior_sum) = (0f64, 0f64, 0f64);
        // This step's modules: casts of the f32 masters under mixed precision, the frozen base
        // with the adapters for LoRA (rebuilt per micro-batch when adapter dropout draws masks).
        let modules = |micro: u64| {
            let key = stream(cfg.seed, "lora-dropout", step, micro).next_u64();
            self.trainable.step_models(&self.model, self.dtype, train_text, self.mode, key)
        };
        let mut built = modules(0)?;
        let model = &self.model;
        let loss_scale = self.resume.scaler.map_or(1.0, |s| s.scale);
        for micro in 0..accum {
            let m = step * accum + micro;
            let mut rng = stream(cfg.seed, "step", step, micro);
            let mut pick = |examples: &[Example], rng: &mut Rng| -> Result<Tensor, TrainError> {
                let mut rows = Vec::with_capacity(batch);
                for b in 0..batch as u64 {
                    let index = order.at((m * batch as u64 + b) as usize) % examples.len();
                    let flip = rng.below(2) == 1;
                    let encoded;
                    let dist = match &examples[index] {
                        Example::Cached { flipped: Some(f), .. } if flip => f,
                        Example::Cached { plain, .. } => plain,
                        Example::RandomCrop(file) => {
                            let flip = flip && cfg.data.random_flip;
                            let image = data::load(file, cfg.data.resolution, Crop::Random, flip, rng, &device)?;
                            let d = model.vae.encode(&image.unsqueeze(0)?)?;
                            encoded = Tensor::cat(&[&d.mean, &d.logvar], 0)?.detach();
                            &encoded
                        }
                    };
                    let (mean, logvar) = (dist.get(0)?, dist.get(1)?);
                    let eps = Tensor::from_vec(rng.normals_f32(mean.elem_count()), mean.shape(), &device)?;
                    rows.push((mean + ((logvar * 0.5)?.exp()? * eps)?)?);
                }
                Ok(Tensor::stack(&rows, 0)?)
            };
            if micro > 0 && self.trainable.per_micro_batch() {
                built = modules(micro)?;
            }
            let unet = built.as_ref().map_or(&model.unet, |b| &b.unet);
            let text_encoder = built.as_ref().and_then(|b| b.text_encoder.as_ref()).unwrap_or(&model.text_encoder);
            let forced = self.inputs.as_ref().map(|i| i.micro_batch(step, micro)).transpose()?.flatten();
            let (x0, noise, timesteps) = match forced {
                Some(given) => (given.latents, given.noise, given.timesteps),
                None => {
                    let mut x0 = pick(&self.instance, &mut rng)?;
                    if prior {
                        let class_rows = pick(&self.class, &mut rng)?;
                        x0 = Tensor::cat(&[&x0, &class_rows], 0)?;
                    }
                    let x0 = model.vae.scale(&x0)?.detach();
                    let n = x0.dim(0)?;
                    let mut noise = Tensor::from_vec(rng.normals_f32(x0.elem_count()), x0.shape(), &device)?;
                    if t.offset_noise > 0.0 {
                        let (c, shape) = (x0.dim(1)?, (n, x0.dim(1)?, 1, 1));
                        let offset = Tensor::from_vec(rng.normals_f32(n * c), shape, &device)?;
                        noise = (noise.broadcast_add(&(offset * t.offset_noise)?))?;
                    }
                    let timesteps: Vec<usize> = (0..n).map(|_| rng.below(alphas.len() as u64) as usize).collect();
                    (x0, noise, timesteps)
                }
            };
            let noisy = model.schedule.add_noise(&x0, &noise, &timesteps)?;
            let target = model.schedule.target(&x0, &noise, &timesteps)?;
            let context = match &self.frozen_context {
                _ if train_text => text_encoder.forward(&self.ids)?,
                Some(context) => context.clone(),
                None => self
                    .frozen_context
                    .insert(model.text_encoder.forward(&self.ids)?.detach().to_dtype(self.dtype)?)
                    .clone(),
            };
            let ts = Tensor::new(timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>(), &device)?;
            let pred = unet.forward(&noisy.to_dtype(self.dtype)?, &ts, &context)?.to_dtype(DType::F32)?;
            let weights = t.snr_gamma.map(|gamma| {
                let w: Vec<f32> = timesteps
                    .iter()
                    .map(|&t| {
                        let snr = alphas[t] / (1.0 - alphas[t]);
                        let base = gamma.min(snr) / snr;
                        (if prediction == PredictionType::VPrediction { gamma.min(snr) / (snr + 1.0) } else { base })
                            as f32
                    })
                    .collect();
                Tensor::new(w, &device)
            });
            let weights = weights.transpose()?;
            let (inst, prior_term) = loss_terms(&pred, &target, weights.as_ref(), prior)?;
            let loss = ((&inst + (&prior_term * t.prior_loss_weight)?)? / accum as f64)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            inst_sum += inst.to_scalar::<f32>()? as f64 / accum as f64;
            prior_sum += prior_term.to_scalar::<f32>()? as f64 / accum as f64;
            let mut g = if loss_scale == 1.0 { loss.backward()? } else { (&loss * loss_scale)?.backward()? };
            self.trainable.merge_recomputed(&mut g)?;
            grads = Some(match grads {
                None => g,
                Some(acc) => self.accumulate(acc, &g)?,
            });
        }
        // A frozen or stopped text encoder has no gradients, so AdamW leaves it untouched.
        let grads = grads.expect("at least one micro-batch");
        let norm = self.optimizer.grad_norm(&grads)? / loss_scale;
        let total = self.schedule.total;
        let lr = learning_rate(t.lr_scheduler, t.learning_rate, step, t.lr_warmup_steps, total, t.lr_power);
        // f16: an overflowing step is skipped and the scale halved (see `precision`).
        let applied =
            self.resume.scaler.as_mut().is_none_or(|s| s.update(norm.is_finite(), t.loss_scale_growth_interval));
        if applied {
            self.optimizer.step(&grads, lr, clip_factor(norm, t.max_grad_norm) / loss_scale)?;
        }
        Ok(StepReport {
            loss: loss_sum,
            instance_loss: inst_sum,
            prior_loss: prior_sum,
            lr,
            grad_norm: norm,
            loss_scale,
            applied,
        })
    }

    /// `acc` with the gradients of `g` added, for every trained variable.
    fn accumulate(&self, mut acc: GradStore, g: &GradStore) -> Result<GradStore, TrainError> {
        for (_, slot) in &self.optimizer.slots {
            if let Some(new) = g.get(slot.var.as_tensor()) {
                let sum = match acc.get(slot.var.as_tensor()) {
                    Some(old) => (old + new)?,
                    None => new.clone(),
                };
                acc.insert(slot.var.as_tensor(), sum);
            }
        }
        Ok(acc)
    }
}
