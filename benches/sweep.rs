//! Training and scheduling overheads on the built-in tiny model, measured with the release
//! `dbsweep` binary in a scratch output root:
//!
//! - time per training step, and the one-off cost of generating class images and encoding
//!   latents: the same run length with a cold cache against a warm one (side by side);
//! - scheduling: for an 8-run sweep on 2 CPU slots, the gap between a run ending and the next
//!   run starting, and the sweep's wall time against the ideal (sum of run times / slots).
//!
//! `cargo bench --bench sweep`.

mod common;

use std::path::Path;

use common::dbsweep;

fn train(root: &Path, steps: u32, lr: &str) -> (f64, String) {
    let steps = format!("train.max_train_steps={steps}");
    let lr = format!("train.learning_rate={lr}");
    let args = [
        "train",
        "sweeps/base/tiny.yaml",
        "--set",
        &steps,
        "--set",
        &lr,
        "--set",
        "validation.every_steps=100000",
        "--set",
        "checkpoint.every_steps=100000",
    ];
    dbsweep(root, &args)
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let (cold, cold_out) = train(root.path(), 10, "1e-5");
    let (warm, warm_out) = train(root.path(), 10, "2e-5");
    let (long, _) = train(root.path(), 60, "3e-5");
    assert!(cold_out.contains("class images generated: 8"), "{cold_out}");
    assert!(warm_out.contains("class images generated: 0, images encoded: 0"), "{warm_out}");
    let per_step = (long - warm) / 50.0;
    println!("training, builtin:tiny at 32 px, batch 1 + 1 class image, 1 process");
    println!("  time per step (steady state)            {:>8.1} ms", per_step * 1000.0);
    println!("  10-step run, cold cache (8 class images) {:>8.2} s", cold);
    println!("  10-step run, warm cache                  {:>8.2} s", warm);
    println!("  one-off cost of class images + latents   {:>8.2} s  ({:.2}x the warm run)", cold - warm, cold / warm);

    let sweep = root.path().join("bench.yaml");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/base/tiny.yaml");
    std::fs::write(
        &sweep,
        format!(
            "name: bench\nextends: {}\nbase:\n  train: {{max_train_steps: 30}}\n  validation: {{every_steps: 100000}}\nparameters:\n  seed: {{values: [1, 2, 3, 4, 5, 6, 7, 8]}}\n",
            base.display()
        ),
    )
    .unwrap();
    let (wall, _) = dbsweep(root.path(), &["run", sweep.to_str().unwrap(), "--gpus", "none", "--max-parallel", "2"]);
    let conn = rusqlite::Connection::open(root.path().join("dbsweep.sqlite")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT julianday(r.started_at) * 86400, julianday(r.ended_at) * 86400 FROM runs r JOIN sweep_runs s ON s.run_id = r.id
             JOIN sweeps w ON w.id = s.sweep_id WHERE w.name = 'bench' ORDER BY r.started_at",
        )
        .unwrap();
    let spans: Vec<(f64, f64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    let busy: f64 = spans.iter().map(|(s, e)| e - s).sum();
    let ideal = busy / 2.0;
    // Each run after the first two starts when a slot frees: its gap is its start minus the
    // latest end before it.
    let gaps: Vec<f64> = spans[2..]
        .iter()
        .filter_map(|(start, _)| {
            spans
                .iter()
                .map(|(_, e)| *e)
                .filter(|e| e <= start)
                .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))))
                .map(|e| start - e)
        })
        .collect();
    let mean_gap = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let max_gap = gaps.iter().cloned().fold(0.0, f64::max);
    println!("\nscheduling, 8 runs x 30 steps on 2 CPU slots");
    println!(
        "  run end -> next start on the freed slot: mean {:.0} ms, max {:.0} ms",
        mean_gap * 1000.0,
        max_gap * 1000.0
    );
    println!("  sweep wall time {wall:.2} s, ideal (sum of run times / slots) {ideal:.2} s, ratio {:.2}", wall / ideal);
}
