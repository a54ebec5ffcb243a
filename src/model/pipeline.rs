//! A Stable Diffusion model folder loaded for training and sampling, and the DDIM sampler
//! with classifier-free guidance.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::attention::AttentionMode;
use super::clip::{ClipTextConfig, ClipTextModel};
use super::error::{ModelError, Result};
use super::noise_schedule::{NoiseSchedule, SchedulerConfig};
use super::tokenizer::ClipTokenizer;
use super::unet::{UNet2DConditionModel, UNetConfig};
use super::vae::{AutoencoderKL, VaeConfig};
use super::{json, weights};
use crate::rng::Rng;

/// Every component of a diffusers-layout Stable Diffusion folder.
pub struct StableDiffusion {
    /// The folder.
    pub folder: PathBuf,
    /// Denoiser (trainable; its variables are `unet_vars`).
    pub unet: UNet2DConditionModel,
    /// The UNet's variables, named as diffusers names them.
    pub unet_vars: VarMap,
    /// The UNet's config.
    pub unet_config: UNetConfig,
    /// Text encoder (trainable; its variables are `text_vars`).
    pub text_encoder: ClipTextModel,
    /// The text encoder's variables (`text_model.*`).
    pub text_vars: VarMap,
    /// The text encoder's config.
    pub text_config: ClipTextConfig,
    /// Autoencoder (frozen).
    pub vae: AutoencoderKL,
    /// Tokenizer.
    pub tokenizer: ClipTokenizer,
    /// Noise schedule and sampler settings.
    pub schedule: NoiseSchedule,
    /// Where tensors live.
    pub device: Device,
}

/// What to sample.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    /// Prompt.
    pub prompt: String,
    /// Negative prompt (the unconditional branch of guidance).
    pub negative_prompt: String,
    /// DDIM steps.
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less disables guidance.
    pub guidance: f64,
    /// Seed of image 0; image i uses `seed + i`.
    pub seed: u64,
    /// Number of images.
    pub count: usize,
    /// Image height and width in pixels.
    pub size: (usize, usize),
    /// Initial latents [count, channels, h, w] instead of seeded noise.
    pub latents: Option<Tensor>,
}

impl SampleRequest {
    /// `count` square images of `size` pixels from `prompt` with seeded noise and no negative
    /// prompt.
    pub fn seeded(prompt: &str, steps: usize, guidance: f64, seed: u64, count: usize, size: usize) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            steps,
            guidance,
            seed,
            count,
            size: (size, size),
            latents: None,
        }
    }
}

/// What a sample returned.
pub struct Samples {
    /// Images [count, 3, h, w] in [0, 1].
    pub images: Tensor,
    /// Final latents before decoding.
    pub latents: Tensor,
}

/// `folder/file`, which must exist (a diffusers folder's component).
pub(super) fn component(folder: &Path, file: &str) -> Result<PathBuf> {
    let path = folder.join(file);
    if path.exists() {
        Ok(path)
    } else {
        Err(ModelError::Layout {
            folder: folder.to_path_buf(),
            what: file.to_string(),
            expected: "a diffusers save_pretrained folder".into(),
        })
    }
}

