//! Noise schedules: the DDPM forward process used in training and the DDIM sampler, both
//! configured from `scheduler/scheduler_config.json` exactly as diffusers reads it
//! (betas, `steps_offset`, `timestep_spacing`, `set_alpha_to_one`, `prediction_type`,
//! `rescale_betas_zero_snr`), whatever scheduler class the folder names.

use std::path::Path;

use candle_core::{Result as CResult, Tensor};
use serde::{Deserialize, Serialize};

use super::error::{ModelError, Result};

/// What the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise (SD 1.x, SD 2 base).
    Epsilon,
    /// The velocity `sqrt(a) * noise - sqrt(1 - a) * x0` (SD 2.x 768).
    VPrediction,
    /// The clean sample.
    Sample,
}

/// `scheduler/scheduler_config.json`; defaults are diffusers' `DDIMScheduler` defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// Training timesteps.
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    /// First beta.
    #[serde(default = "beta_start")]
    pub beta_start: f64,
    /// Last beta.
    #[serde(default = "beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "linear")]
    pub beta_schedule: String,
    /// Explicit betas, overriding the schedule.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// What the UNet predicts.
    #[serde(default = "epsilon")]
    pub prediction_type: PredictionType,
    /// Added to every inference timestep (`leading` spacing).
    #[serde(default)]
    pub steps_offset: usize,
    /// Whether the final step's "previous" alpha is 1 or `alphas_cumprod[0]`.
    #[serde(default = "yes")]
    pub set_alpha_to_one: bool,
    /// `leading`, `trailing` or `linspace`.
    #[serde(default = "leading")]
    pub timestep_spacing: String,
    /// Clip predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    #[serde(default)]
    pub clip_sample: bool,
    /// See `clip_sample`.
    #[serde(default = "one")]
    pub clip_sample_range: f64,
    /// Rescale betas to zero terminal SNR (Lin et al. 2023).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Dynamic thresholding: not supported (must be false).
    #[serde(default)]
    pub thresholding: bool,
}

fn thousand() -> usize {
    1000
}
fn beta_start() -> f64 {
    0.0001
}
fn beta_end() -> f64 {
    0.02
}
fn linear() -> String {
    "linear".into()
}
fn epsilon() -> PredictionType {
    PredictionType::Epsilon
}
fn yes() -> bool {
    true
}
fn leading() -> String {
    "leading".into()
}
fn one() -> f64 {
    1.0
}

/// The cumulative products of alphas, and the config they came from.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// `alphas_cumprod[t]` for t in 0..num_train_timesteps.
    pub alphas_cumprod: Vec<f64>,
    /// The config.
    pub config: SchedulerConfig,
}

