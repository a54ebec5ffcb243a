//! Adapter files as other tools write and read them.
//!
//! - **diffusers / PEFT** (`pytorch_lora_weights.safetensors`, what
//!   `StableDiffusionPipeline.load_lora_weights` loads): `unet.LAYER.lora_A.weight`,
//!   `unet.LAYER.lora_B.weight`, `text_encoder.LAYER...`, with each model's PEFT `LoraConfig`
//!   (`r`, `lora_alpha`, `target_modules`, ...) under the `lora_adapter_metadata` key of the
//!   safetensors metadata, prefixed `unet.` / `text_encoder.`, as diffusers' `save_lora_weights`
//!   writes it. Read also: the layout diffusers' `train_dreambooth_lora.py` writes
//!   (`LAYER.lora.down.weight` / `.lora.up.weight` for the UNet, `.lora_linear_layer.down/up`
//!   for the text encoder; no metadata: alpha = rank).
//! - **kohya-ss** (sd-scripts, AUTOMATIC1111, ComfyUI): `lora_unet_LAYER.lora_down.weight`,
//!   `.lora_up.weight` and `.alpha` (a scalar), `LAYER` with every `.` replaced by `_`;
//!   text-encoder layers under `lora_te_`.
//!
//! dbsweep's own checkpoints hold one model's adapters unprefixed (`LAYER.lora_A.weight`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::super::error::{ModelError, Result};
use super::super::pipeline::StableDiffusion;
use super::Attach;
use super::adapters::{AdaptedLayer, AdapterSet, down_name, up_name};
use super::targets::Layer;

/// The safetensors metadata key diffusers keeps each model's `LoraConfig` under.
pub const METADATA_KEY: &str = "lora_adapter_metadata";
/// The file name diffusers' `load_lora_weights` looks for in a folder.
pub const DIFFUSERS_FILE: &str = "pytorch_lora_weights.safetensors";

/// The adapters of a pipeline file, by model.
pub struct PipelineAdapters {
    /// The UNet's, if the file has any.
    pub unet: Option<AdapterSet>,
    /// The text encoder's, if the file has any.
    pub text_encoder: Option<AdapterSet>,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Adapter { what: format!("`{}`", path.display()), message: message.to_string() }
}

/// The `__metadata__` of the safetensors file at `path` (empty when it has none).
fn metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(path, "not a safetensors file (its header length is implausible)"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let header: Value =
        serde_json::from_slice(&header).map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let meta = header.get("__metadata__").and_then(Value::as_object);
    Ok(meta.into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
}

/// Reads the adapter file at `path` in any layout above, for a pipeline whose UNet and text
/// encoder have the linear layers `unet` and `text` (needed to undo kohya's `_` names).
pub fn read(path: &Path, unet: &[Layer], text: &[Layer], device: &Device) -> Result<PipelineAdapters> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(path, e))?;
    let config: Value = match metadata(path)?.get(METADATA_KEY) {
        Some(text) => serde_json::from_str(text).map_err(|e| bad(path, format!("metadata `{METADATA_KEY}`: {e}")))?,
        None => json!({}),
    };
    let kohya = tensors.keys().any(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te"));
    let mut by_model: [BTreeMap<String, Tensor>; 2] = Default::default();
    let mut alphas: [HashMap<String, f64>; 2] = Default::default();
    for (key, tensor) in tensors {
        let placed = if kohya { kohya_name(&key, unet, text) } else { diffusers_name(&key) };
        match placed {
            Some((model, name)) if name.ends_with(".alpha") => {
                let value = tensor.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                let layer = name.trim_end_matches(".alpha").to_string();
                alphas[model].insert(layer, value.first().copied().unwrap_or(f64::NAN));
            }
            Some((model, name)) => {
                by_model[model].insert(name, tensor);
            }
            None => {
                return Err(bad(path, format!("`{key}` is not a LoRA tensor of a UNet or text encoder dbsweep knows")));
            }
        }
    }
    let [unet_tensors, text_tensors] = by_model;
    let set = |model: usize, prefix: &str, tensors: BTreeMap<String, Tensor>| -> Result<Option<AdapterSet>> {
        if tensors.is_empty() {
            return Ok(None);
        }
        let config_alpha = config.get(format!("{prefix}.lora_alpha")).and_then(Value::as_f64);
        let pattern = config.get(format!("{prefix}.alpha_pattern")).and_then(Value::as_object).cloned();
        let alpha = |layer: &str, rank: usize| -> f64 {
            let patterned = pattern
                .as_ref()
                .and_then(|p| p.iter().find(|(k, _)| super::targets::selects(k, layer)).and_then(|(_, v)| v.as_f64()));
            alphas[model].get(layer).copied().or(patterned).or(config_alpha).unwrap_or(rank as f64)
        };
        let what = format!("`{}`", path.display());
        Ok(Some(AdapterSet::from_tensors(tensors, &alpha, &what, device)?))
    };
    Ok(PipelineAdapters { unet: set(0, "unet", unet_tensors)?, text_encoder: set(1, "text_encoder", text_tensors)? })
}

