//! `dbsweep sample`: images from a model folder or `builtin:tiny`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Error;
use crate::model::attention::AttentionMode;
use crate::model::pipeline::{SampleRequest, StableDiffusion};
use crate::model::{ModelError, builtin, png};
use crate::report::reference;
use crate::store::Store;

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
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Samples and writes `sample-NN-seedS.png` files; prints their paths.
pub fn sample(args: &SampleArgs, env: &[(String, String)], root: &Path, out: &mut dyn Write) -> Result<(), Error> {
    if args.steps == 0 || args.n == 0 || args.guidance.is_nan() || args.guidance < 0.0 {
        return Err(Error::Usage(format!(
            "--steps and --n must be at least 1 and --guidance at least 0 (got steps {}, n {}, guidance {})",
            args.steps, args.n, args.guidance
        )));
    }
    let device = super::train::choose_device(env)?.device;
    let mode = args.attention_chunk.map_or(AttentionMode::Full, AttentionMode::Chunked);
    let (mut store, checkpoint) = if reference::is_reference(&args.model) {
        let db = root.join(crate::store::DB_FILE);
        let store = Store::open_existing(&db)?
            .ok_or_else(|| Error::Usage(format!("--model {}: no lineage store at {}", args.model, db.display())))?;
        let r = reference::resolve(&store, root, &args.model).map_err(|e| Error::Usage(e.to_string()))?;
        (Some(store), Some(r))
    } else {
        (None, None)
    };
    let base = checkpoint.as_ref().map_or(args.model.as_str(), |r| r.config.model.pretrained.as_str());
    let folder = builtin::resolve(base, &root.join("models"))?;
    let model = StableDiffusion::load(&folder, &device, mode)?;
    if let Some(r) = &checkpoint {
        let text = r.folder.join("text_encoder.safetensors").exists().then_some(&model.text_vars);
        crate::train::checkpoint::restore(&r.folder, &model.unet_vars, text, None)
            .map_err(|e| Error::Usage(e.to_string()))?;
        if let Some(rule) = &r.rule {
            writeln!(out, "using run {} at step {} ({rule})", r.run_id, r.step)?;
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
