//! What a run trains (`train.method`): every weight of the UNet (and of the text encoder), or
//! low-rank adapters on a frozen base; the modules a step computes with, built from them at
//! the compute dtype; and the checkpoint files that hold them.
//!
//! A LoRA run's base model is loaded once and never copied: the step's modules are built from
//! detached views of its weights (cast once to the compute dtype under mixed precision), so
//! no gradient is computed for them, and only the adapters' variables reach the optimiser.
//! The model's own UNet and text encoder carry the adapters too (detached views of their
//! variables, which the optimiser updates in place), so validation, evaluation and sampling
//! see the adapted model as it trains.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{ExperimentConfig, TrainMethod};
use crate::model::attention::AttentionMode;
use crate::model::clip::ClipTextModel;
use crate::model::lora::adapters::AdapterSet;
use crate::model::lora::{Attach, Dropout, targets};
use crate::model::pipeline::StableDiffusion;
use crate::model::recompute::Recompute;
use crate::model::unet::UNet2DConditionModel;
use crate::model::{ModelError, Result};

/// The checkpoint file of a full run's UNet (diffusers names).
pub const UNET_FILE: &str = "unet.safetensors";
/// The checkpoint file of a full run's text encoder.
pub const TEXT_FILE: &str = "text_encoder.safetensors";
/// The checkpoint file of a LoRA run's UNet adapters (PEFT names inside the UNet).
pub const UNET_LORA_FILE: &str = "unet_lora.safetensors";
/// The checkpoint file of a LoRA run's text-encoder adapters.
pub const TEXT_LORA_FILE: &str = "text_encoder_lora.safetensors";

/// The trained variables of a run.
pub enum Trainable {
    /// The model's own variables: the UNet's, and the text encoder's when it is trained.
    Full {
        /// Whether the text encoder is trained.
        text_encoder: bool,
        /// Gradient checkpointing of the UNet's blocks (`train.gradient_checkpointing`).
        recompute: Option<Arc<Recompute>>,
    },
    /// Adapters on a frozen base.
    Lora(Box<LoraRun>),
}

/// A LoRA run's adapters and its frozen base.
pub struct LoraRun {
    /// The UNet's adapters.
    pub unet: AdapterSet,
    /// The text encoder's, when it is trained.
    pub text_encoder: Option<AdapterSet>,
    dropout: f32,
    recompute: Option<Arc<Recompute>>,
    /// The base weights at the compute dtype, detached: what every step's modules are built on.
    frozen_unet: HashMap<String, Tensor>,
    frozen_text: HashMap<String, Tensor>,
}

/// The modules one step (or micro-batch) computes with.
pub struct StepModels {
    /// The UNet.
    pub unet: UNet2DConditionModel,
    /// The text encoder, when it is trained at this step.
    pub text_encoder: Option<ClipTextModel>,
}

/// `vars`' tensors at `dtype`: casts that keep the graph to the variables (`detached` false),
/// or detached views (true; no copy at f32).
pub fn tensors_at(vars: &VarMap, dtype: DType, detached: bool) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = vars.data().lock().expect("variable map lock");
    data.iter()
        .map(|(name, var)| {
            let t = if detached { var.as_tensor().detach() } else { var.as_tensor().clone() };
            Ok((name.clone(), if t.dtype() == dtype { t } else { t.to_dtype(dtype)? }))
        })
        .collect()
}

