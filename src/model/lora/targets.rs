//! Which linear layers a list of target names selects.
//!
//! The rule is PEFT's for a list of `target_modules`: a layer is selected when its full name
//! equals a target or ends in `.` + the target, so `to_q` selects every
//! `...transformer_blocks.N.attn1.to_q` and `...attn2.to_q`, and `attn2.to_q` only the
//! cross-attention ones. A target that selects nothing is an error naming the closest name
//! that would select something.

use super::super::error::{ModelError, Result};
use super::super::nn::VisitLinears;

/// A linear layer: its full name and its (input, output) features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The full name, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`.
    pub name: String,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

/// Whether `target` selects the layer called `name`.
pub fn selects(target: &str, name: &str) -> bool {
    name == target || name.strip_suffix(target).is_some_and(|head| head.ends_with('.'))
}

/// Every linear layer of `module`, in its order.
pub fn layers(module: &mut dyn VisitLinears) -> Vec<Layer> {
    let mut out = Vec::new();
    module.visit_linears(&mut |linear| {
        let (inputs, outputs) = linear.features();
        out.push(Layer { name: linear.name().to_string(), inputs, outputs });
    });
    out
}

/// The layers of `all` (the linear layers of `model`, e.g. "the UNet") that any of `targets`
/// (the setting `key`) selects; a target selecting none is an error with a suggestion.
pub fn select(all: &[Layer], targets: &[String], key: &str, model: &str) -> Result<Vec<Layer>> {
    for target in targets {
        if !all.iter().any(|l| selects(target, &l.name)) {
            return Err(unmatched(all, target, key, model));
        }
    }
    Ok(all.iter().filter(|l| targets.iter().any(|t| selects(t, &l.name))).cloned().collect())
}

/// The error for a `target` that selects no layer of `all`.
fn unmatched(all: &[Layer], target: &str, key: &str, model: &str) -> ModelError {
    // Candidates: every ending of every name (up to four segments, not starting with an index).
    let mut endings: Vec<String> = Vec::new();
    for layer in all {
        let segments: Vec<&str> = layer.name.split('.').collect();
        for k in 1..=segments.len().min(4) {
            let tail = &segments[segments.len() - k..];
            if !tail[0].chars().all(|c| c.is_ascii_digit()) {
                endings.push(tail.join("."));
            }
        }
    }
    endings.sort();
    endings.dedup();
    let hint = crate::config::suggest(target, endings.iter().map(String::as_str));
    let example = hint
        .as_deref()
        .and_then(|h| all.iter().find(|l| selects(h, &l.name)))
        .or(all.first())
        .map_or("none".to_string(), |l| format!("`{}`", l.name));
    let hint = hint.map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
    ModelError::Adapter {
        what: key.to_string(),
        message: format!(
            "`{target}` selects no linear layer of {model}{hint} (a target selects the layers whose full name is it \
             or ends in `.{target}`; LoRA here adapts linear layers only; e.g. {example})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> Layer {
        Layer { name: name.into(), inputs: 4, outputs: 4 }
    }

    #[test]
    fn targets_select_whole_trailing_segments_only() {
        assert!(selects("to_q", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
        assert!(selects("attn2.to_q", "mid_block.attentions.0.transformer_blocks.0.attn2.to_q"));
        assert!(!selects("attn2.to_q", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"));
        assert!(!selects("q", "x.to_q"), "a partial segment selects nothing");
        assert!(selects("to_out.0", "a.attn1.to_out.0"));
        assert!(selects("time_emb_proj", "time_emb_proj"));
    }

    #[test]
    fn a_target_that_selects_nothing_names_the_closest() {
        let all = [layer("b.0.attn1.to_q"), layer("b.0.attn1.to_out.0"), layer("b.0.ff.net.0.proj")];
        let chosen = select(&all, &["to_q".into(), "to_out.0".into()], "lora.target_modules", "the UNet").unwrap();
        assert_eq!(chosen.len(), 2);
        let err = select(&all, &["to_qq".into()], "lora.target_modules", "the UNet").unwrap_err().to_string();
        assert!(err.starts_with("lora.target_modules: `to_qq` selects no linear layer of the UNet"), "{err}");
        assert!(err.contains("did you mean `to_q`?") && err.contains("`b.0.attn1.to_q`"), "{err}");
    }

    /// The README's arithmetic: rank-4 adapters on SD 1.5's attention projections.
    #[test]
    fn sd15_rank_4_adapters_on_the_attention_projections_are_797184_numbers() {
        let (unet, _) = crate::model::builtin::linear_layers("builtin:sd15-shape").unwrap();
        let targets: Vec<String> = ["to_q", "to_k", "to_v", "to_out.0"].map(String::from).to_vec();
        let chosen = select(&unet, &targets, "lora.target_modules", "the UNet").unwrap();
        assert_eq!(chosen.len(), 16 * 2 * 4, "16 transformer blocks, 2 attentions, 4 projections");
        let numbers: usize = chosen.iter().map(|l| 4 * (l.inputs + l.outputs)).sum();
        assert_eq!(numbers, 797_184);
    }
}