/// Reads the adapter file at `path` (any layout above) and attaches its adapters to `model`'s
/// UNet and text encoder at `strength`, for sampling.
pub fn apply(path: &Path, model: &mut StableDiffusion, strength: f64) -> Result<()> {
    let unet_layers = super::targets::layers(&mut model.unet);
    let text_layers = super::targets::layers(&mut model.text_encoder);
    let found = read(path, &unet_layers, &text_layers, &model.device)?;
    let what = |model_name: &str| format!("{model_name} (adapters of `{}`)", path.display());
    if let Some(unet) = found.unet {
        unet.attach(&mut model.unet, Attach::inference(strength), &what("the UNet"))?;
    }
    if let Some(text) = found.text_encoder {
        text.attach(&mut model.text_encoder, Attach::inference(strength), &what("the text encoder"))?;
    }
    Ok(())
}

/// A diffusers/PEFT key as (model: 0 UNet, 1 text encoder; the name dbsweep gives it).
fn diffusers_name(key: &str) -> Option<(usize, String)> {
    let (model, rest) = if let Some(rest) = key.strip_prefix("unet.") {
        (0, rest)
    } else if let Some(rest) = key.strip_prefix("text_encoder.") {
        (1, rest)
    } else {
        // dbsweep's checkpoints: one model, unprefixed (the caller knows which).
        (0, key)
    };
    // The text encoder's layers are named from `text_model.` (transformers 5 drops it).
    let fix = |layer: &str| {
        if model == 1 && !layer.starts_with("text_model.") { format!("text_model.{layer}") } else { layer.to_string() }
    };
    for (down, up) in [(".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight")]
        .into_iter()
        .chain([(".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight")])
    {
        if let Some(layer) = rest.strip_suffix(down) {
            return Some((model, down_name(&fix(layer))));
        }
        if let Some(layer) = rest.strip_suffix(up) {
            return Some((model, up_name(&fix(layer))));
        }
    }
    rest.strip_suffix(".alpha").map(|layer| (model, format!("{}.alpha", fix(layer))))
}

/// A kohya key as (model, dbsweep's name), found by matching the `_`-joined names of the
/// model's layers.
fn kohya_name(key: &str, unet: &[Layer], text: &[Layer]) -> Option<(usize, String)> {
    let (module, tail) = key.split_once('.')?;
    let (model, flat, layers) = if let Some(flat) = module.strip_prefix("lora_unet_") {
        (0, flat, unet)
    } else {
        let flat = ["lora_te1_", "lora_te_"].iter().find_map(|p| module.strip_prefix(p))?;
        (1, flat, text)
    };
    let layer = layers.iter().find(|l| {
        let joined = l.name.replace('.', "_");
        joined == flat || joined.strip_prefix("text_model_") == Some(flat)
    })?;
    let name = match tail {
        "lora_down.weight" => down_name(&layer.name),
        "lora_up.weight" => up_name(&layer.name),
        "alpha" => format!("{}.alpha", layer.name),
        _ => return None,
    };
    Some((model, name))
}

