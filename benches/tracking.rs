//! Tracking throughput: scalar points per second through the trainer's sinks (journal, lineage
//! store, TensorBoard event files), each alone and together, side by side with `tensorboardX` writing the same points
//! in the same run (when `DBSWEEP_TORCH_PYTHON` or `/work/fixtures-venv/bin/python` has it),
//! and the overhead the sinks add to one training step (5 scalars per step).
//!
//! `cargo bench --bench tracking`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dbsweep::store::Store;
use dbsweep::tracking::background::Background;
use dbsweep::tracking::journal::Journal;
use dbsweep::tracking::store_sink::StoreSink;
use dbsweep::tracking::tensorboard::TensorBoardSink;
use dbsweep::tracking::{Record, Sink};

/// The same allocator as the `dbsweep` binary (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: [&str; 5] = ["train/loss", "train/loss_instance", "train/loss_prior", "train/lr", "train/grad_norm"];

fn python() -> Option<PathBuf> {
    std::env::var_os("DBSWEEP_TORCH_PYTHON").map(PathBuf::from).or_else(|| {
        let p = Path::new("/work/fixtures-venv/bin/python");
        p.exists().then(|| p.to_path_buf())
    })
}

/// Writes `n` scalar points, five keys per step, to every sink; flushes every 500 steps (the
/// trainer flushes at checkpoints) and at the end. Returns the seconds taken.
/// Flushes as the trainer does: the background sinks' flushes overlap the journal's `fsync`.
fn flush(sinks: &mut [&mut dyn Sink]) {
    sinks.iter_mut().for_each(|s| s.start_flush().unwrap());
    sinks.iter_mut().for_each(|s| s.flush().unwrap());
}

fn feed(n: usize, sinks: &mut [&mut dyn Sink]) -> f64 {
    let start = Instant::now();
    for step in 0..(n / KEYS.len()) as u64 {
        for key in KEYS {
            let r = Record::Scalar { key: key.into(), step, value: 1.0 / (step + 1) as f64, wall_time: 1.7e9 };
            for sink in sinks.iter_mut() {
                sink.write(&r).unwrap();
            }
        }
        if step % 500 == 499 {
            flush(sinks);
        }
    }
    flush(sinks);
    start.elapsed().as_secs_f64()
}

fn main() {
    // As the dbsweep binary does (src/main.rs).
    dbsweep::allocator::keep_freed_memory();
    let n = 200_000usize;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    // The store needs run rows for the foreign key: register a two-point sweep (one run for
    // the store alone, one for all sinks together).
    let spec = dbsweep::sweep::parse(
        dbsweep::config::yaml::parse(Path::new("b.yaml"), "parameters: {seed: {values: [1, 2]}}\n").unwrap(),
    )
    .unwrap();
    let plan = dbsweep::sweep::Plan::build(spec, Vec::new(), &[]).unwrap();
    let runs = store.register(&plan, &dbsweep::store::CodeVersion::current(), false).unwrap().runs;
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // Each sink alone, then all three as the trainer runs them (the store's metrics and
    // TensorBoard on background threads), each into fresh files.
    let alone = |name: &str, sink: &mut dyn Sink| {
        let secs = feed(n, &mut [sink]);
        println!("  {name:<40} {:>12.0} points/s", n as f64 / secs);
    };
    println!("{n} scalar points, 5 per step, flushed (fsync) every 500 steps");
    alone("journal alone", &mut Journal::open(&run_dir.join("alone.jsonl")).unwrap());
    let db = dir.path().join("db.sqlite");
    let metrics = |run: &str| Background::spawn(StoreSink::new(Store::open(&db).unwrap(), run), 4096, &db);
    alone("SQLite alone (background thread)", &mut metrics(&runs[0].run_id));
    let tb_alone = dir.path().join("tb-alone");
    std::fs::create_dir_all(&tb_alone).unwrap();
    alone(
        "TensorBoard alone (background thread)",
        &mut Background::spawn(TensorBoardSink::new(&tb_alone).unwrap(), 4096, &tb_alone),
    );
    let mut journal = Journal::open(&run_dir.join("journal.jsonl")).unwrap();
    let mut tb = Background::spawn(TensorBoardSink::new(&run_dir).unwrap(), 4096, &run_dir);
    let secs = feed(n, &mut [&mut journal, &mut metrics(&runs[1].run_id), &mut tb]);
    drop(tb);
    let ours = n as f64 / secs;
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
    // The per-step cost as the trainer pays it: five points, and the store flushed after every
    // step (a scheduler's early termination reads it), every sink at checkpoints.
    let (steps, run_dir) = (2000u64, dir.path().join("steps"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut journal = Journal::open(&run_dir.join("journal.jsonl")).unwrap();
    let mut tb = Background::spawn(TensorBoardSink::new(&run_dir).unwrap(), 4096, &run_dir);
    let mut store = metrics(&runs[1].run_id);
    let start = Instant::now();
    for step in 0..steps {
        for key in KEYS {
            let r = Record::Scalar { key: key.into(), step, value: 1.0, wall_time: 1.7e9 };
            for sink in [&mut journal as &mut dyn Sink, &mut store, &mut tb] {
                sink.write(&r).unwrap();
            }
        }
        store.flush().unwrap();
        if step % 500 == 499 {
            flush(&mut [&mut journal, &mut store, &mut tb]);
        }
    }
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    println!("  overhead per training step (5 points, store flushed each step): {:>7.1} us", per_step * 1e6);
    println!("  ... of a 21 ms tiny-model step (cargo bench --bench sweep): {:.3} %", per_step / 0.021 * 100.0);
}