impl Trainable {
    /// What `cfg` trains on `model`, computing in `dtype`. A LoRA run's adapters are created
    /// (seeded by the run seed) and attached to `model` for sampling.
    pub fn new(cfg: &ExperimentConfig, model: &mut StableDiffusion, dtype: DType) -> Result<Self> {
        let with_text = cfg.train.train_text_encoder;
        let checkpointing = cfg.train.gradient_checkpointing;
        let recompute = |params: Vec<(String, Var)>, device: &candle_core::Device| -> Result<Option<Arc<Recompute>>> {
            let tensors = params.into_iter().map(|(_, v)| v.as_tensor().clone()).collect();
            Ok(checkpointing.then(|| Recompute::new(tensors, device)).transpose()?)
        };
        if cfg.train.method == TrainMethod::Full {
            let mut full = Trainable::Full { text_encoder: with_text, recompute: None };
            let checkpointed = recompute(full.parameters(model), &model.device)?;
            if let Trainable::Full { recompute, .. } = &mut full {
                *recompute = checkpointed;
            }
            return Ok(full);
        }
        let l = &cfg.lora;
        let (rank, alpha) = (l.rank as usize, l.alpha());
        let device = model.device.clone();
        let layers =
            targets::select(&targets::layers(&mut model.unet), &l.target_modules, "lora.target_modules", "the UNet")?;
        let unet = AdapterSet::new(&layers, rank, alpha, l.init, cfg.seed, &device)?;
        let text_encoder = if with_text {
            let all = targets::layers(&mut model.text_encoder);
            let layers = targets::select(&all, &l.text_target_modules, "lora.text_target_modules", "the text encoder")?;
            Some(AdapterSet::new(&layers, rank, alpha, l.init, cfg.seed, &device)?)
        } else {
            None
        };
        let run = LoraRun {
            frozen_unet: tensors_at(&model.unet_vars, dtype, true)?,
            frozen_text: tensors_at(&model.text_vars, dtype, true)?,
            unet,
            text_encoder,
            dropout: l.dropout as f32,
            recompute: None,
        };
        run.attach_for_sampling(model)?;
        let mut lora = Trainable::Lora(Box::new(run));
        let checkpointed = recompute(lora.parameters(model), &model.device)?;
        if let Trainable::Lora(run) = &mut lora {
            run.recompute = checkpointed;
        }
        Ok(lora)
    }

    /// The variables the optimiser updates, named `unet.NAME` / `text_encoder.NAME`, in name
    /// order.
    pub fn parameters(&self, model: &StableDiffusion) -> Vec<(String, Var)> {
        self.files(model)
            .into_iter()
            .flat_map(|(file, vars)| {
                let prefix = if file.starts_with("unet") { "unet" } else { "text_encoder" };
                named_vars(prefix, vars)
            })
            .collect()
    }

    /// The checkpoint files of the trained variables, with the variables each holds.
    pub fn files<'a>(&'a self, model: &'a StableDiffusion) -> Vec<(&'static str, &'a VarMap)> {
        match self {
            Trainable::Full { text_encoder, .. } => {
                let mut files = vec![(UNET_FILE, &model.unet_vars)];
                if *text_encoder {
                    files.push((TEXT_FILE, &model.text_vars));
                }
                files
            }
            Trainable::Lora(run) => {
                let mut files = vec![(UNET_LORA_FILE, &run.unet.vars)];
                if let Some(text) = &run.text_encoder {
                    files.push((TEXT_LORA_FILE, &text.vars));
                }
                files
            }
        }
    }

    /// Whether each micro-batch needs modules of its own (adapter dropout draws a mask per
    /// micro-batch).
    pub fn per_micro_batch(&self) -> bool {
        matches!(self, Trainable::Lora(run) if run.dropout > 0.0)
    }

    /// The modules a step computes with at `dtype` (the text encoder only when `with_text`),
    /// with adapter dropout seeded by `dropout_key`; `None` when the model's own f32 modules
    /// are the ones trained (a full run without mixed precision).
    pub fn step_models(
        &self,
        model: &StableDiffusion,
        dtype: DType,
        with_text: bool,
        mode: AttentionMode,
        dropout_key: u64,
    ) -> Result<Option<StepModels>> {
        match self {
            Trainable::Full { recompute: None, .. } if dtype == DType::F32 => Ok(None),
            Trainable::Full { recompute: Some(recompute), .. } if dtype == DType::F32 => {
                let mut unet = model.unet.clone();
                unet.set_recompute(Some(Arc::clone(recompute)));
                Ok(Some(StepModels { unet, text_encoder: with_text.then(|| model.text_encoder.clone()) }))
            }
            Trainable::Full { recompute, .. } => {
                let unet = tensors_at(&model.unet_vars, dtype, false)?;
                let text = with_text.then(|| tensors_at(&model.text_vars, dtype, false)).transpose()?;
                let mut built = build(model, dtype, mode, unet, text)?;
                built.unet.set_recompute(recompute.clone());
                Ok(Some(built))
            }
            Trainable::Lora(run) => {
                let with_text = with_text && run.text_encoder.is_some();
                let text = with_text.then(|| run.frozen_text.clone());
                let mut built = build(model, dtype, mode, run.frozen_unet.clone(), text)?;
                built.unet.set_recompute(run.recompute.clone());
                let dropout = (run.dropout > 0.0).then_some(Dropout { p: run.dropout, key: dropout_key });
                let how = Attach { dtype, trainable: true, strength: 1.0, dropout };
                run.unet.attach(&mut built.unet, how, "the UNet")?;
                if let (Some(encoder), Some(adapters)) = (&mut built.text_encoder, &run.text_encoder) {
                    adapters.attach(encoder, how, "the text encoder")?;
                }
                Ok(Some(built))
            }
        }
    }
}