impl NoiseSchedule {
    /// Builds the schedule, rejecting what dbsweep does not implement.
    pub fn new(config: SchedulerConfig, path: &Path) -> Result<Self> {
        let n = config.num_train_timesteps;
        let bad = |key: &str, msg: &str| ModelError::config_key(path, key, msg);
        if config.thresholding {
            return Err(bad("thresholding", "dynamic thresholding is not supported; expected false"));
        }
        if !["leading", "trailing", "linspace"].contains(&config.timestep_spacing.as_str()) {
            return Err(bad("timestep_spacing", "expected leading, trailing or linspace"));
        }
        let mut betas: Vec<f64> = match (&config.trained_betas, config.beta_schedule.as_str()) {
            (Some(b), _) if b.len() == n => b.clone(),
            (Some(_), _) => return Err(bad("trained_betas", "expected num_train_timesteps values")),
            (None, "linear") => linspace(config.beta_start, config.beta_end, n),
            (None, "scaled_linear") => {
                linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n).iter().map(|b| b * b).collect()
            }
            (None, "squaredcos_cap_v2") => {
                let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n).map(|i| (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(0.999)).collect()
            }
            (None, _) => return Err(bad("beta_schedule", "expected linear, scaled_linear or squaredcos_cap_v2")),
        };
        if n == 0 {
            return Err(bad("num_train_timesteps", "expected at least 1"));
        }
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut acc = 1.0;
        let mut alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        if config.rescale_betas_zero_snr {
            // As diffusers: avoid an infinite SNR at the last step.
            *alphas_cumprod.last_mut().expect("n >= 1") = 2f64.powi(-24);
        }
        Ok(Self { alphas_cumprod, config })
    }

    /// `sqrt(a_t)` and `sqrt(1 - a_t)` per example, shaped [b, 1, 1, 1] like `like`.
    fn coefficients(&self, timesteps: &[usize], like: &Tensor) -> CResult<(Tensor, Tensor)> {
        let a: Vec<f32> = timesteps.iter().map(|&t| self.alphas_cumprod[t].sqrt() as f32).collect();
        let s: Vec<f32> = timesteps.iter().map(|&t| (1.0 - self.alphas_cumprod[t]).sqrt() as f32).collect();
        let shape = (timesteps.len(), 1, 1, 1);
        let dev = like.device();
        Ok((
            Tensor::from_vec(a, shape, dev)?.to_dtype(like.dtype())?,
            Tensor::from_vec(s, shape, dev)?.to_dtype(like.dtype())?,
        ))
    }

    /// The forward process: `sqrt(a_t) x0 + sqrt(1 - a_t) noise`, one timestep per example.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> CResult<Tensor> {
        let (a, s) = self.coefficients(timesteps, x0)?;
        x0.broadcast_mul(&a)? + noise.broadcast_mul(&s)?
    }

    /// The training target for the configured prediction type.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> CResult<Tensor> {
        match self.config.prediction_type {
            PredictionType::Epsilon => Ok(noise.clone()),
            PredictionType::Sample => Ok(x0.clone()),
            PredictionType::VPrediction => {
                let (a, s) = self.coefficients(timesteps, x0)?;
                noise.broadcast_mul(&a)? - x0.broadcast_mul(&s)?
            }
        }
    }

    /// Inference timesteps for `steps` sampling steps, highest first (diffusers' DDIM
    /// `set_timesteps`).
    pub fn inference_timesteps(&self, steps: usize) -> Vec<usize> {
        let n = self.config.num_train_timesteps;
        let steps = steps.clamp(1, n);
        let mut ts: Vec<usize> = match self.config.timestep_spacing.as_str() {
            "linspace" => linspace(0.0, (n - 1) as f64, steps).iter().rev().map(|t| t.round() as usize).collect(),
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                (1..=steps).rev().map(|i| ((i as f64 * ratio).round() as usize).saturating_sub(1)).collect()
            }
            _ => {
                let ratio = n / steps;
                (0..steps).rev().map(|i| i * ratio + self.config.steps_offset).collect()
            }
        };
        ts.iter_mut().for_each(|t| *t = (*t).min(n - 1));
        ts
    }

    /// One deterministic DDIM step (eta = 0) from `sample` at `t`, in a `steps`-step schedule,
    /// given the model output. As diffusers, the previous timestep is `t - train/steps`; below 0
    /// it is the "final" alpha (1 with `set_alpha_to_one`, else `alphas_cumprod[0]`).
    pub fn ddim_step(&self, model_output: &Tensor, t: usize, steps: usize, sample: &Tensor) -> CResult<Tensor> {
        let a_t = self.alphas_cumprod[t];
        let prev = t as i64 - (self.config.num_train_timesteps / steps.max(1)) as i64;
        let a_prev = match prev {
            p if p >= 0 => self.alphas_cumprod[p as usize],
            _ if self.config.set_alpha_to_one => 1.0,
            _ => self.alphas_cumprod[0],
        };
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (mut x0, eps) = match self.config.prediction_type {
            PredictionType::Epsilon => (((sample - (model_output * sb)?)? / sa)?, model_output.clone()),
            PredictionType::Sample => (model_output.clone(), ((sample - (model_output * sa)?)? / sb)?),
            PredictionType::VPrediction => {
                ((((sample * sa)? - (model_output * sb)?)?), ((model_output * sa)? + (sample * sb)?)?)
            }
        };
        if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            x0 = x0.clamp(-r, r)?;
        }
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n).map(|i| start + (end - start) * i as f64 / (n - 1) as f64).collect()
}

fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let sqrt_ac: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_ac[0], sqrt_ac[sqrt_ac.len() - 1]);
    let scaled: Vec<f64> = sqrt_ac.iter().map(|s| (s - last) * first / (first - last)).collect();
    let ac: Vec<f64> = scaled.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(ac.len());
    for i in 0..ac.len() {
        let alpha = if i == 0 { ac[0] } else { ac[i] / ac[i - 1] };
        out.push(1.0 - alpha);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(json: &str) -> NoiseSchedule {
        NoiseSchedule::new(serde_json::from_str(json).unwrap(), Path::new("s.json")).unwrap()
    }

    #[test]
    fn sd_scaled_linear_matches_diffusers_values() {
        let s = schedule(r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#);
        // diffusers: DDPMScheduler(beta_start=0.00085, beta_end=0.012, "scaled_linear").alphas_cumprod
        assert!((s.alphas_cumprod[0] - 0.99915).abs() < 1e-9);
        assert!((s.alphas_cumprod[999] - 0.0046600).abs() < 1e-6, "{}", s.alphas_cumprod[999]);
    }

    #[test]
    fn timestep_spacings_follow_diffusers() {
        let lead = schedule(r#"{"steps_offset": 1}"#);
        assert_eq!(lead.inference_timesteps(4), [751, 501, 251, 1]);
        let trail = schedule(r#"{"timestep_spacing": "trailing"}"#);
        assert_eq!(trail.inference_timesteps(4), [999, 749, 499, 249]);
        let lin = schedule(r#"{"timestep_spacing": "linspace"}"#);
        assert_eq!(lin.inference_timesteps(4), [999, 666, 333, 0]);
    }

    #[test]
    fn unsupported_settings_name_the_key() {
        let cfg: SchedulerConfig = serde_json::from_str(r#"{"beta_schedule": "sigmoid"}"#).unwrap();
        let err = NoiseSchedule::new(cfg, Path::new("s.json")).unwrap_err().to_string();
        assert!(err.contains("key `beta_schedule`"), "{err}");
    }
}