impl StableDiffusion {
    /// Loads the folder written by diffusers' `save_pretrained` (or by dbsweep).
    pub fn load(folder: &Path, device: &Device, mode: AttentionMode) -> Result<Self> {
        if !folder.is_dir() {
            return Err(ModelError::Layout {
                folder: folder.to_path_buf(),
                what: "the folder".into(),
                expected: "a diffusers model folder".into(),
            });
        }
        let unet_cfg_path = component(folder, "unet/config.json")?;
        let unet_config: UNetConfig = json::read(&unet_cfg_path)?;
        let unet_vars = VarMap::new();
        let unet = UNet2DConditionModel::new(
            VarBuilder::from_varmap(&unet_vars, DType::F32, device),
            &unet_config,
            &unet_cfg_path,
            mode,
        )?;
        weights::load_into(&unet_vars, &component(folder, "unet/diffusion_pytorch_model.safetensors")?)?;

        let text_cfg_path = component(folder, "text_encoder/config.json")?;
        let text_config: ClipTextConfig = json::read(&text_cfg_path)?;
        let text_vars = VarMap::new();
        let text_encoder =
            ClipTextModel::new(VarBuilder::from_varmap(&text_vars, DType::F32, device), &text_config, &text_cfg_path)?;
        weights::load_into(&text_vars, &component(folder, "text_encoder/model.safetensors")?)?;

        let vae_cfg_path = component(folder, "vae/config.json")?;
        let vae_config: VaeConfig = json::read(&vae_cfg_path)?;
        let vae_vars = VarMap::new();
        AutoencoderKL::new(VarBuilder::from_varmap(&vae_vars, DType::F32, device), &vae_config, &vae_cfg_path)?;
        weights::load_into(&vae_vars, &component(folder, "vae/diffusion_pytorch_model.safetensors")?)?;
        // The VAE is never trained: built on detached weights, its passes record no graph, so
        // encoding keeps no intermediates alive and costs no backward bookkeeping.
        let frozen = vae_vars
            .data()
            .lock()
            .expect("variable map lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let vae = AutoencoderKL::new(VarBuilder::from_tensors(frozen, DType::F32, device), &vae_config, &vae_cfg_path)?;

        let tokenizer = ClipTokenizer::load(&folder.join("tokenizer"))?;
        let sched_path = component(folder, "scheduler/scheduler_config.json")?;
        let schedule = NoiseSchedule::new(json::read::<SchedulerConfig>(&sched_path)?, &sched_path)?;
        Ok(Self {
            folder: folder.to_path_buf(),
            unet,
            unet_vars,
            unet_config,
            text_encoder,
            text_vars,
            text_config,
            vae,
            tokenizer,
            schedule,
            device: device.clone(),
        })
    }

    /// Pixels per latent cell: 2^(VAE levels - 1) (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.vae.config.block_out_channels.len() - 1)
    }

    /// The default image size: the UNet's sample size times the VAE scale factor.
    pub fn default_size(&self) -> usize {
        self.unet_config.sample_size.unwrap_or(64) * self.vae_scale_factor()
    }

    /// Token ids of `prompts` as a [n, max_len] u32 tensor.
    pub fn token_ids(&self, prompts: &[&str]) -> Result<Tensor> {
        let mut ids = Vec::new();
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?);
        }
        Ok(Tensor::from_vec(ids, (prompts.len(), self.tokenizer.max_len()), &self.device)?)
    }

    /// Samples images with DDIM (eta 0) and classifier-free guidance, as diffusers'
    /// `StableDiffusionPipeline` does (unconditional and conditional in one batch).
    pub fn sample(&self, req: &SampleRequest) -> Result<Samples> {
        let f = self.vae_scale_factor();
        let (h, w) = (req.size.0 / f, req.size.1 / f);
        let channels = self.unet_config.in_channels;
        let mut latents = match &req.latents {
            Some(l) => l.to_device(&self.device)?.to_dtype(DType::F32)?,
            None => {
                let per = channels * h * w;
                let data: Vec<f32> =
                    (0..req.count).flat_map(|i| Rng::new(req.seed.wrapping_add(i as u64)).normals_f32(per)).collect();
                Tensor::from_vec(data, (req.count, channels, h, w), &self.device)?
            }
        };
        let n = latents.dim(0)?;
        let guided = req.guidance > 1.0;
        let cond = self.text_encoder.forward(&self.token_ids(&[&req.prompt])?)?;
        let context = if guided {
            let uncond = self.text_encoder.forward(&self.token_ids(&[&req.negative_prompt])?)?;
            Tensor::cat(&[uncond.repeat((n, 1, 1))?, cond.repeat((n, 1, 1))?], 0)?
        } else {
            cond.repeat((n, 1, 1))?
        };
        for t in self.schedule.inference_timesteps(req.steps) {
            let input = if guided { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let ts = Tensor::full(t as f32, input.dim(0)?, &self.device)?;
            let out = self.unet.forward(&input, &ts, &context)?;
            let pred = if guided {
                let (uncond, cond) = (out.narrow(0, 0, n)?, out.narrow(0, n, n)?);
                (&uncond + ((cond - &uncond)? * req.guidance)?)?
            } else {
                out
            };
            latents = self.schedule.ddim_step(&pred, t, req.steps, &latents)?;
        }
        let decoded = self.vae.decode(&self.vae.unscale(&latents)?)?;
        let images = ((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        Ok(Samples { images, latents })
    }
}
