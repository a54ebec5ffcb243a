//! diffusers' `AutoencoderKL`, used frozen: images to latents and back.

use std::path::Path;

use candle_core::{D, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::activation::silu;
use super::attention::{AttentionMode, attention};
use super::conv::Conv2d;
use super::error::{ModelError, Result};
use super::group_norm::GroupNorm;
use super::nn::{Linear, linear};
use super::unet::ResnetBlock2D;

/// `vae/config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// Group-norm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latents are scaled by this for the UNet.
    #[serde(default = "scaling")]
    pub scaling_factor: f64,
    /// Shift subtracted before scaling (SD 3 style; null for SD 1/2).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// A 1x1 convolution after the encoder.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// A 1x1 convolution before the decoder.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Attention in the mid blocks.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn scaling() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug)]
struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Option<(GroupNorm, Linear, Linear, Linear, Linear)>,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    fn new(vb: VarBuilder, c: usize, groups: usize, with_attention: bool) -> CResult<Self> {
        let attention = if with_attention {
            let a = vb.pp("attentions.0");
            Some((
                GroupNorm::new(groups, c, 1e-6, a.pp("group_norm"))?,
                linear(c, c, true, a.pp("to_q"))?,
                linear(c, c, true, a.pp("to_k"))?,
                linear(c, c, true, a.pp("to_v"))?,
                linear(c, c, true, a.pp("to_out.0"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            resnet0: ResnetBlock2D::new(vb.pp("resnets.0"), c, c, None, groups, 1e-6)?,
            attention,
            resnet1: ResnetBlock2D::new(vb.pp("resnets.1"), c, c, None, groups, 1e-6)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let mut xs = self.resnet0.forward(xs, None)?;
        if let Some((norm, q, k, v, out)) = &self.attention {
            let (b, c, h, w) = xs.dims4()?;
            let tokens = norm.forward(&xs)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
            let attended = attention(
                &q.forward(&tokens)?,
                &k.forward(&tokens)?,
                &v.forward(&tokens)?,
                1,
                false,
                AttentionMode::Full,
            )?;
            let attended = out.forward(&attended)?.transpose(1, 2)?.reshape((b, c, h, w))?;
            xs = (attended + xs)?;
        }
        self.resnet1.forward(&xs, None)
    }
}

#[derive(Clone, Debug)]
struct Level {
    resnets: Vec<ResnetBlock2D>,
    resample: Option<Conv2d>,
}

/// The variational autoencoder.
#[derive(Clone, Debug)]
pub struct AutoencoderKL {
    enc_conv_in: Conv2d,
    enc_levels: Vec<Level>,
    enc_mid: MidBlock,
    enc_norm_out: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: MidBlock,
    dec_levels: Vec<Level>,
    dec_norm_out: GroupNorm,
    dec_conv_out: Conv2d,
    /// The config it was built from.
    pub config: VaeConfig,
}

/// The encoder's diagonal Gaussian over latents.
#[derive(Clone, Debug)]
pub struct LatentDistribution {
    /// Mean [b, latent, h/8, w/8].
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl AutoencoderKL {
    /// Builds the autoencoder described by `cfg` (read from `path`) under `vb`.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig, path: &Path) -> Result<Self> {
        let g = cfg.norm_num_groups;
        if cfg.block_out_channels.is_empty() || cfg.block_out_channels.iter().any(|c| g == 0 || c % g != 0) {
            return Err(ModelError::config_key(
                path,
                "block_out_channels",
                "must be non-empty multiples of norm_num_groups",
            ));
        }
        Ok(Self::build(vb, cfg)?)
    }

    fn build(vb: VarBuilder, cfg: &VaeConfig) -> CResult<Self> {
        let (g, chans, n, lat) =
            (cfg.norm_num_groups, &cfg.block_out_channels, cfg.block_out_channels.len(), cfg.latent_channels);
        let enc = vb.pp("encoder");
        let mut enc_levels = Vec::new();
        for (i, &c) in chans.iter().enumerate() {
            let vb = enc.pp("down_blocks").pp(i.to_string());
            let cin = if i == 0 { chans[0] } else { chans[i - 1] };
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::new(
                        vb.pp("resnets").pp(j.to_string()),
                        if j == 0 { cin } else { c },
                        c,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<CResult<_>>()?;
            let resample = (i + 1 < n).then(|| Conv2d::new(c, c, 3, 2, 0, vb.pp("downsamplers.0.conv"))).transpose()?;
            enc_levels.push(Level { resnets, resample });
        }
        let top = chans[n - 1];
        let dec = vb.pp("decoder");
        let mut dec_levels = Vec::new();
        let mut prev = top;
        for i in 0..n {
            let c = chans[n - 1 - i];
            let vb = dec.pp("up_blocks").pp(i.to_string());
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::new(
                        vb.pp("resnets").pp(j.to_string()),
                        if j == 0 { prev } else { c },
                        c,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<CResult<_>>()?;
            let resample = (i + 1 < n).then(|| Conv2d::new(c, c, 3, 1, 1, vb.pp("upsamplers.0.conv"))).transpose()?;
            dec_levels.push(Level { resnets, resample });
            prev = c;
        }
        Ok(Self {
            enc_conv_in: Conv2d::new(cfg.in_channels, chans[0], 3, 1, 1, enc.pp("conv_in"))?,
            enc_levels,
            enc_mid: MidBlock::new(enc.pp("mid_block"), top, g, cfg.mid_block_add_attention)?,
            enc_norm_out: GroupNorm::new(g, top, 1e-6, enc.pp("conv_norm_out"))?,
            enc_conv_out: Conv2d::new(top, 2 * lat, 3, 1, 1, enc.pp("conv_out"))?,
            quant_conv: cfg
                .use_quant_conv
                .then(|| Conv2d::new(2 * lat, 2 * lat, 1, 1, 0, vb.pp("quant_conv")))
                .transpose()?,
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| Conv2d::new(lat, lat, 1, 1, 0, vb.pp("post_quant_conv")))
                .transpose()?,
            dec_conv_in: Conv2d::new(lat, top, 3, 1, 1, dec.pp("conv_in"))?,
            dec_mid: MidBlock::new(dec.pp("mid_block"), top, g, cfg.mid_block_add_attention)?,
            dec_levels,
            dec_norm_out: GroupNorm::new(g, chans[0], 1e-6, dec.pp("conv_norm_out"))?,
            dec_conv_out: Conv2d::new(chans[0], cfg.out_channels, 3, 1, 1, dec.pp("conv_out"))?,
            config: cfg.clone(),
        })
    }

    /// Encodes images [b, 3, h, w] in [-1, 1] into the latent distribution (unscaled).
    pub fn encode(&self, images: &Tensor) -> CResult<LatentDistribution> {
        let mut xs = self.enc_conv_in.forward(images)?;
        for level in &self.enc_levels {
            for r in &level.resnets {
                xs = r.forward(&xs, None)?;
            }
            if let Some(conv) = &level.resample {
                xs = conv.forward(&xs.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1)?)?;
            }
        }
        xs = self.enc_mid.forward(&xs)?;
        xs = self.enc_conv_out.forward(&silu(&self.enc_norm_out.forward(&xs)?)?)?;
        if let Some(conv) = &self.quant_conv {
            xs = conv.forward(&xs)?;
        }
        let halves = xs.chunk(2, 1)?;
        Ok(LatentDistribution { mean: halves[0].clone(), logvar: halves[1].clamp(-30f32, 20f32)? })
    }

    /// Decodes unscaled latents [b, latent, h, w] into images [b, 3, 8h, 8w] (about [-1, 1]).
    pub fn decode(&self, latents: &Tensor) -> CResult<Tensor> {
        let mut xs = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        xs = self.dec_mid.forward(&self.dec_conv_in.forward(&xs)?)?;
        for level in &self.dec_levels {
            for r in &level.resnets {
                xs = r.forward(&xs, None)?;
            }
            if let Some(conv) = &level.resample {
                let (_, _, h, w) = xs.dims4()?;
                xs = conv.forward(&xs.upsample_nearest2d(h * 2, w * 2)?)?;
            }
        }
        self.dec_conv_out.forward(&silu(&self.dec_norm_out.forward(&xs)?)?)
    }

    /// Latents as the UNet sees them: `(mean - shift) * scaling_factor`.
    pub fn scale(&self, latents: &Tensor) -> CResult<Tensor> {
        (latents - self.config.shift_factor.unwrap_or(0.0))? * self.config.scaling_factor
    }

    /// Inverse of [`AutoencoderKL::scale`].
    pub fn unscale(&self, latents: &Tensor) -> CResult<Tensor> {
        (latents / self.config.scaling_factor)? + self.config.shift_factor.unwrap_or(0.0)
    }
}