impl Trainable {
    /// Adds what checkpointed blocks computed in the last backward pass to `grads` (nothing
    /// without gradient checkpointing).
    pub fn merge_recomputed(&self, grads: &mut GradStore) -> Result<()> {
        let recompute = match self {
            Trainable::Full { recompute, .. } => recompute,
            Trainable::Lora(run) => &run.recompute,
        };
        if let Some(r) = recompute {
            r.merge_into(grads)?;
        }
        Ok(())
    }
}

impl LoraRun {
    /// Attaches the adapters to `model`'s own UNet and text encoder, detached, for sampling.
    fn attach_for_sampling(&self, model: &mut StableDiffusion) -> Result<()> {
        self.unet.attach(&mut model.unet, Attach::inference(1.0), "the UNet")?;
        if let Some(text) = &self.text_encoder {
            text.attach(&mut model.text_encoder, Attach::inference(1.0), "the text encoder")?;
        }
        Ok(())
    }
}

/// The UNet (and text encoder) of `model`'s architecture built from `unet` (and `text`).
fn build(
    model: &StableDiffusion,
    dtype: DType,
    mode: AttentionMode,
    unet: HashMap<String, Tensor>,
    text: Option<HashMap<String, Tensor>>,
) -> Result<StepModels> {
    let (folder, device) = (&model.folder, &model.device);
    let unet = UNet2DConditionModel::new(
        VarBuilder::from_tensors(unet, dtype, device),
        &model.unet_config,
        &folder.join("unet/config.json"),
        mode,
    )?;
    let text_encoder = text
        .map(|t| {
            let path = folder.join("text_encoder/config.json");
            ClipTextModel::new(VarBuilder::from_tensors(t, dtype, device), &model.text_config, &path)
        })
        .transpose()?;
    Ok(StepModels { unet, text_encoder })
}

