//! The CLIP text encoder (transformers' `CLIPTextModel`), trainable: SD 1.x (`quick_gelu`) and
//! SD 2.x (`gelu`; its configs already drop the last layer, which gives the penultimate
//! hidden state SD 2 was trained with).
//!
//! Its layer stack, [`ClipEncoder`], is also the encoder of CLIP's vision tower
//! ([`super::vision::clip`]): the two towers differ only in their embeddings, their final
//! norms and the causal mask.

use std::path::Path;

use candle_core::{Module, Result as CResult, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use super::attention::{AttentionMode, attention};
use super::error::{ModelError, Result};
use super::nn::{LayerNorm, Linear, VisitLinears, linear, quick_gelu};

/// `text_encoder/config.json` (a transformers `CLIPTextConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Sequence length (77).
    #[serde(default = "seq_len")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    #[serde(default = "quick")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
}

fn seq_len() -> usize {
    77
}
fn quick() -> String {
    "quick_gelu".into()
}
fn ln_eps() -> f64 {
    1e-5
}

/// The MLP activation of a transformer encoder (a transformers `hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
}

impl Activation {
    /// The activation named `name`, the value of the key `hidden_act` of the config at `path`.
    pub fn parse(name: &str, path: &Path) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(ModelError::config_key(
                path,
                "hidden_act",
                format!("`{other}` is not supported; expected quick_gelu or gelu"),
            )),
        }
    }

    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            Activation::QuickGelu => quick_gelu(xs),
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

/// The shape of a [`ClipEncoder`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipEncoderSpec {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads (they divide `hidden_size`).
    pub heads: usize,
    /// Layer-norm epsilon.
    pub eps: f64,
    /// MLP activation.
    pub activation: Activation,
}

#[derive(Clone, Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// CLIP's stack of pre-norm transformer layers (`layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj,
/// layer_norm2, mlp.fc1, mlp.fc2}`), shared by the text tower (causal) and the vision tower.
#[derive(Clone, Debug)]
pub struct ClipEncoder {
    layers: Vec<EncoderLayer>,
    heads: usize,
    activation: Activation,
}

impl ClipEncoder {
    /// The layers described by `spec` under `vb` (a tower's `encoder`).
    pub fn new(vb: VarBuilder, spec: &ClipEncoderSpec) -> CResult<Self> {
        let (d, eps, inner) = (spec.hidden_size, spec.eps, spec.intermediate_size);
        let layers = (0..spec.layers)
            .map(|i| {
                let vb = vb.pp("layers").pp(i.to_string());
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
                    q_proj: linear(d, d, true, vb.pp("self_attn.q_proj"))?,
                    k_proj: linear(d, d, true, vb.pp("self_attn.k_proj"))?,
                    v_proj: linear(d, d, true, vb.pp("self_attn.v_proj"))?,
                    out_proj: linear(d, d, true, vb.pp("self_attn.out_proj"))?,
                    layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
                    fc1: linear(d, inner, true, vb.pp("mlp.fc1"))?,
                    fc2: linear(inner, d, true, vb.pp("mlp.fc2"))?,
                })
            })
            .collect::<CResult<_>>()?;
        Ok(Self { layers, heads: spec.heads, activation: spec.activation })
    }

    /// Runs every layer on `xs` [batch, seq, hidden]; with `causal`, position `i` attends to
    /// positions `0..=i` only.
    pub fn forward(&self, xs: &Tensor, causal: bool) -> CResult<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(&xs)?;
            let (q, k, v) = (layer.q_proj.forward(&h)?, layer.k_proj.forward(&h)?, layer.v_proj.forward(&h)?);
            let attended = attention(&q, &k, &v, self.heads, causal, AttentionMode::Full)?;
            xs = (layer.out_proj.forward(&attended)? + xs)?;
            let h = self.activation.forward(&layer.fc1.forward(&layer.layer_norm2.forward(&xs)?)?)?;
            xs = (layer.fc2.forward(&h)? + xs)?;
        }
        Ok(xs)
    }
}

impl VisitLinears for ClipEncoder {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        for l in &mut self.layers {
            for linear in [&mut l.q_proj, &mut l.k_proj, &mut l.v_proj, &mut l.out_proj, &mut l.fc1, &mut l.fc2] {
                f(linear)
            }
        }
    }
}

/// The text encoder; its output is the last hidden state after the final layer norm.
#[derive(Clone, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Builds the encoder described by `cfg` (read from `path`) under `vb` (weights named
    /// `text_model.*`, as transformers saves them).
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig, path: &Path) -> Result<Self> {
        let activation = Activation::parse(&cfg.hidden_act, path)?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(ModelError::config_key(path, "num_attention_heads", "must divide hidden_size"));
        }
        Ok(Self::build(vb.pp("text_model"), cfg, activation)?)
    }

    fn build(vb: VarBuilder, cfg: &ClipTextConfig, activation: Activation) -> CResult<Self> {
        let spec = ClipEncoderSpec {
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            layers: cfg.num_hidden_layers,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            activation,
        };
        let encoder = ClipEncoder::new(vb.pp("encoder"), &spec)?;
        let (d, emb) = (cfg.hidden_size, vb.pp("embeddings"));
        Ok(Self {
            token_embedding: candle_nn::embedding(cfg.vocab_size, d, emb.pp("token_embedding"))?,
            position_embedding: emb.pp("position_embedding").get((cfg.max_position_embeddings, d), "weight")?,
            encoder,
            final_layer_norm: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
        })
    }

    /// Encodes token ids [batch, seq] (u32) into hidden states [batch, seq, hidden].
    pub fn forward(&self, input_ids: &Tensor) -> CResult<Tensor> {
        let seq = input_ids.dim(1)?;
        let xs = self.token_embedding.forward(input_ids)?.broadcast_add(&self.position_embedding.narrow(0, 0, seq)?)?;
        self.final_layer_norm.forward(&self.encoder.forward(&xs, true)?)
    }
}

impl VisitLinears for ClipTextModel {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        self.encoder.visit_linears(f)
    }
}
