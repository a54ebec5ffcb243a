//! The CLIP text encoder (transformers' `CLIPTextModel`), trainable: SD 1.x (`quick_gelu`) and
//! SD 2.x (`gelu`; its configs already drop the last layer, which gives the penultimate
//! hidden state SD 2 was trained with).

use std::path::Path;

use candle_core::{Module, Result as CResult, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::attention::{AttentionMode, attention};
use super::error::{ModelError, Result};
use super::nn::{LayerNorm, linear, quick_gelu};

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

#[derive(Clone, Copy, Debug)]
enum Activation {
    QuickGelu,
    Gelu,
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

/// The text encoder; its output is the last hidden state after the final layer norm.
#[derive(Clone, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    heads: usize,
    activation: Activation,
}

impl ClipTextModel {
    /// Builds the encoder described by `cfg` (read from `path`) under `vb` (weights named
    /// `text_model.*`, as transformers saves them).
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig, path: &Path) -> Result<Self> {
        let activation = match cfg.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(ModelError::config_key(
                    path,
                    "hidden_act",
                    format!("`{other}` is not supported; expected quick_gelu or gelu"),
                ));
            }
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(ModelError::config_key(path, "num_attention_heads", "must divide hidden_size"));
        }
        Ok(Self::build(vb.pp("text_model"), cfg, activation)?)
    }

    fn build(vb: VarBuilder, cfg: &ClipTextConfig, activation: Activation) -> CResult<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp("encoder.layers").pp(i.to_string());
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
                    q_proj: linear(d, d, true, vb.pp("self_attn.q_proj"))?,
                    k_proj: linear(d, d, true, vb.pp("self_attn.k_proj"))?,
                    v_proj: linear(d, d, true, vb.pp("self_attn.v_proj"))?,
                    out_proj: linear(d, d, true, vb.pp("self_attn.out_proj"))?,
                    layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
                    fc1: linear(d, cfg.intermediate_size, true, vb.pp("mlp.fc1"))?,
                    fc2: linear(cfg.intermediate_size, d, true, vb.pp("mlp.fc2"))?,
                })
            })
            .collect::<CResult<_>>()?;
        Ok(Self {
            token_embedding: candle_nn::embedding(cfg.vocab_size, d, emb.pp("token_embedding"))?,
            position_embedding: emb.pp("position_embedding").get((cfg.max_position_embeddings, d), "weight")?,
            layers,
            final_layer_norm: LayerNorm::new(d, eps, vb.pp("final_layer_norm"))?,
            heads: cfg.num_attention_heads,
            activation,
        })
    }

    /// Encodes token ids [batch, seq] (u32) into hidden states [batch, seq, hidden].
    pub fn forward(&self, input_ids: &Tensor) -> CResult<Tensor> {
        let seq = input_ids.dim(1)?;
        let mut xs =
            self.token_embedding.forward(input_ids)?.broadcast_add(&self.position_embedding.narrow(0, 0, seq)?)?;
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(&xs)?;
            let (q, k, v) = (layer.q_proj.forward(&h)?, layer.k_proj.forward(&h)?, layer.v_proj.forward(&h)?);
            let attended = attention(&q, &k, &v, self.heads, true, AttentionMode::Full)?;
            xs = (layer.out_proj.forward(&attended)? + xs)?;
            let h = layer.fc1.forward(&layer.layer_norm2.forward(&xs)?)?;
            let h = match self.activation {
                Activation::QuickGelu => quick_gelu(&h)?,
                Activation::Gelu => h.gelu_erf()?,
            };
            xs = (layer.fc2.forward(&h)? + xs)?;
        }
        self.final_layer_norm.forward(&xs)
    }
}
