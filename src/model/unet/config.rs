//! The UNet's `config.json`, as diffusers' `UNet2DConditionModel` writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::error::{ModelError, Result};
use crate::model::json::PerBlock;

/// `unet/config.json`. Defaults are diffusers' constructor defaults (SD 1.x).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Latent height/width the model was trained at.
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Latent channels in.
    #[serde(default = "four")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "four")]
    pub out_channels: usize,
    /// Timestep embedding puts cosines first.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// Timestep embedding frequency shift.
    #[serde(default)]
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn`.
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D` per level.
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    /// Channels per level.
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    #[serde(default = "two")]
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the down-sampling convolutions.
    #[serde(default = "one")]
    pub downsample_padding: usize,
    /// Activation: only `silu` is supported.
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Group-norm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Group-norm epsilon of resnets and the output norm.
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    /// Text-embedding width.
    #[serde(default = "cross_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention.
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// In diffusers' SD configs this is the number of heads (a historical misnomer).
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock<usize>,
    /// Number of heads, when given; takes precedence over `attention_head_dim`.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Linear (SD 2.x) instead of 1x1-conv projections around transformers.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Attention computed in f32 (SD 2.1); dbsweep computes attention in f32 on CPU anyway.
    #[serde(default)]
    pub upcast_attention: bool,
    /// Must be false (or all false).
    #[serde(default = "no")]
    pub only_cross_attention: PerBlock<bool>,
    /// Must be false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Must be `default`.
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    /// Must be null.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Must be null.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Must be `positional`.
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    /// Must be false.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Must be 3.
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    /// Must be 3.
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
}

fn four() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn no() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn two() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn eight() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn cross_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn norm_eps() -> f64 {
    1e-5
}
fn silu() -> String {
    "silu".into()
}
fn default_shift() -> String {
    "default".into()
}
fn positional() -> String {
    "positional".into()
}
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_down() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec()
}
fn default_up() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}

/// The per-level settings derived from a [`UNetConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// Output channels of this level.
    pub channels: usize,
    /// Whether its blocks have cross-attention.
    pub attention: bool,
    /// Resnets in the down block.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks per attention.
    pub transformer_layers: usize,
    /// Width of the text embeddings.
    pub cross_attention_dim: usize,
}

impl UNetConfig {
    /// Checks the config against what dbsweep implements and derives each level's settings.
    pub fn levels(&self, path: &Path) -> Result<Vec<Level>> {
        let bad = |key: &str, msg: String| ModelError::config_key(path, key, msg);
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(bad(
                "down_block_types",
                format!("expected {n} down and {n} up block types, one per entry of block_out_channels"),
            ));
        }
        let unsupported = [
            ("act_fn", self.act_fn != "silu", "silu"),
            ("dual_cross_attention", self.dual_cross_attention, "false"),
            ("resnet_time_scale_shift", self.resnet_time_scale_shift != "default", "default"),
            ("class_embed_type", self.class_embed_type.is_some(), "null"),
            ("addition_embed_type", self.addition_embed_type.is_some(), "null"),
            ("time_embedding_type", self.time_embedding_type != "positional", "positional"),
            ("center_input_sample", self.center_input_sample, "false"),
            ("conv_in_kernel", self.conv_in_kernel != 3, "3"),
            ("conv_out_kernel", self.conv_out_kernel != 3, "3"),
            (
                "mid_block_type",
                self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn"),
                "UNetMidBlock2DCrossAttn",
            ),
        ];
        if let Some((key, _, expected)) = unsupported.iter().find(|(_, off, _)| *off) {
            return Err(bad(key, format!("dbsweep supports only {expected} here")));
        }
        if (0..n).any(|i| self.only_cross_attention.get(i, n) != Some(false)) {
            return Err(bad("only_cross_attention", "dbsweep supports only false".into()));
        }
        let heads = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim);
        let mut levels = Vec::with_capacity(n);
        for i in 0..n {
            let attention = match self.down_block_types[i].as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(bad(
                        "down_block_types",
                        format!("unsupported block `{other}`; expected CrossAttnDownBlock2D or DownBlock2D"),
                    ));
                }
            };
            let get = |key: &str, v: &PerBlock<usize>| {
                v.get(i, n).ok_or_else(|| bad(key, format!("expected one value or a list of {n}")))
            };
            let level = Level {
                channels: self.block_out_channels[i],
                attention,
                layers: get("layers_per_block", &self.layers_per_block)?,
                heads: get("attention_head_dim", heads)?,
                transformer_layers: get("transformer_layers_per_block", &self.transformer_layers_per_block)?,
                cross_attention_dim: get("cross_attention_dim", &self.cross_attention_dim)?,
            };
            if level.heads == 0
                || !level.channels.is_multiple_of(level.heads)
                || !level.channels.is_multiple_of(self.norm_num_groups)
            {
                return Err(bad(
                    "block_out_channels",
                    format!(
                        "{} channels must divide into {} heads and {} norm groups",
                        level.channels, level.heads, self.norm_num_groups
                    ),
                ));
            }
            levels.push(level);
        }
        for (i, up) in self.up_block_types.iter().enumerate() {
            let expected = if levels[n - 1 - i].attention { "CrossAttnUpBlock2D" } else { "UpBlock2D" };
            if up != expected {
                return Err(bad(
                    "up_block_types",
                    format!("entry {i} is `{up}`; mirroring down_block_types it must be `{expected}`"),
                ));
            }
        }
        Ok(levels)
    }
}
