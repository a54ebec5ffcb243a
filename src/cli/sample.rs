//! `dbsweep sample`: images from a model folder or `builtin:tiny`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Error, open_store, read_store};
use crate::model::attention::AttentionMode;
use crate::model::pipeline::{SampleRequest, StableDiffusion};
use crate::model::{ModelError, builtin, device, lora, png};
use crate::report::checkpoint_ref::{self, RefError};
use crate::train::trainable::apply_checkpoint;

/// Options of `dbsweep sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// A diffusers-layout model folder, `builtin:tiny`, or a trained checkpoint: `RUN_ID`
    /// (its newest), `RUN_ID@STEP` or `best:SWEEP`.
    #[arg(long, default_value = builtin::NAME)]
    pub model: String,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (the unconditional branch of guidance).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Seed of the first image; image i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of images.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Image size in pixels (default: the model's).
    #[arg(long)]
    pub size: Option<usize>,
    /// Initial latents from a safetensors file (tensor `latents`, [n, channels, h, w]), as
    /// diffusers pipelines accept `latents=`.
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Attend in chunks of this many queries (bounded memory) instead of all at once.
    #[arg(long)]
    pub attention_chunk: Option<usize>,
    /// LoRA adapters to add to the model: a file as diffusers' `save_lora_weights`
    /// (`pytorch_lora_weights.safetensors`), its DreamBooth LoRA script or kohya-ss write them.
    #[arg(long, value_name = "FILE")]
    pub lora: Option<PathBuf>,
    /// Strength of the LoRA adapters (a LoRA run's, or `--lora`'s): multiplies each layer's
    /// alpha / rank, as diffusers' LoRA scale does.
    #[arg(long, default_value_t = 1.0)]
    pub lora_scale: f64,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Samples and writes `sample-NN-seedS.png` files; prints their paths.
pub fn sample(args: &SampleArgs, env: &[(String, String)], root: &Path, out: &mut dyn Write) -> Result<(), Error> {
    if !args.lora_scale.is_finite() {
        return Err(Error::Usage(format!(
            "--lora-scale {}: expected a finite number (1: as trained)",
            args.lora_scale
        )));
    }
    if args.steps == 0 || args.n == 0 || args.guidance.is_nan() || args.guidance < 0.0 {
        return Err(Error::Usage(format!(
            "--steps and --n must be at least 1 and --guidance at least 0 (got steps {}, n {}, guidance {})",
            args.steps, args.n, args.guidance
        )));
    }
    let visible = env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.as_str());
    let choice = device::choose(visible)?;
    if let Some(warning) = &choice.warning {
        eprintln!("warning: {warning}");
    }
    let device = choice.device;
    let mode = args.attention_chunk.map_or(AttentionMode::Full, AttentionMode::Chunked);
    let (mut store, checkpoint) = if checkpoint_ref::is_reference(&args.model) {
        let what = format!("--model {}", args.model);
        // Samples are recorded as the run's artifacts where the store can be written.
        let store = match open_store(root, &what) {
            Ok(store) => store,
            Err(e) => {
                let store = read_store(root, &what).map_err(|_| e)?;
                eprintln!("note: the lineage store cannot be written here: the samples are not recorded in it");
                store
            }
        };
        let r = checkpoint_ref::resolve(&store, root, &args.model)?;
        let writable = !store.is_read_only();
        (writable.then_some(store), Some(r))
    } else {
        (None, None)
    };
    if checkpoint.is_none() && !args.model.starts_with("builtin:") && !Path::new(&args.model).exists() {
        // Not a folder: perhaps a run id with a typo; name the closest run as `show` would.
        if let Ok(store) = read_store(root, "sample")
            && let Err(e @ crate::store::StoreError::NotFound { hint: Some(_), .. }) = store.run(&args.model)
        {
            return Err(Error::Usage(format!("--model {}: no such model folder, and {e}", args.model)));
        }
    }
    let base = checkpoint.as_ref().map_or(args.model.as_str(), |r| r.config.model.pretrained.as_str());
    let folder = builtin::resolve(base, &root.join("models"))?;
    let mut model = StableDiffusion::load(&folder, &device, mode)?;
    if let Some(path) = &args.lora {
        lora::files::apply(path, &mut model, args.lora_scale)?;
    }
    if let Some(r) = &checkpoint {
        apply_checkpoint(&mut model, &r.folder, &r.config, args.lora_scale).map_err(RefError::from)?;
        if let Some(rule) = &r.rule {
            // A note, not a result: stdout lists only the images written.
            eprintln!("using run {} at step {} ({rule})", r.run_id, r.step);
        }
    }
    let latents = args.latents.as_deref().map(|p| load_latents(p, &model)).transpose()?;
    let step = model.vae_scale_factor() << (model.unet_config.block_out_channels.len() - 1);
    let size = match (&latents, args.size) {
        (Some(l), _) => l.dim(2)? * model.vae_scale_factor(),
        (None, Some(s)) => s,
        (None, None) => model.default_size(),
    };
    if size == 0 || size % step != 0 {
        return Err(Error::Usage(format!("--size {size}: this model needs a positive multiple of {step} pixels")));
    }
    let count = latents.as_ref().map_or(Ok(args.n), |l| l.dim(0))?;
    let req = SampleRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance: args.guidance,
        seed: args.seed,
        count,
        size: (size, size),
        latents,
    };
    let samples = model.sample(&req)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| ModelError::Write { path: args.out.clone(), message: e.to_string() })?;
    for (i, image) in png::to_rgb8(&samples.images)?.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        let path = args.out.join(format!("sample-{i:02}-seed{seed}.png"));
        let settings = serde_json::json!({
            "prompt": req.prompt, "negative_prompt": req.negative_prompt, "seed": seed, "steps": req.steps,
            "guidance": req.guidance, "size": size, "model": args.model, "sampler": "ddim",
            "latents": args.latents.as_ref().map(|p| p.display().to_string()),
            "lora": args.lora.as_ref().map(|p| p.display().to_string()), "lora_scale": args.lora_scale,
        });
        let text = [
            ("prompt", req.prompt.clone()),
            ("negative_prompt", req.negative_prompt.clone()),
            ("seed", seed.to_string()),
            ("dbsweep", settings.to_string()),
            ("Software", format!("dbsweep {}", env!("CARGO_PKG_VERSION"))),
        ];
        let sha = png::write(&path, image, &text)?;
        if let (Some(store), Some(r)) = (store.as_mut(), &checkpoint) {
            let meta = serde_json::json!({"settings": settings, "checkpoint_step": r.step}).to_string();
            store.add_artifact(&r.run_id, Some(r.step), "sample", &path.display().to_string(), &sha, &meta)?;
        }
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

fn load_latents(path: &Path, model: &StableDiffusion) -> Result<candle_core::Tensor, Error> {
    let bad = |message: String| Error::Usage(format!("--latents {}: {message}", path.display()));
    let tensors = candle_core::safetensors::load(path, &model.device).map_err(|e| bad(e.to_string()))?;
    let latents = tensors.get("latents").ok_or_else(|| bad("no tensor named `latents`".into()))?;
    let channels = model.unet_config.in_channels;
    match latents.dims() {
        [n, c, h, w] if *n > 0 && *c == channels && h == w && *h > 0 => Ok(latents.to_dtype(candle_core::DType::F32)?),
        dims => Err(bad(format!("expected a [n, {channels}, h, h] tensor, found {dims:?}"))),
    }
}
