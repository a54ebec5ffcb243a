//! What the memory savers save and cost: one DreamBooth training step of the built-in tiny
//! model at 256 px (batch 1 instance + 1 class image, latents cached as the trainer caches
//! them for centre-cropped images, UNet and text encoder trained), with and
//! without gradient checkpointing and with AdamW against 8-bit AdamW, each in a fresh child
//! process, side by side with the plain step:
//!
//! - step time (after a warm-up step; the median of three runs, interleaved);
//! - step memory: the most memory live at once during a step (forward, backward, update) above
//!   what was live before it (the model and the optimiser state), counted by the allocator:
//!   activations, gradients and temporaries;
//! - optimiser state: the bytes of AdamW's moments;
//! - the process's peak resident memory;
//!
//! and, by the same formula as the optimiser's, the optimiser state of Stable Diffusion 1.5's
//! UNet and text encoder (their parameter shapes from `builtin:sd15-shape`'s configs).
//!
//! `cargo bench --bench memory`.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{StepRig, median_by, peak_rss_mib};
use dbsweep::config::{ExperimentConfig, OptimizerKind};
use dbsweep::model::attention::AttentionMode;
use dbsweep::model::builtin;
use dbsweep::train::optimizer::state_bytes;

const CHILD: &str = "DBSWEEP_BENCH_CHILD";
const RESOLUTION: usize = 256;
/// Attention in chunks of this many queries, as real-size training does: the full score
/// matrix of the 128x128 latent's first level (1 GB) would be the peak whatever else is saved.
const CHUNK: usize = 256;
/// Runs of each configuration (the median time is reported).
const ROUNDS: usize = 3;

/// mimalloc (as the `dbsweep` binary uses), counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to mimalloc unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { INNER.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { INNER.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One configuration's figures: ms per step, step memory, optimiser state (bytes), peak RSS.
fn child(checkpointing: bool, optimizer: OptimizerKind) -> (f64, usize, usize, f64) {
    let models = tempfile::tempdir().unwrap();
    let folder = builtin::resolve(builtin::NAME, models.path()).unwrap();
    let mut cfg = ExperimentConfig::default();
    cfg.train.train_text_encoder = true;
    cfg.train.gradient_checkpointing = checkpointing;
    cfg.train.optimizer = optimizer;
    let mut rig = StepRig::new(&folder, &cfg, RESOLUTION, 2, AttentionMode::Chunked(CHUNK), true);
    let ms = rig.time(8);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    rig.step();
    let step_bytes = PEAK.load(Ordering::Relaxed) - before;
    (ms, step_bytes, rig.optimizer.state_bytes(), peak_rss_mib())
}

fn main() {
    dbsweep::allocator::keep_freed_memory();
    // SAFETY: at the start of main, before any other thread exists.
    unsafe { dbsweep::threads::compute_on_this_thread() };
    if let Ok(spec) = std::env::var(CHILD) {
        let checkpointing = spec.starts_with("ckpt");
        let optimizer = if spec.ends_with("8bit") { OptimizerKind::Adamw8bit } else { OptimizerKind::Adamw };
        let (ms, step, state, rss) = child(checkpointing, optimizer);
        println!("{ms} {step} {state} {rss}");
        return;
    }
    println!("one training step, builtin:tiny at {RESOLUTION} px, batch 1 + 1 class image, UNet and text encoder");
    println!(
        "{:<34} {:>9} {:>7} {:>12} {:>7} {:>11} {:>7} {:>9}",
        "configuration", "ms/step", "ratio", "step MB", "ratio", "state MB", "ratio", "RSS MB"
    );
    let configs = [
        ("adamw (baseline)", "plain-adamw"),
        ("adamw + gradient checkpointing", "ckpt-adamw"),
        ("adamw8bit", "plain-adamw8bit"),
        ("adamw8bit + gradient checkpointing", "ckpt-adamw8bit"),
    ];
    // Each configuration ROUNDS times, the rounds interleaved, so a slow spell of the machine
    // touches every configuration alike; the median time is reported (memory is the same in
    // every round).
    let mut runs: Vec<Vec<[f64; 4]>> = vec![Vec::new(); configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, spec)) in configs.iter().enumerate() {
            let out = Command::new(std::env::current_exe().unwrap()).env(CHILD, spec).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text.split_whitespace().map(|x| x.parse().unwrap()).collect();
            runs[i].push([v[0], v[1] / (1 << 20) as f64, v[2] / (1 << 20) as f64, v[3]]);
        }
    }
    let mut baseline: Option<(f64, f64, f64)> = None;
    for ((name, _), rounds) in configs.iter().zip(&mut runs) {
        let [ms, step, state, rss] = median_by(rounds, |r| r[0]).expect("ROUNDS >= 1");
        let base = *baseline.get_or_insert((ms, step, state));
        println!(
            "{name:<34} {ms:>9.1} {:>6.2}x {step:>12.1} {:>6.2}x {state:>11.2} {:>6.2}x {rss:>9.0}",
            ms / base.0,
            step / base.1,
            state / base.2
        );
    }
    let sizes = builtin::parameter_sizes("builtin:sd15-shape").unwrap();
    let total = |kind| sizes.iter().map(|n| state_bytes(*n, kind)).sum::<usize>() as f64 / (1u64 << 30) as f64;
    let (full, eight) = (total(OptimizerKind::Adamw), total(OptimizerKind::Adamw8bit));
    println!(
        "SD 1.5 UNet + text encoder ({:.0} M parameters): AdamW state {full:.2} GiB, 8-bit {eight:.2} GiB ({:.1} % less)",
        sizes.iter().sum::<usize>() as f64 / 1e6,
        100.0 * (1.0 - eight / full)
    );
}