/// The variables of `vars` in name order, named `prefix.name`.
fn named_vars(prefix: &str, vars: &VarMap) -> Vec<(String, Var)> {
    let data = vars.data().lock().expect("variable map lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names.into_iter().map(|n| (format!("{prefix}.{n}"), data[n].clone())).collect()
}

/// Applies the checkpoint in `folder` (verified) to `model` for sampling: a full run's weights
/// replace the base's, a LoRA run's adapters (alpha from `cfg`) are attached at `strength`.
pub fn apply_checkpoint(
    model: &mut StableDiffusion,
    folder: &std::path::Path,
    cfg: &ExperimentConfig,
    strength: f64,
) -> std::result::Result<(), super::checkpoint::CheckpointError> {
    let err = |e: ModelError| super::checkpoint::CheckpointError { path: folder.to_path_buf(), message: e.to_string() };
    if let Some((unet, text)) = super::checkpoint::adapters(folder, cfg.lora.alpha(), &model.device)? {
        unet.attach(&mut model.unet, Attach::inference(strength), "the UNet").map_err(err)?;
        if let Some(text) = text {
            text.attach(&mut model.text_encoder, Attach::inference(strength), "the text encoder").map_err(err)?;
        }
        return Ok(());
    }
    let mut files = vec![(UNET_FILE, &model.unet_vars)];
    if folder.join(TEXT_FILE).exists() {
        files.push((TEXT_FILE, &model.text_vars));
    }
    super::checkpoint::restore(folder, &files, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builtin;
    use candle_core::Device;

    fn tiny(root: &std::path::Path) -> StableDiffusion {
        let folder = builtin::resolve("builtin:tiny", root).unwrap();
        StableDiffusion::load(&folder, &Device::Cpu, AttentionMode::Full).unwrap()
    }

    fn inputs(model: &StableDiffusion, dtype: DType) -> (Tensor, Tensor, Tensor) {
        let size = model.default_size() / model.vae_scale_factor();
        let shape = (1, model.unet_config.in_channels, size, size);
        let latents = Tensor::ones(shape, DType::F32, &model.device).unwrap().to_dtype(dtype).unwrap();
        let ts = Tensor::new(&[500f32], &model.device).unwrap();
        let context = model.text_encoder.forward(&model.token_ids(&["a photo of sks dog"]).unwrap()).unwrap();
        (latents, ts, context.to_dtype(dtype).unwrap())
    }

    #[test]
    fn half_precision_modules_backpropagate_f32_gradients_to_the_masters() {
        let root = tempfile::tempdir().unwrap();
        let model = tiny(root.path());
        let full = Trainable::Full { text_encoder: true, recompute: None };
        let cast = full.step_models(&model, DType::F16, true, AttentionMode::Full, 0).unwrap().unwrap();
        let ids = model.token_ids(&["a photo of sks dog"]).unwrap();
        let context = cast.text_encoder.as_ref().unwrap().forward(&ids).unwrap();
        assert_eq!(context.dtype(), DType::F16);
        let (latents, ts, _) = inputs(&model, DType::F16);
        let pred = cast.unet.forward(&latents, &ts, &context).unwrap();
        assert_eq!(pred.dtype(), DType::F16);
        // The same forward in f32 agrees to f16's precision.
        let (latents32, _, context32) = inputs(&model, DType::F32);
        let reference = model.unet.forward(&latents32, &ts, &context32).unwrap();
        let diff = (pred.to_dtype(DType::F32).unwrap() - &reference).unwrap().abs().unwrap().max_all().unwrap();
        let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 0.05 * scale.max(1.0), "f16 far from f32");
        let grads = pred.to_dtype(DType::F32).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap();
        for (_, var) in full.parameters(&model).iter().take(50) {
            if let Some(g) = grads.get(var.as_tensor()) {
                assert_eq!(g.dtype(), DType::F32);
            }
        }
        assert!(full.parameters(&model).iter().any(|(_, v)| grads.get(v.as_tensor()).is_some()));
    }

    #[test]
    fn lora_starts_as_the_base_and_only_the_adapters_get_gradients() {
        let root = tempfile::tempdir().unwrap();
        let mut model = tiny(root.path());
        let (latents, ts, context) = inputs(&model, DType::F32);
        let base = model.unet.forward(&latents, &ts, &context).unwrap();
        let mut cfg = ExperimentConfig::default();
        cfg.train.method = TrainMethod::Lora;
        cfg.train.train_text_encoder = true;
        let lora = Trainable::new(&cfg, &mut model, DType::F32).unwrap();
        let Trainable::Lora(run) = &lora else { panic!("a LoRA run") };
        // Four projections in each attention of each transformer block; B starts at zero.
        assert_eq!(run.unet.layers.len() % 4, 0);
        assert!(run.unet.layers.iter().all(|l| l.rank == 4 && l.alpha == 4.0));
        let params = lora.parameters(&model);
        assert!(params.iter().all(|(n, _)| n.contains(".lora_A.") || n.contains(".lora_B.")), "adapters only");
        assert!(params.iter().any(|(n, _)| n.starts_with("text_encoder.text_model.")));
        let step = lora.step_models(&model, DType::F32, true, AttentionMode::Full, 0).unwrap().unwrap();
        let adapted = step.unet.forward(&latents, &ts, &context).unwrap();
        assert_eq!((&adapted - &base).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let grads = adapted.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        let unet_b = params.iter().filter(|(n, _)| n.starts_with("unet.") && n.ends_with("lora_B.weight"));
        assert!(unet_b.clone().all(|(_, v)| grads.get(v.as_tensor()).is_some()), "every UNet B has a gradient");
        let frozen = model.unet_vars.data().lock().unwrap();
        assert!(frozen.values().all(|v| grads.get(v.as_tensor()).is_none()), "the base gets none");
        drop(frozen);
        // Moving B moves the model's own (sampling) UNet the same way, without rebuilding it.
        for (_, v) in unet_b {
            v.set(&(v.as_tensor().ones_like().unwrap() * 0.01).unwrap()).unwrap();
        }
        let trained = lora.step_models(&model, DType::F32, true, AttentionMode::Full, 0).unwrap().unwrap();
        let moved = trained.unet.forward(&latents, &ts, &context).unwrap();
        let sampled = model.unet.forward(&latents, &ts, &context).unwrap();
        assert!((&moved - &base).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        assert_eq!((&moved - &sampled).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    /// Gradient checkpointing recomputes each block in the backward pass: the same loss and the
    /// same gradients for every trained variable (full and LoRA, with the text encoder).
    #[test]
    fn gradient_checkpointing_gives_the_same_gradients() {
        let root = tempfile::tempdir().unwrap();
        for method in [TrainMethod::Full, TrainMethod::Lora] {
            let grads = |checkpointing: bool| {
                let mut model = tiny(root.path());
                let mut cfg = ExperimentConfig::default();
                cfg.train.method = method;
                cfg.train.train_text_encoder = true;
                cfg.train.gradient_checkpointing = checkpointing;
                let trainable = Trainable::new(&cfg, &mut model, DType::F32).unwrap();
                // Non-zero B so LoRA's A get gradients too.
                for (name, var) in trainable.parameters(&model) {
                    if name.ends_with("lora_B.weight") {
                        var.set(&(var.as_tensor().ones_like().unwrap() * 0.01).unwrap()).unwrap();
                    }
                }
                let (latents, ts, _) = inputs(&model, DType::F32);
                let built = trainable.step_models(&model, DType::F32, true, AttentionMode::Full, 0).unwrap();
                let unet = built.as_ref().map_or(&model.unet, |b| &b.unet);
                let text = built.as_ref().and_then(|b| b.text_encoder.as_ref()).unwrap_or(&model.text_encoder);
                let context = text.forward(&model.token_ids(&["a photo of sks dog"]).unwrap()).unwrap();
                let loss = unet.forward(&latents, &ts, &context).unwrap().sqr().unwrap().mean_all().unwrap();
                let mut g = loss.backward().unwrap();
                trainable.merge_recomputed(&mut g).unwrap();
                let values: Vec<(String, Option<Vec<f32>>)> = trainable
                    .parameters(&model)
                    .into_iter()
                    .map(|(n, v)| (n, g.get(v.as_tensor()).map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())))
                    .collect();
                (loss.to_scalar::<f32>().unwrap(), values)
            };
            let (plain_loss, plain) = grads(false);
            let (loss, checkpointed) = grads(true);
            assert_eq!(loss, plain_loss, "{method:?}");
            let (mut compared, mut worst, mut worst_name) = (0, 0f64, String::new());
            let (mut all_diff, mut all_scale) = (0f64, 0f64);
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            // Gradients that are analytically zero (e.g. CLIP's key bias: softmax ignores a
            // constant added to every score) are rounding noise in both runs: not compared.
            let largest = plain
                .iter()
                .filter_map(|(_, a)| a.as_ref())
                .map(|a| norm(&mut a.iter().map(|x| *x as f64)))
                .fold(0f64, f64::max);
            for ((name, a), (_, b)) in plain.iter().zip(&checkpointed) {
                assert_eq!(a.is_some(), b.is_some(), "{method:?} {name}: gradient present in one run only");
                let (Some(a), Some(b)) = (a, b) else { continue };
                // Relative in norm: the recomputed block's input gradient joins the others in
                // another order, so single elements may differ in their last bits.
                let diff = norm(&mut a.iter().zip(b).map(|(x, y)| (x - y) as f64));
                let scale = norm(&mut a.iter().map(|x| *x as f64));
                if scale < 1e-5 * largest {
                    continue;
                }
                (all_diff, all_scale) = (all_diff + diff * diff, all_scale + scale * scale);
                if diff / scale > worst {
                    (worst, worst_name) = (diff / scale, format!("{name} (norm {scale:.2e})"));
                }
                compared += 1;
            }
            assert!(compared > 10, "{method:?}: {compared} gradients compared");
            // All gradients together within 1e-6; single tensors, whose sums over many elements
            // meet the recomputed inputs' gradients in another order, within a few units more.
            let overall = (all_diff / all_scale).sqrt();
            eprintln!("{method:?}: overall {overall:.2e}, largest {worst:.2e} at {worst_name}");
            assert!(overall <= 1e-6, "{method:?}: overall relative difference {overall:.2e}");
            assert!(worst <= 1e-5, "{method:?}: largest relative difference {worst:.2e} at {worst_name}");
        }
    }
}
