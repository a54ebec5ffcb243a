//! diffusers' `UNet2DConditionModel` (SD 1.x and 2.x), trainable, with one timestep per
//! example.
//!
//! Weight names equal diffusers' `state_dict` names, so a diffusers checkpoint loads without a
//! renaming table.

mod blocks;
mod config;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

pub use blocks::{ResnetBlock2D, Transformer2D, TransformerSpec};
pub use config::{Level, UNetConfig};

use super::activation::silu;
use super::attention::AttentionMode;
use super::conv::Conv2d;
use super::error::Result;
use super::group_norm::GroupNorm;
use super::nn::{Linear, VisitLinears, linear};
use super::recompute::Recompute;

#[derive(Clone, Debug)]
struct Block {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    resample: Option<Conv2d>,
}

impl VisitLinears for Block {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        self.resnets.visit_linears(f);
        self.attentions.visit_linears(f);
    }
}

/// The denoising UNet.
#[derive(Clone, Debug)]
pub struct UNet2DConditionModel {
    time_channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    time_linear_1: Linear,
    time_linear_2: Linear,
    conv_in: Conv2d,
    down: Vec<Block>,
    mid: (ResnetBlock2D, Transformer2D, ResnetBlock2D),
    up: Vec<Block>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Gradient checkpointing of every resnet and transformer block, when set.
    recompute: Option<Arc<Recompute>>,
}

impl UNet2DConditionModel {
    /// Builds the UNet described by `config` (read from `path`, for error messages) under `vb`.
    pub fn new(vb: VarBuilder, config: &UNetConfig, path: &Path, mode: AttentionMode) -> Result<Self> {
        let levels = config.levels(path)?;
        Ok(Self::build(vb, config, &levels, mode)?)
    }

