//! The ViT-family image encoder behind the DINO metrics: transformers' `ViTModel` (e.g.
//! facebook/dino-vits16) and `Dinov2Model` (facebook/dinov2-*), which differ only in a few
//! options (layer scale, SwiGLU MLP, interpolated position embeddings) and tensor names.
//!
//! `[CLS] + patches + positions → pre-norm blocks → final layernorm`; a block is
//! `x += s1 · attn(norm1(x)); x += s2 · mlp(norm2(x))` with per-channel layer scales `s1`, `s2`
//! (DINOv2) or none (ViT). The CLS embedding is row 0 of the last hidden state (not a pooler).

use std::path::Path;

use candle_core::{IndexOp, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

use super::bicubic;
use super::patch::PatchEmbedding;
use crate::model::attention::{AttentionMode, attention};
use crate::model::clip::Activation;
use crate::model::error::{ModelError, Result};
use crate::model::nn::{LayerNorm, Linear, linear};

/// The feed-forward part of a block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MlpKind {
    /// `fc2(act(fc1(x)))` with this hidden width.
    Plain(usize),
    /// DINOv2's `use_swiglu_ffn`: `down(silu(gate(x)) · up(x))` with this hidden width.
    SwiGlu(usize),
}

/// The shape and options of an encoder, from its `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackboneSpec {
    /// Width.
    pub hidden_size: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads (they divide `hidden_size`).
    pub heads: usize,
    /// Layer-norm epsilon.
    pub eps: f64,
    /// The activation of a plain MLP.
    pub activation: Activation,
    /// The feed-forward kind.
    pub mlp: MlpKind,
    /// Patch size in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub channels: usize,
    /// `(height, width)` the position embeddings were made for.
    pub image_size: (usize, usize),
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    /// Whether blocks scale their two branches (`layer_scale{1,2}.lambda1`).
    pub layer_scale: bool,
    /// Whether other image sizes interpolate the position embeddings (DINOv2) rather than
    /// being refused (ViT, as transformers without `interpolate_pos_encoding`).
    pub interpolate: bool,
}

impl BackboneSpec {
    /// Refuses specs the encoder cannot be built from, naming the key of `config`.
    pub fn check(&self, config: &Path) -> Result<()> {
        let err = |key: &str, message: &str| Err(ModelError::config_key(config, key, message));
        if self.heads == 0 || !self.hidden_size.is_multiple_of(self.heads) {
            return err("num_attention_heads", "must divide hidden_size");
        }
        if self.patch_size == 0 || self.image_size.0 < self.patch_size || self.image_size.1 < self.patch_size {
            return err("patch_size", "must be positive and at most image_size");
        }
        if self.interpolate && self.image_size.0 != self.image_size.1 {
            return err("image_size", "must be square: the position embeddings are interpolated as a square grid");
        }
        Ok(())
    }
}

