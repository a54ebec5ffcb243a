//! One DreamBooth training step on the tiny fixture architecture (VAE encode + text encoder +
//! UNet forward/backward + AdamW), in dbsweep (candle) and, when a Python with torch +
//! diffusers (+ PEFT for LoRA) is available, the identical step in PyTorch
//! (`benches/torch_step.py`), side by side with their ratio; for a full fine-tune (UNet and
//! text encoder) and for LoRA (rank 4 on the UNet's attention projections, the text encoder
//! frozen), each with the process's peak resident memory.
//!
//! `cargo bench --bench train_step`. The PyTorch side runs when `DBSWEEP_TORCH_PYTHON` names a
//! Python interpreter with torch and diffusers, or `target/fixtures-venv/bin/python` exists
//! (see `tests/fixtures/make_fixtures.py`). Each configuration runs in a fresh child process so
//! that the thread count (`RAYON_NUM_THREADS` for candle, `torch.set_num_threads`) is exact and
//! the peak memory is its own; each side runs three times, alternating, and the medians are
//! compared. `batch` counts rows: half instance, half class
//! (prior-preservation) examples.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{StepRig, median_by, peak_rss_mib};
use dbsweep::config::{ExperimentConfig, TrainMethod};
use dbsweep::model::attention::AttentionMode;

const CHILD: &str = "DBSWEEP_BENCH_CHILD";
/// Runs of each configuration, on each side (the medians are compared).
const ROUNDS: usize = 3;

/// The same allocator as the `dbsweep` binary (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Milliseconds per step of `method` (the trainer's own modules and AdamW).
fn child(resolution: usize, batch: usize, steps: usize, method: TrainMethod) -> f64 {
    let mut cfg = ExperimentConfig::default();
    cfg.train.method = method;
    cfg.train.train_text_encoder = method == TrainMethod::Full;
    StepRig::new(&repo().join("tests/fixtures/sd1"), &cfg, resolution, batch, AttentionMode::Full, false).time(steps)
}

fn torch_python() -> Option<PathBuf> {
    std::env::var_os("DBSWEEP_TORCH_PYTHON").map(PathBuf::from).or_else(|| {
        let p = repo().join("target/fixtures-venv/bin/python");
        p.exists().then_some(p)
    })
}

/// `(ms per step, peak MiB)` from a child's last output line.
fn result(output: &[u8]) -> Option<(f64, f64)> {
    let text = String::from_utf8_lossy(output);
    let v = serde_json::from_str::<serde_json::Value>(text.lines().last()?).ok()?;
    Some((v["ms_per_step"].as_f64()?, v["peak_rss_mib"].as_f64()?))
}

fn main() {
    // As the dbsweep binary does (src/main.rs).
    dbsweep::allocator::keep_freed_memory();
    // SAFETY: at the start of main, before any other thread exists.
    unsafe { dbsweep::threads::compute_on_this_thread() };
    if let Ok(spec) = std::env::var(CHILD) {
        let v: Vec<&str> = spec.split(',').collect();
        let method = if v[3] == "lora" { TrainMethod::Lora } else { TrainMethod::Full };
        let ms = child(v[0].parse().unwrap(), v[1].parse().unwrap(), v[2].parse().unwrap(), method);
        println!("{{\"ms_per_step\": {ms}, \"peak_rss_mib\": {}}}", peak_rss_mib());
        return;
    }
    let python = torch_python();
    println!("one DreamBooth training step, tiny sd1 architecture (VAE /2, UNet 32/64, CLIP 2x32)");
    println!(
        "{:>6} {:>4} {:>5} {:>7} {:>11} {:>11} {:>7} {:>10} {:>10}",
        "method", "px", "batch", "threads", "dbsweep ms", "pytorch ms", "ratio", "dbsweep MB", "pytorch MB"
    );
    for method in ["full", "lora"] {
        for (resolution, batch) in [(32, 2), (32, 4), (64, 2), (64, 4)] {
            for threads in [1, 2] {
                let steps = if resolution == 32 { 8 } else { 4 };
                let ours_once = || {
                    let out = Command::new(std::env::current_exe().unwrap())
                        .env(CHILD, format!("{resolution},{batch},{steps},{method}"))
                        .env("RAYON_NUM_THREADS", threads.to_string())
                        .output()
                        .unwrap();
                    result(&out.stdout).expect("child result")
                };
                let theirs_once = || {
                    let out = Command::new(python.as_ref()?)
                        .current_dir(repo())
                        .args(["benches/torch_step.py", "--resolution", &resolution.to_string()])
                        .args(["--batch", &batch.to_string(), "--threads", &threads.to_string()])
                        .args(["--steps", &steps.to_string(), "--method", method])
                        .output()
                        .ok()?;
                    result(&out.stdout)
                };
                // ROUNDS runs of each, alternating, so that a slow spell of the machine
                // touches both alike; the medians are compared.
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for _ in 0..ROUNDS {
                    ours.push(ours_once());
                    theirs.extend(theirs_once());
                }
                let (ours, ours_mb) = median_by(&mut ours, |r| r.0).expect("dbsweep ran");
                let theirs = median_by(&mut theirs, |r| r.0);
                let (theirs_ms, ratio, theirs_mb) = match theirs {
                    Some((t, mb)) => (format!("{t:.1}"), format!("{:.2}x", ours / t), format!("{mb:.0}")),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                println!(
                    "{method:>6} {resolution:>4} {batch:>5} {threads:>7} {ours:>11.1} {theirs_ms:>11} {ratio:>7} {ours_mb:>10.0} {theirs_mb:>10}"
                );
            }
        }
    }
    if python.is_none() {
        println!("(no PyTorch: set DBSWEEP_TORCH_PYTHON to a Python with torch + diffusers + peft for the baseline)");
    }
}
