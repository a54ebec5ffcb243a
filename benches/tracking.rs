//! Tracking throughput: scalar points per second through the trainer's sinks (journal, lineage
//! store, TensorBoard event files), side by side with `tensorboardX` writing the same points
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

const KEYS: [&str; 5] = ["train/loss", "train/loss_instance", "train/loss_prior", "train/lr", "train/grad_norm"];

fn python() -> Option<PathBuf> {
    std::env::var_os("DBSWEEP_TORCH_PYTHON").map(PathBuf::from).or_else(|| {
        let p = Path::new("/work/fixtures-venv/bin/python");
        p.exists().then(|| p.to_path_buf())
    })
}

fn main() {
    let n = 200_000usize;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    // The store needs a run row for the foreign key: register a one-point sweep.
    let spec = dbsweep::sweep::parse(
        dbsweep::config::yaml::parse(Path::new("b.yaml"), "parameters: {seed: {value: 1}}\n").unwrap(),
    )
    .unwrap();
    let plan = dbsweep::sweep::Plan::build(spec, Vec::new(), &[]).unwrap();
    let run = store.register(&plan, &dbsweep::store::CodeVersion::current(), false).unwrap().runs[0].run_id.clone();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut journal = Journal::open(&run_dir.join("journal.jsonl")).unwrap();
    // As the trainer does: TensorBoard on a background thread.
    let mut tb = Background::spawn(TensorBoardSink::new(&run_dir).unwrap(), 4096, &run_dir);
    let mut sink = StoreSink::new(&mut store, &run);
    let start = Instant::now();
    for step in 0..(n / KEYS.len()) as u64 {
        for key in KEYS {
            let r = Record::Scalar { key: key.into(), step, value: 1.0 / (step + 1) as f64, wall_time: 1.7e9 };
            journal.write(&r).unwrap();
            sink.write(&r).unwrap();
            tb.write(&r).unwrap();
        }
        if step % 500 == 499 {
            // The trainer flushes at checkpoints; flush every 500 steps here.
            journal.flush().unwrap();
            sink.flush().unwrap();
            tb.flush().unwrap();
        }
    }
    journal.flush().unwrap();
    sink.flush().unwrap();
    tb.flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let ours = n as f64 / secs;
    println!("{n} scalar points, 5 per step, flushed (fsync) every 500 steps");
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
    let per_step = secs / (n / KEYS.len()) as f64;
    println!("  overhead per training step (5 points):   {:>9.1} us", per_step * 1e6);
    println!("  ... of a 149 ms tiny-model step (cargo bench --bench sweep): {:.4} %", per_step / 0.149 * 100.0);
}
