//! What evaluation costs next to training, on the built-in tiny model (32 px) with the
//! built-in CLIP and DINO judges:
//!
//! - one evaluation (generate, embed, score) with the main job's settings (3 prompts x 2
//!   images, 10 steps) and with the paper's (25 prompts x 4 images, 50 steps), against one
//!   training step (measured with the `dbsweep` binary: a 40-step run minus a 10-step run, warm
//!   caches, divided by 30);
//! - the shared step-0 baseline: a cold evaluation of the base model against a warm one (from
//!   the cache), and what sharing it saves across a sweep of 8 runs.
//!
//! `cargo bench --bench eval`.

mod common;

use std::path::Path;
use std::time::Instant;

use common::dbsweep;

use candle_core::Device;
use dbsweep::config::EvaluationConfig;
use dbsweep::eval::evaluator::Evaluator;
use dbsweep::image_set::ImageSet;
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::builtin;
use dbsweep::model::pipeline::StableDiffusion;

/// The same allocator as the `dbsweep` binary (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn train(root: &Path, steps: u32) -> f64 {
    let steps = format!("train.max_train_steps={steps}");
    let no_checks = ["--set", "validation.every_steps=100000", "--set", "checkpoint.every_steps=100000"];
    let mut args = vec!["train", "sweeps/base/tiny.yaml", "--rerun", "--set", &steps];
    args.extend(no_checks);
    dbsweep(root, &args).0
}

fn main() {
    dbsweep::allocator::keep_freed_memory();
    // SAFETY: at the start of main, before any other thread exists.
    unsafe { dbsweep::threads::compute_on_this_thread() };
    let root = tempfile::tempdir().unwrap();
    train(root.path(), 10); // fills the caches
    let step = (train(root.path(), 40) - train(root.path(), 10)) / 30.0;

    let models = root.path().join("models");
    let folder = builtin::resolve(builtin::NAME, &models).unwrap();
    let model = StableDiffusion::load(&folder, &Device::Cpu, AttentionMode::Full).unwrap();
    let instance = ImageSet::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/instance")).unwrap();
    let judged = |settings: &EvaluationConfig| Evaluator::new(settings, &instance, &models, &Device::Cpu).unwrap();
    let paper = EvaluationConfig {
        clip_model: Some("builtin:clip-tiny".into()),
        dino_model: Some("builtin:dino-tiny".into()),
        ..EvaluationConfig::default()
    };
    let main_job = EvaluationConfig {
        prompts: Some(vec!["a {} in the snow".into(), "a {} on the beach".into(), "a red {}".into()]),
        images_per_prompt: 2,
        steps: 10,
        ..paper.clone()
    };
    println!("evaluation next to training, builtin:tiny at 32 px, built-in CLIP and DINO judges");
    println!("  one training step (batch 1 + 1 class image)      {:>9.1} ms", step * 1000.0);
    for (name, settings) in
        [("main job (3 prompts x 2, 10 steps)", &main_job), ("paper (25 prompts x 4, 50 steps)", &paper)]
    {
        let evaluator = judged(settings);
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let scored = evaluator.evaluate(&model, "a photo of a dog", 32, dir.path()).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(scored.scores.metrics.len(), 5);
        println!("  one evaluation, {name:<34} {:>9.1} ms  ({:.0} training steps)", seconds * 1000.0, seconds / step);
    }
    let evaluator = judged(&main_job);
    let cache = root.path().join("cache");
    let key = "bench-base-model";
    let start = Instant::now();
    let cold = evaluator.baseline(&model, key, "a photo of a dog", 32, &cache).unwrap();
    let cold_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let warm = evaluator.baseline(&model, key, "a photo of a dog", 32, &cache).unwrap();
    let warm_s = start.elapsed().as_secs_f64();
    assert!(!cold.cached && warm.cached && warm.scores == cold.scores);
    println!("\nthe shared step-0 evaluation of the base model (main job's settings)");
    println!("  computed (first run)   {:>9.1} ms", cold_s * 1000.0);
    println!("  from the cache         {:>9.1} ms  ({:.0}x faster)", warm_s * 1000.0, cold_s / warm_s.max(1e-9));
    let (shared, unshared) = (cold_s + 7.0 * warm_s, 8.0 * cold_s);
    println!(
        "  8-run sweep: {:.2} s shared vs {:.2} s if each run evaluated the base model itself ({:.2} s saved, {:.1}x)",
        shared,
        unshared,
        unshared - shared,
        unshared / shared
    );
}