/// A matrix stored as kohya's 1x1-convolution layout may carry trailing ones: drop them.
fn matrix(t: &Tensor) -> Result<Tensor> {
    let dims: Vec<usize> = t.dims().iter().copied().take(2).collect();
    Ok(if t.rank() > 2 { t.reshape(dims)? } else { t.clone() })
}

/// The PEFT `LoraConfig` (as diffusers stores it) describing `set`: the most common rank and
/// alpha, with per-layer patterns for the others.
fn lora_config(set: &AdapterSet) -> BTreeMap<String, Value> {
    let most_common = |f: &dyn Fn(&AdaptedLayer) -> String| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for l in &set.layers {
            *counts.entry(f(l)).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v).unwrap_or_default()
    };
    let rank = most_common(&|l| l.rank.to_string());
    let alpha = most_common(&|l| l.alpha.to_string());
    let ranks: serde_json::Map<String, Value> =
        set.layers.iter().filter(|l| l.rank.to_string() != rank).map(|l| (l.name.clone(), json!(l.rank))).collect();
    let alphas: serde_json::Map<String, Value> =
        set.layers.iter().filter(|l| l.alpha.to_string() != alpha).map(|l| (l.name.clone(), json!(l.alpha))).collect();
    // Full names select exactly these layers by PEFT's suffix rule; the text encoder's without
    // `text_model.`, which transformers 5's CLIPTextModel no longer has (4's still matches).
    let targets: Vec<&str> = set.layers.iter().map(|l| l.name.strip_prefix("text_model.").unwrap_or(&l.name)).collect();
    [
        ("r", json!(rank.parse::<usize>().unwrap_or(1))),
        ("lora_alpha", json!(alpha.parse::<f64>().unwrap_or(1.0))),
        ("target_modules", json!(targets)),
        ("rank_pattern", Value::Object(ranks)),
        ("alpha_pattern", Value::Object(alphas)),
        ("lora_dropout", json!(0.0)),
        ("bias", json!("none")),
        ("use_dora", json!(false)),
        ("use_rslora", json!(false)),
        ("init_lora_weights", json!("gaussian")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Writes `unet`'s and `text`'s adapters to `path` as diffusers' `save_lora_weights` does.
pub fn write_diffusers(path: &Path, unet: &AdapterSet, text: Option<&AdapterSet>) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut config = serde_json::Map::new();
    for (prefix, set) in [("unet", Some(unet)), ("text_encoder", text)] {
        let Some(set) = set else { continue };
        for (name, t) in set.tensors() {
            tensors.insert(format!("{prefix}.{name}"), t.contiguous()?);
        }
        for (k, v) in lora_config(set) {
            config.insert(format!("{prefix}.{k}"), v);
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(config)).expect("config serializes");
    let meta = HashMap::from([("format".to_string(), "pt".to_string()), (METADATA_KEY.to_string(), text)]);
    write(path, tensors, meta)
}

/// Writes `unet`'s and `text`'s adapters to `path` in kohya-ss's layout.
pub fn write_kohya(path: &Path, unet: &AdapterSet, text: Option<&AdapterSet>) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (prefix, set) in [("lora_unet", Some(unet)), ("lora_te", text)] {
        let Some(set) = set else { continue };
        let all = set.tensors();
        for layer in &set.layers {
            let module = format!("{prefix}_{}", layer.name.replace('.', "_"));
            tensors.insert(format!("{module}.lora_down.weight"), matrix(&all[&down_name(&layer.name)])?.contiguous()?);
            tensors.insert(format!("{module}.lora_up.weight"), matrix(&all[&up_name(&layer.name)])?.contiguous()?);
            tensors.insert(format!("{module}.alpha"), Tensor::new(layer.alpha as f32, &Device::Cpu)?);
        }
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write(path, tensors, meta)
}

/// Writes `tensors` (moved to the CPU) with `meta` to `path` atomically.
fn write(path: &Path, tensors: BTreeMap<String, Tensor>, meta: HashMap<String, String>) -> Result<()> {
    let tensors: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
    crate::atomic_file::write_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(tensors.iter().map(|(k, t)| (k, t)), Some(meta), tmp)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| ModelError::Write { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> Layer {
        Layer { name: name.into(), inputs: 4, outputs: 3 }
    }

    fn adapters(names: &[&str], alpha: f64) -> AdapterSet {
        let layers: Vec<Layer> = names.iter().map(|n| layer(n)).collect();
        let set = AdapterSet::new(&layers, 2, alpha, crate::config::LoraInit::Gaussian, 3, &Device::Cpu).unwrap();
        // Non-zero B so the round trip compares something.
        for (name, var) in set.vars.data().lock().unwrap().iter() {
            if name.ends_with("lora_B.weight") {
                var.set(&(var.as_tensor().ones_like().unwrap() * 0.5).unwrap()).unwrap();
            }
        }
        set
    }

    fn same(a: &AdapterSet, b: &AdapterSet) {
        let sorted = |s: &AdapterSet| {
            let mut layers = s.layers.clone();
            layers.sort_by(|x, y| x.name.cmp(&y.name));
            layers
        };
        assert_eq!(sorted(a), sorted(b), "a file keeps every layer's rank and alpha");
        for (name, t) in a.tensors() {
            let d = (t - &b.tensors()[&name]).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{name}");
        }
    }

    #[test]
    fn both_layouts_round_trip_with_alpha() {
        let unet_layers = [layer("down_blocks.0.attn1.to_q"), layer("down_blocks.0.attn1.to_out.0")];
        let text_layers = [layer("text_model.encoder.layers.0.self_attn.q_proj")];
        let unet = adapters(&["down_blocks.0.attn1.to_q", "down_blocks.0.attn1.to_out.0"], 3.0);
        let text = adapters(&["text_model.encoder.layers.0.self_attn.q_proj"], 5.0);
        let dir = tempfile::tempdir().unwrap();
        for (file, kohya) in [("d.safetensors", false), ("k.safetensors", true)] {
            let path = dir.path().join(file);
            if kohya {
                write_kohya(&path, &unet, Some(&text)).unwrap();
            } else {
                write_diffusers(&path, &unet, Some(&text)).unwrap();
            }
            let back = read(&path, &unet_layers, &text_layers, &Device::Cpu).unwrap();
            same(&unet, back.unet.as_ref().unwrap());
            same(&text, back.text_encoder.as_ref().unwrap());
        }
        let keys: Vec<String> = candle_core::safetensors::load(dir.path().join("k.safetensors"), &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
        assert!(keys.contains(&"lora_unet_down_blocks_0_attn1_to_out_0.lora_down.weight".to_string()), "{keys:?}");
        assert!(keys.contains(&"lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha".to_string()), "{keys:?}");
        let meta = metadata(&dir.path().join("d.safetensors")).unwrap();
        let config: Value = serde_json::from_str(&meta[METADATA_KEY]).unwrap();
        assert_eq!((config["unet.r"].as_u64(), config["text_encoder.lora_alpha"].as_f64()), (Some(2), Some(5.0)));
    }

    #[test]
    fn foreign_tensors_and_non_safetensors_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("conv_in.weight".to_string(), t)]), &path).unwrap();
        let err = read(&path, &[], &[], &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("x.safetensors") && err.contains("conv_in.weight"), "{err}");
        std::fs::write(&path, b"not at all").unwrap();
        assert!(read(&path, &[], &[], &Device::Cpu).err().unwrap().to_string().contains("x.safetensors"));
    }
}
