//! The `lora` settings: low-rank adapters instead of a full fine-tune (`train.method: lora`),
//! with the defaults of diffusers' `train_dreambooth_lora.py`.

use serde::{Deserialize, Serialize};

/// What a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMethod {
    /// Every weight of the UNet (and of the text encoder with `train.train_text_encoder`).
    #[default]
    Full,
    /// Low-rank adapters on the layers `lora.target_modules` names; the base stays frozen.
    Lora,
}

/// How the adapters' down-projection `A` starts (`B` starts at zero, so the adapted model
/// starts as the base model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// Normal with standard deviation 1 / rank: PEFT's `init_lora_weights="gaussian"`, what
    /// diffusers' DreamBooth LoRA script uses.
    #[default]
    Gaussian,
    /// Uniform in ±1 / sqrt(in features): PEFT's default (`kaiming_uniform_(a=sqrt(5))`).
    Kaiming,
}

/// The adapters of a `train.method: lora` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank of every adapter.
    pub rank: u32,
    /// Alpha: the adapters' output is scaled by `alpha / rank`; unset: `rank` (scale 1).
    pub alpha: Option<f64>,
    /// Dropout on the adapters' input while training.
    pub dropout: f64,
    /// The UNet's linear layers to adapt, in diffusers' naming: a layer is adapted when its
    /// name is a target or ends in `.` + a target (PEFT's rule).
    pub target_modules: Vec<String>,
    /// The text encoder's layers to adapt when `train.train_text_encoder` is on, in
    /// transformers' naming.
    pub text_target_modules: Vec<String>,
    /// How `A` starts.
    pub init: LoraInit,
}

impl Default for LoraConfig {
    fn default() -> Self {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Self {
            rank: 4,
            alpha: None,
            dropout: 0.0,
            target_modules: names(&["to_q", "to_k", "to_v", "to_out.0"]),
            text_target_modules: names(&["q_proj", "k_proj", "v_proj", "out_proj"]),
            init: LoraInit::Gaussian,
        }
    }
}

impl LoraConfig {
    /// Alpha as used: the setting, or the rank.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64)
    }

    /// Every range rule these settings break, as `(key, expected, found)`.
    pub fn violations(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        let mut rule = |ok: bool, key: &'static str, expected: &'static str, found: String| {
            if !ok {
                out.push((key, expected, found));
            }
        };
        rule(self.rank >= 1, "lora.rank", "an integer >= 1", self.rank.to_string());
        if let Some(alpha) = self.alpha {
            rule(
                alpha > 0.0 && alpha.is_finite(),
                "lora.alpha",
                "a number > 0, or unset for the rank",
                alpha.to_string(),
            );
        }
        rule((0.0..1.0).contains(&self.dropout), "lora.dropout", "a number in [0, 1)", self.dropout.to_string());
        for (key, list) in
            [("lora.target_modules", &self.target_modules), ("lora.text_target_modules", &self.text_target_modules)]
        {
            let blank = list.iter().find(|t| t.trim().is_empty() || t.starts_with('.') || t.ends_with('.'));
            rule(
                !list.is_empty() && blank.is_none(),
                key,
                "a non-empty list of layer names such as to_q or attn2.to_k",
                blank.map_or_else(|| "[]".to_string(), |t| format!("{t:?}")),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_diffusers_and_each_rule_fires() {
        let d = LoraConfig::default();
        assert!(d.violations().is_empty());
        assert_eq!(d.alpha(), 4.0);
        let bad = LoraConfig {
            rank: 0,
            alpha: Some(-1.0),
            dropout: 1.0,
            target_modules: vec![],
            text_target_modules: vec!["q_proj.".into()],
            init: LoraInit::Kaiming,
        };
        let keys: Vec<&str> = bad.violations().into_iter().map(|v| v.0).collect();
        assert_eq!(
            keys,
            ["lora.rank", "lora.alpha", "lora.dropout", "lora.target_modules", "lora.text_target_modules"]
        );
    }
}
