//! Tracking throughput: scalar points per second through the trainer's sinks (journal, lineage
//! store, TensorBoard event files), each alone and together, side by side with `tensorboardX` writing the same points
//! in the same run (when `DBSWEEP_TORCH_PYTHON` or `target/fixtures-venv/bin/python` has it),
//! and the overhead the sinks add to one training step (5 scalars per step).
//!
//! `cargo bench --bench tracking`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dbsweep::store::Store;
use dbsweep::tracking::background::Background;
use dbsweep::tracking::journal::{self, Journal};
use dbsweep::tracking::tensorboard::TensorBoardSink;
use dbsweep::tracking::tracker::{Tracker, metrics_sink};
use dbsweep::tracking::{Record, Sink};

/// The same allocator as the `dbsweep` binary (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: [&str; 5] = ["train/loss", "train/loss_instance", "train/loss_prior", "train/lr", "train/grad_norm"];

fn python() -> Option<PathBuf> {
    std::env::var_os("DBSWEEP_TORCH_PYTHON").map(PathBuf::from).or_else(|| {
        let p = Path::new("target/fixtures-venv/bin/python");
        p.exists().then(|| p.to_path_buf())
    })
}

/// What the benchmark logs through: one sink alone, or the trainer's [`Tracker`].
trait Target {
    fn emit(&mut self, record: Record);
    fn flush(&mut self);
}

impl Target for &mut dyn Sink {
    fn emit(&mut self, record: Record) {
        self.write(&record).unwrap();
    }
    fn flush(&mut self) {
        Sink::flush(*self).unwrap();
    }
}

impl Target for Tracker {
    fn emit(&mut self, record: Record) {
        Tracker::emit(self, record).unwrap();
    }
    fn flush(&mut self) {
        Tracker::flush(self).unwrap();
    }
}

/// Logs `n` scalar points, five keys per step, to `target`; flushes every 500 steps (the
/// trainer flushes at checkpoints) and at the end. Returns the seconds taken.
fn feed(n: usize, mut target: impl Target) -> f64 {
    let start = Instant::now();
    for step in 0..(n / KEYS.len()) as u64 {
        for key in KEYS {
            target.emit(Record::Scalar { key: key.into(), step, value: 1.0 / (step + 1) as f64, wall_time: 1.7e9 });
        }
        if step % 500 == 499 {
            target.flush();
        }
    }
    target.flush();
    start.elapsed().as_secs_f64()
}

fn main() {
    // As the dbsweep binary does (src/main.rs).
    dbsweep::allocator::keep_freed_memory();
    // A million points: long enough (~0.7 s together) for the store's checkpointer to run
    // several times inside the measurement, as it does in a long run.
    let n = 1_000_000usize;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    // Points need runs: register a three-point sweep (a run for the store alone, one for all
    // sinks together, one for the per-step cost).
    let spec = dbsweep::sweep::parse(
        dbsweep::config::yaml::parse(Path::new("b.yaml"), "parameters: {seed: {values: [1, 2, 3]}}\n").unwrap(),
    )
    .unwrap();
    let plan = dbsweep::sweep::Plan::build(spec, Vec::new(), &[]).unwrap();
    let runs = Store::open(&db).unwrap().register(&plan, &dbsweep::store::CodeVersion::current(), false).unwrap().runs;
    let folder = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    // Each sink alone (the store's metrics and TensorBoard on background threads, as the
    // trainer runs them), then all three through the trainer's tracker, each into fresh files.
    let report = |name: &str, secs: f64| println!("  {name:<40} {:>12.0} points/s", n as f64 / secs);
    println!("{n} scalar points, 5 per step, flushed (fsync) every 500 steps");
    let journal: &mut dyn Sink = &mut Journal::open(&folder("journal").join(journal::FILE)).unwrap();
    report("journal alone", feed(n, journal));
    // The store's sink as the tracker opens it: checkpointed by a thread of its own.
    let (mut metrics, _checkpointer) = metrics_sink(&db, &runs[0].run_id).unwrap();
    report("SQLite alone (background thread)", feed(n, &mut metrics as &mut dyn Sink));
    let tb_dir = folder("tensorboard");
    let tensorboard: &mut dyn Sink = &mut Background::spawn(TensorBoardSink::new(&tb_dir).unwrap(), 4096, &tb_dir);
    report("TensorBoard alone (background thread)", feed(n, tensorboard));
    let ours = n as f64 / feed(n, Tracker::open(&folder("all"), &db, &runs[1].run_id, true, None, false).unwrap());
    println!("  dbsweep journal + SQLite + TensorBoard  {:>12.0} points/s  goal 1,000,000", ours);
    let theirs = python().and_then(|py| {
        let out = Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tensorboardx_points.py"))
            .arg(n.to_string())
            .arg(dir.path().join("tbx"))
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&out.stdout).lines().last()?.to_string();
        serde_json::from_str::<serde_json::Value>(&line).ok()?["points_per_second"].as_f64()
    });
    match theirs {
        Some(t) => println!("  tensorboardX (TensorBoard only)          {t:>12.0} points/s  ratio {:.2}x", ours / t),
        None => println!("  tensorboardX: not available (set DBSWEEP_TORCH_PYTHON to a Python with tensorboardX)"),
    }
    // The per-step cost as the trainer pays it: five points, the store's commit asked for after
    // every step (a scheduler's early termination reads it), every sink flushed at checkpoints.
    let steps = 2000u64;
    let mut tracker = Tracker::open(&folder("steps"), &db, &runs[2].run_id, true, None, false).unwrap();
    let start = Instant::now();
    for step in 0..steps {
        for key in KEYS {
            tracker.emit(Record::Scalar { key: key.into(), step, value: 1.0, wall_time: 1.7e9 }).unwrap();
        }
        tracker.publish_metrics().unwrap();
        if step % 500 == 499 {
            tracker.flush().unwrap();
        }
    }
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    println!("  overhead per training step (5 points, store committed each step): {:>7.1} us", per_step * 1e6);
    println!("  ... of a 21 ms tiny-model step (cargo bench --bench sweep): {:.3} %", per_step / 0.021 * 100.0);
}