/// How a SwiGLU MLP's weights are stored.
#[derive(Clone, Copy, Debug)]
pub enum SwiGluNames {
    /// One input projection holding gate and up (`weights_in` [2h, d]) and `weights_out`.
    Fused(&'static str, &'static str),
    /// `gate_proj`, `up_proj`, `down_proj` (transformers 5 module names).
    Split(&'static str, &'static str, &'static str),
}

/// The tensor names of one checkpoint layout, relative to a block (`{layers}.N`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The block list.
    pub layers: &'static str,
    /// The norm before attention.
    pub norm1: &'static str,
    /// The norm before the MLP.
    pub norm2: &'static str,
    /// Query, key, value and output projections.
    pub qkvo: [&'static str; 4],
    /// A plain MLP's two projections.
    pub fc: [&'static str; 2],
    /// A SwiGLU MLP's projections, in layouts that have them.
    pub swiglu: Option<SwiGluNames>,
    /// The two layer scales, in layouts that have them.
    pub scales: Option<[&'static str; 2]>,
}

impl Layout {
    /// The first of `layouts` whose first block's query weight is under `vb`, else the first.
    pub fn pick(vb: &VarBuilder, layouts: &[Layout]) -> Layout {
        let found = layouts.iter().find(|l| vb.contains_tensor(&format!("{}.0.{}.weight", l.layers, l.qkvo[0])));
        *found.unwrap_or(&layouts[0])
    }
}

#[derive(Clone, Debug)]
enum Mlp {
    Plain { fc1: Linear, fc2: Linear, activation: Activation },
    SwiGlu { gate: Linear, up: Linear, down: Linear },
}

impl Mlp {
    fn new(vb: &VarBuilder, spec: &BackboneSpec, layout: &Layout) -> CResult<Self> {
        let d = spec.hidden_size;
        Ok(match (spec.mlp, layout.swiglu) {
            (MlpKind::Plain(h), _) => Mlp::Plain {
                fc1: linear(d, h, true, vb.pp(layout.fc[0]))?,
                fc2: linear(h, d, true, vb.pp(layout.fc[1]))?,
                activation: spec.activation,
            },
            (MlpKind::SwiGlu(h), Some(SwiGluNames::Fused(w_in, w_out))) => {
                let (w, b) = (vb.pp(w_in).get((2 * h, d), "weight")?, vb.pp(w_in).get(2 * h, "bias")?);
                // `x1, x2 = weights_in(x).chunk(2, -1)`: the first half is the gate.
                let half = |t: &Tensor, i: usize| t.narrow(0, i * h, h);
                Mlp::SwiGlu {
                    gate: Linear::new(half(&w, 0)?, Some(half(&b, 0)?), vb.pp(w_in).prefix()),
                    up: Linear::new(half(&w, 1)?, Some(half(&b, 1)?), vb.pp(w_in).prefix()),
                    down: linear(h, d, true, vb.pp(w_out))?,
                }
            }
            (MlpKind::SwiGlu(h), Some(SwiGluNames::Split(gate, up, down))) => Mlp::SwiGlu {
                gate: linear(d, h, true, vb.pp(gate))?,
                up: linear(d, h, true, vb.pp(up))?,
                down: linear(h, d, true, vb.pp(down))?,
            },
            (MlpKind::SwiGlu(_), None) => candle_core::bail!("this layout has no SwiGLU MLP"),
        })
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            Mlp::Plain { fc1, fc2, activation } => fc2.forward(&activation.forward(&fc1.forward(xs)?)?),
            Mlp::SwiGlu { gate, up, down } => down.forward(&(gate.forward(xs)?.silu()? * up.forward(xs)?)?),
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    qkvo: [Linear; 4],
    norm2: LayerNorm,
    mlp: Mlp,
    scales: Option<[Tensor; 2]>,
}

impl Block {
    fn new(vb: VarBuilder, spec: &BackboneSpec, layout: &Layout) -> CResult<Self> {
        let (d, eps) = (spec.hidden_size, spec.eps);
        let proj = |i: usize| linear(d, d, i == 3 || spec.qkv_bias, vb.pp(layout.qkvo[i]));
        let scales = match (spec.layer_scale, layout.scales) {
            (true, Some([s1, s2])) => Some([vb.get(d, s1)?, vb.get(d, s2)?]),
            (true, None) => candle_core::bail!("this layout has no layer scales"),
            (false, _) => None,
        };
        Ok(Self {
            norm1: LayerNorm::new(d, eps, vb.pp(layout.norm1))?,
            qkvo: [proj(0)?, proj(1)?, proj(2)?, proj(3)?],
            norm2: LayerNorm::new(d, eps, vb.pp(layout.norm2))?,
            mlp: Mlp::new(&vb, spec, layout)?,
            scales,
        })
    }

    /// `branch`, times layer scale `i` if the block has them.
    fn scale(&self, branch: Tensor, i: usize) -> CResult<Tensor> {
        match &self.scales {
            Some(s) => branch.broadcast_mul(&s[i]),
            None => Ok(branch),
        }
    }

    fn forward(&self, xs: &Tensor, heads: usize) -> CResult<Tensor> {
        let h = self.norm1.forward(xs)?;
        let [q, k, v, o] = &self.qkvo;
        let attended = attention(&q.forward(&h)?, &k.forward(&h)?, &v.forward(&h)?, heads, false, AttentionMode::Full)?;
        let xs = (xs + self.scale(o.forward(&attended)?, 0)?)?;
        let fed = self.mlp.forward(&self.norm2.forward(&xs)?)?;
        &xs + self.scale(fed, 1)?
    }
}

/// The encoder: embeddings, blocks and the final layernorm.
#[derive(Clone, Debug)]
pub struct Backbone {
    cls_token: Tensor,
    patch: PatchEmbedding,
    positions: Tensor,
    blocks: Vec<Block>,
    layernorm: LayerNorm,
    spec: BackboneSpec,
}

impl Backbone {
    /// The encoder of `spec` under `vb` with the tensor names of `layout` (the embeddings and
    /// the final `layernorm` are named alike in every layout).
    pub fn new(vb: VarBuilder, spec: &BackboneSpec, layout: &Layout) -> CResult<Self> {
        let d = spec.hidden_size;
        let (gh, gw) = (spec.image_size.0 / spec.patch_size, spec.image_size.1 / spec.patch_size);
        let emb = vb.pp("embeddings");
        let blocks = (0..spec.layers)
            .map(|i| Block::new(vb.pp(layout.layers).pp(i.to_string()), spec, layout))
            .collect::<CResult<_>>()?;
        Ok(Self {
            cls_token: emb.get((1, 1, d), "cls_token")?,
            patch: PatchEmbedding::new(emb.pp("patch_embeddings.projection"), spec.channels, d, spec.patch_size, true)?,
            positions: emb.get((1, gh * gw + 1, d), "position_embeddings")?,
            blocks,
            layernorm: LayerNorm::new(d, spec.eps, vb.pp("layernorm"))?,
            spec: spec.clone(),
        })
    }

    /// The position embeddings [1, 1 + rows · columns, hidden] for a `height`×`width` input.
    fn positions(&self, height: usize, width: usize) -> CResult<Tensor> {
        let (rows, cols) = self.patch.grid(height, width);
        let (gh, gw) = (self.spec.image_size.0 / self.spec.patch_size, self.spec.image_size.1 / self.spec.patch_size);
        if !self.spec.interpolate {
            if (height, width) != self.spec.image_size {
                candle_core::bail!(
                    "input image size ({height}*{width}) doesn't match model ({}*{})",
                    self.spec.image_size.0,
                    self.spec.image_size.1
                );
            }
            return Ok(self.positions.clone());
        }
        // transformers' shortcut: same number of patches and a square input.
        if rows * cols == gh * gw && height == width {
            return Ok(self.positions.clone());
        }
        let d = self.spec.hidden_size;
        // [grid, d] → channel-major planes, resized on the host, and back.
        let grid = self.positions.i((0, 1..))?.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let resized = bicubic::interpolate(&grid, d, (gh, gw), (rows, cols));
        let resized = Tensor::from_vec(resized, (d, rows * cols), self.positions.device())?.t()?.unsqueeze(0)?;
        Tensor::cat(&[&self.positions.narrow(1, 0, 1)?, &resized], 1)
    }

    /// The width of the hidden states.
    pub fn dim(&self) -> usize {
        self.spec.hidden_size
    }

    /// The last hidden state [batch, 1 + patches, hidden] of `pixels` [batch, channels, h, w].
    pub fn forward(&self, pixels: &Tensor) -> CResult<Tensor> {
        let (n, _, h, w) = pixels.dims4()?;
        let patches = self.patch.forward(pixels)?;
        let cls = self.cls_token.broadcast_as((n, 1, self.spec.hidden_size))?;
        let mut xs = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.positions(h, w)?)?;
        for block in &self.blocks {
            xs = block.forward(&xs, self.spec.heads)?;
        }
        self.layernorm.forward(&xs)
    }
}

/// An `image_size` or `patch_size`: one number for both sides or `[height, width]`.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Pair {
    /// Square.
    One(usize),
    /// `[height, width]`.
    Two([usize; 2]),
}

impl Pair {
    /// `(height, width)`.
    pub fn get(self) -> (usize, usize) {
        match self {
            Pair::One(s) => (s, s),
            Pair::Two([h, w]) => (h, w),
        }
    }

    /// The side of a square patch size, or an error naming `key` of `config`.
    pub fn square(self, config: &Path, key: &str) -> Result<usize> {
        match self.get() {
            (h, w) if h == w => Ok(h),
            _ => Err(ModelError::config_key(config, key, "only square patches are supported")),
        }
    }
}

/// The `config.json` keys `ViTConfig` and `Dinov2Config` share; absent keys take their
/// common defaults (ViT-Base's), or the family's where they differ.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CommonConfig {
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    image_size: Option<Pair>,
    patch_size: Option<Pair>,
    num_channels: Option<usize>,
    qkv_bias: Option<bool>,
}

impl CommonConfig {
    /// The width (768 by default).
    pub fn hidden_size(&self) -> usize {
        self.hidden_size.unwrap_or(768)
    }

    /// The spec of a ViT (`dinov2` false) or DINOv2 encoder with feed-forward `mlp`, whose
    /// family defaults to layer-norm epsilon `eps` and patches of `patch_size`.
    pub fn spec(&self, config: &Path, eps: f64, patch_size: usize, mlp: MlpKind, dinov2: bool) -> Result<BackboneSpec> {
        let spec = BackboneSpec {
            hidden_size: self.hidden_size(),
            layers: self.num_hidden_layers.unwrap_or(12),
            heads: self.num_attention_heads.unwrap_or(12),
            eps: self.layer_norm_eps.unwrap_or(eps),
            activation: Activation::parse(self.hidden_act.as_deref().unwrap_or("gelu"), config)?,
            mlp,
            patch_size: self.patch_size.unwrap_or(Pair::One(patch_size)).square(config, "patch_size")?,
            channels: self.num_channels.unwrap_or(3),
            image_size: self.image_size.unwrap_or(Pair::One(224)).get(),
            qkv_bias: self.qkv_bias.unwrap_or(true),
            layer_scale: dinov2,
            interpolate: dinov2,
        };
        spec.check(config)?;
        Ok(spec)
    }
}
