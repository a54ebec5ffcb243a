//! The UNet's building blocks, named as diffusers names their weights: `ResnetBlock2D`,
//! `Transformer2DModel` with `BasicTransformerBlock`s, and the down, mid and up blocks.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::activation::{geglu, silu};
use crate::model::attention::{AttentionMode, attention};
use crate::model::conv::Conv2d;
use crate::model::group_norm::GroupNorm;
use crate::model::nn::{LayerNorm, Linear, VisitLinears, linear};

/// Two group-norm + SiLU + 3x3 convolutions with the time embedding added in between.
#[derive(Clone, Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// A block from `in_ch` to `out_ch` channels; `temb_dim` is `None` in the VAE.
    pub fn new(
        vb: VarBuilder,
        in_ch: usize,
        out_ch: usize,
        temb_dim: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(groups, in_ch, eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(in_ch, out_ch, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: temb_dim.map(|d| linear(d, out_ch, true, vb.pp("time_emb_proj"))).transpose()?,
            norm2: GroupNorm::new(groups, out_ch, eps, vb.pp("norm2"))?,
            conv2: Conv2d::new(out_ch, out_ch, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::new(in_ch, out_ch, 1, 1, 0, vb.pp("conv_shortcut")))
                .transpose()?,
        })
    }

    /// `xs` [batch, in_ch, h, w], `temb` [batch, temb_dim] (UNet) or `None` (VAE).
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&silu(&self.norm1.forward(xs)?)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h.broadcast_add(&proj.forward(&silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        shortcut + h
    }
}

impl VisitLinears for ResnetBlock2D {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        self.time_emb_proj.visit_linears(f)
    }
}

/// Multi-head attention with diffusers' `to_q`/`to_k`/`to_v`/`to_out.0` projections.
#[derive(Clone, Debug)]
pub struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    mode: AttentionMode,
}

impl CrossAttention {
    /// Queries from `dim`, keys and values from `context_dim` (= `dim` for self-attention).
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        bias: bool,
        mode: AttentionMode,
    ) -> Result<Self> {
        Ok(Self {
            to_q: linear(dim, dim, bias, vb.pp("to_q"))?,
            to_k: linear(context_dim, dim, bias, vb.pp("to_k"))?,
            to_v: linear(context_dim, dim, bias, vb.pp("to_v"))?,
            to_out: linear(dim, dim, true, vb.pp("to_out").pp("0"))?,
            heads,
            mode,
        })
    }

    /// `xs` [batch, n, dim] attending to `context` [batch, m, context_dim] (itself if `None`).
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        let (q, k, v) = (self.to_q.forward(xs)?, self.to_k.forward(context)?, self.to_v.forward(context)?);
        self.to_out.forward(&attention(&q, &k, &v, self.heads, false, self.mode)?)
    }
}

impl VisitLinears for CrossAttention {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        for linear in [&mut self.to_q, &mut self.to_k, &mut self.to_v, &mut self.to_out] {
            f(linear)
        }
    }
}

/// Self-attention, cross-attention and a GEGLU feed-forward, each pre-normed and residual.
#[derive(Clone, Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl BasicTransformerBlock {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize, mode: AttentionMode) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, dim, heads, false, mode)?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, context_dim, heads, false, mode)?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff_proj: linear(dim, inner * 2, true, vb.pp("ff.net.0.proj"))?,
            ff_out: linear(inner, dim, true, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self.attn2.forward(&self.norm2.forward(&xs)?, Some(context))? + xs)?;
        let projected = self.ff_proj.forward(&self.norm3.forward(&xs)?)?;
        self.ff_out.forward(&geglu(&projected)?)? + xs
    }
}

impl VisitLinears for BasicTransformerBlock {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        self.attn1.visit_linears(f);
        self.attn2.visit_linears(f);
        f(&mut self.ff_proj);
        f(&mut self.ff_out);
    }
}

/// Either a 1x1 convolution on [b, c, h, w] (SD 1.x) or a linear layer on [b, hw, c] (SD 2.x).
#[derive(Clone, Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// Group norm, projection in, transformer blocks, projection out, residual.
#[derive(Clone, Debug)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// Shape settings of a [`Transformer2D`].
#[derive(Clone, Copy, Debug)]
pub struct TransformerSpec {
    /// Channels.
    pub channels: usize,
    /// Heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Text-embedding width.
    pub context_dim: usize,
    /// Group-norm groups.
    pub groups: usize,
    /// Linear projections (SD 2.x).
    pub linear_projection: bool,
    /// Attention implementation.
    pub mode: AttentionMode,
}

impl Transformer2D {
    /// Builds the block under `vb`.
    pub fn new(vb: VarBuilder, s: TransformerSpec) -> Result<Self> {
        let c = s.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if s.linear_projection {
                Projection::Linear(linear(c, c, true, vb.pp(name))?)
            } else {
                Projection::Conv(Conv2d::new(c, c, 1, 1, 0, vb.pp(name))?)
            })
        };
        let blocks = (0..s.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i.to_string()),
                    c,
                    s.context_dim,
                    s.heads,
                    s.mode,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: GroupNorm::new(s.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// The linear projection in or out, if the block has one (SD 2.x).
    fn linear_projection(projection: &mut Projection) -> Option<&mut Linear> {
        match projection {
            Projection::Linear(linear) => Some(linear),
            Projection::Conv(_) => None,
        }
    }

    /// `xs` [b, c, h, w] attending to `context` [b, tokens, context_dim].
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let to_image = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous();
        let normed = self.norm.forward(xs)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&tokens)?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&tokens)?)?,
        };
        out + xs
    }
}

impl VisitLinears for Transformer2D {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        if let Some(linear) = Self::linear_projection(&mut self.proj_in) {
            f(linear)
        }
        self.blocks.visit_linears(f);
        if let Some(linear) = Self::linear_projection(&mut self.proj_out) {
            f(linear)
        }
    }
}