    fn build(vb: VarBuilder, cfg: &UNetConfig, levels: &[Level], mode: AttentionMode) -> CResult<Self> {
        let (groups, eps, n) = (cfg.norm_num_groups, cfg.norm_eps, levels.len());
        let c0 = levels[0].channels;
        let temb_dim = c0 * 4;
        let spec = |l: &Level| TransformerSpec {
            channels: l.channels,
            heads: l.heads,
            layers: l.transformer_layers,
            context_dim: l.cross_attention_dim,
            groups,
            linear_projection: cfg.use_linear_projection,
            mode,
        };
        let mut down = Vec::with_capacity(n);
        for (i, l) in levels.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i.to_string());
            let in_ch = if i == 0 { c0 } else { levels[i - 1].channels };
            let resnets = (0..l.layers)
                .map(|j| {
                    let cin = if j == 0 { in_ch } else { l.channels };
                    ResnetBlock2D::new(vb.pp("resnets").pp(j.to_string()), cin, l.channels, Some(temb_dim), groups, eps)
                })
                .collect::<CResult<_>>()?;
            let attentions = if l.attention {
                (0..l.layers)
                    .map(|j| Transformer2D::new(vb.pp("attentions").pp(j.to_string()), spec(l)))
                    .collect::<CResult<_>>()?
            } else {
                Vec::new()
            };
            let resample = (i + 1 < n)
                .then(|| {
                    Conv2d::new(l.channels, l.channels, 3, 2, cfg.downsample_padding, vb.pp("downsamplers.0.conv"))
                })
                .transpose()?;
            down.push(Block { resnets, attentions, resample });
        }
        let last = &levels[n - 1];
        let mvb = vb.pp("mid_block");
        let mid = (
            ResnetBlock2D::new(mvb.pp("resnets.0"), last.channels, last.channels, Some(temb_dim), groups, eps)?,
            Transformer2D::new(mvb.pp("attentions.0"), spec(last))?,
            ResnetBlock2D::new(mvb.pp("resnets.1"), last.channels, last.channels, Some(temb_dim), groups, eps)?,
        );
        let mut up = Vec::with_capacity(n);
        let mut prev_out = last.channels;
        for i in 0..n {
            let l = &levels[n - 1 - i];
            let skip_in = levels[(n - 1 - i).saturating_sub(1)].channels;
            let skip_in = if i == n - 1 { c0 } else { skip_in };
            let vb = vb.pp("up_blocks").pp(i.to_string());
            let layers = l.layers + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { skip_in } else { l.channels };
                    let cin = if j == 0 { prev_out } else { l.channels };
                    ResnetBlock2D::new(
                        vb.pp("resnets").pp(j.to_string()),
                        cin + skip,
                        l.channels,
                        Some(temb_dim),
                        groups,
                        eps,
                    )
                })
                .collect::<CResult<_>>()?;
            let attentions = if l.attention {
                (0..layers)
                    .map(|j| Transformer2D::new(vb.pp("attentions").pp(j.to_string()), spec(l)))
                    .collect::<CResult<_>>()?
            } else {
                Vec::new()
            };
            let resample = (i + 1 < n)
                .then(|| Conv2d::new(l.channels, l.channels, 3, 1, 1, vb.pp("upsamplers.0.conv")))
                .transpose()?;
            up.push(Block { resnets, attentions, resample });
            prev_out = l.channels;
        }
        Ok(Self {
            time_channels: c0,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            time_linear_1: linear(c0, temb_dim, true, vb.pp("time_embedding.linear_1"))?,
            time_linear_2: linear(temb_dim, temb_dim, true, vb.pp("time_embedding.linear_2"))?,
            conv_in: Conv2d::new(cfg.in_channels, c0, 3, 1, 1, vb.pp("conv_in"))?,
            down,
            mid,
            up,
            conv_norm_out: GroupNorm::new(groups, c0, eps, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(c0, cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            recompute: None,
        })
    }

    /// Checkpoints every resnet and transformer block with `recompute` (training with
    /// `train.gradient_checkpointing`), or stops with `None`.
    pub fn set_recompute(&mut self, recompute: Option<Arc<Recompute>>) {
        self.recompute = recompute;
    }

    /// `resnet` on `xs` with the time embedding, checkpointed when set.
    fn resnet(&self, resnet: &ResnetBlock2D, xs: &Tensor, temb: &Tensor) -> CResult<Tensor> {
        match &self.recompute {
            None => resnet.forward(xs, Some(temb)),
            Some(r) => {
                let block = resnet.clone();
                r.checkpoint(xs, temb, Arc::new(move |x: &Tensor, t: &Tensor| block.forward(x, Some(t))))
            }
        }
    }

    /// `attention` on `xs` attending to `context`, checkpointed when set.
    fn transformer(&self, attention: &Transformer2D, xs: &Tensor, context: &Tensor) -> CResult<Tensor> {
        match &self.recompute {
            None => attention.forward(xs, context),
            Some(r) => {
                let block = attention.clone();
                r.checkpoint(xs, context, Arc::new(move |x: &Tensor, c: &Tensor| block.forward(x, c)))
            }
        }
    }

    /// Sinusoidal embedding of `timesteps` [batch] (diffusers' `get_timestep_embedding`).
    fn time_proj(&self, timesteps: &Tensor) -> CResult<Tensor> {
        let half = self.time_channels / 2;
        let freqs: Vec<f32> =
            (0..half).map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - self.freq_shift)).exp() as f32).collect();
        let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?;
        let args = timesteps.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        if self.flip_sin_to_cos { Tensor::cat(&[cos, sin], 1) } else { Tensor::cat(&[sin, cos], 1) }
    }

    /// Predicts noise (or v) for `latents` \[b, c, h, w\] at `timesteps` \[b\] given text embeddings
    /// `context` [b, tokens, dim]. Height and width must be multiples of 2^(levels-1).
    pub fn forward(&self, latents: &Tensor, timesteps: &Tensor, context: &Tensor) -> CResult<Tensor> {
        let temb = self.time_proj(timesteps)?.to_dtype(latents.dtype())?;
        let temb = self.time_linear_2.forward(&silu(&self.time_linear_1.forward(&temb)?)?)?;
        let mut xs = self.conv_in.forward(latents)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down {
            for (j, resnet) in block.resnets.iter().enumerate() {
                xs = self.resnet(resnet, &xs, &temb)?;
                if let Some(attn) = block.attentions.get(j) {
                    xs = self.transformer(attn, &xs, context)?;
                }
                skips.push(xs.clone());
            }
            if let Some(down) = &block.resample {
                xs = down.forward(&xs)?;
                skips.push(xs.clone());
            }
        }
        xs = self.resnet(&self.mid.0, &xs, &temb)?;
        xs = self.transformer(&self.mid.1, &xs, context)?;
        xs = self.resnet(&self.mid.2, &xs, &temb)?;
        for block in &self.up {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| candle_core::Error::Msg("unbalanced UNet skips".into()))?;
                xs = self.resnet(resnet, &Tensor::cat(&[&xs, &skip], 1)?, &temb)?;
                if let Some(attn) = block.attentions.get(j) {
                    xs = self.transformer(attn, &xs, context)?;
                }
            }
            if let Some(up) = &block.resample {
                let (_, _, h, w) = xs.dims4()?;
                xs = up.forward(&xs.upsample_nearest2d(h * 2, w * 2)?)?;
            }
        }
        self.conv_out.forward(&silu(&self.conv_norm_out.forward(&xs)?)?)
    }
}

impl VisitLinears for UNet2DConditionModel {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        f(&mut self.time_linear_1);
        f(&mut self.time_linear_2);
        self.down.visit_linears(f);
        self.mid.0.visit_linears(f);
        self.mid.1.visit_linears(f);
        self.mid.2.visit_linears(f);
        self.up.visit_linears(f);
    }
}
