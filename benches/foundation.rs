//! Foundation benchmark: expanding a 1,000,000-point grid and registering 10,000 runs in the
//! lineage store, each beside a naive baseline measured in the same process.
//!
//! Run with `cargo bench --bench foundation`. Goals (issue: foundation): expansion under 1 s,
//! registration under 2 s on the project machine (2 cores).
//!
//! Baselines:
//! - expansion: per point, clone the resolved base JSON, set the swept leaves, serialize and
//!   hash: what a straightforward implementation does, against dbsweep's text template.
//! - registration: the same rows inserted with one transaction per run (autocommit-style),
//!   against dbsweep's single transaction with cached statements.

use std::path::Path;
use std::time::{Duration, Instant};

use dbsweep::config::{leaf_mut, yaml};
use dbsweep::store::{CodeVersion, Store};
use dbsweep::sweep::{self, ConfigHash, Plan};

fn grid(keys: &[&str], per_key: usize) -> Plan {
    let list: Vec<String> = (1..=per_key).map(|i| i.to_string()).collect();
    let mut text = String::from("name: bench\nparameters:\n");
    for key in keys {
        text.push_str(&format!("  {key}: {{values: [{}]}}\n", list.join(", ")));
    }
    let spec = sweep::parse(yaml::parse(Path::new("bench.yaml"), &text).unwrap()).unwrap();
    Plan::build(spec, Vec::new(), &[]).unwrap()
}

const KEYS: [&str; 6] =
    ["seed", "train.epochs", "train.batch_size", "validation.steps", "validation.num_images", "train.learning_rate"];

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = None;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        let d = t.elapsed();
        if best.is_none_or(|b| d < b) {
            best = Some(d);
        }
        out = Some(v);
    }
    (best.unwrap(), out.unwrap())
}

fn naive_hashes(plan: &Plan) -> Vec<ConfigHash> {
    plan.runs
        .iter()
        .map(|run| {
            let mut json = plan.base.json.clone();
            for (key, value) in plan.keys.iter().zip(plan.values(run)) {
                let path: Vec<&str> = key.split('.').collect();
                *leaf_mut(&mut json, &path).unwrap() = value.clone();
            }
            ConfigHash::of(&json.to_string())
        })
        .collect()
}

fn naive_register(plan: &Plan, path: &Path) {
    let store = Store::open(path).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute("INSERT INTO code_versions (version, git_commit, git_dirty) VALUES ('b', '', 0)", []).unwrap();
    for run in &plan.runs {
        let id = &run.run_id;
        conn.execute(
            "INSERT INTO runs (id, config_hash, config_json, seed, status, code_version_id, created_at) VALUES (?1, ?2, ?3, 0, 'pending', 1, 'now')",
            rusqlite::params![id, run.config_hash.to_string(), plan.config_text(run)],
        )
        .unwrap();
        for (key, value) in plan.keys.iter().zip(plan.values(run)) {
            conn.execute(
                "INSERT INTO params (run_id, key, value_json, source, detail, swept) VALUES (?1, ?2, ?3, 'sweep', '', 1)",
                rusqlite::params![id, key, value.to_string()],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO run_events (run_id, at, to_status, reason) VALUES (?1, 'now', 'pending', 'x')", [id])
            .unwrap();
    }
}

fn main() {
    println!("dbsweep foundation benchmark (best of 3 unless noted)\n");

    let spec_keys = &KEYS[..6];
    let (t_expand, plan) = best_of(3, || grid(spec_keys, 10));
    assert_eq!(plan.runs.len(), 1_000_000);
    let (t_naive, hashes) = best_of(1, || naive_hashes(&plan));
    assert!(hashes.iter().zip(&plan.runs).all(|(h, r)| *h == r.config_hash), "baseline and template agree");
    println!("expand 1,000,000-point grid (6 keys x 10 values, ids + config hashes)");
    println!(
        "  dbsweep (template)     {:>8.3} s   goal 1.000 s   ratio to goal {:.2}",
        t_expand.as_secs_f64(),
        t_expand.as_secs_f64() / 1.0
    );
    println!("  baseline (JSON/point)  {:>8.3} s   (best of 1)", t_naive.as_secs_f64());
    println!("  speed-up over baseline {:>8.1}x\n", t_naive.as_secs_f64() / t_expand.as_secs_f64());
    drop(plan);

    let plan = grid(&KEYS[..4], 10);
    assert_eq!(plan.runs.len(), 10_000);
    let code = CodeVersion::current();
    let dir = tempfile::tempdir().unwrap();
    let mut i = 0;
    let (t_reg, _) = best_of(3, || {
        i += 1;
        let mut store = Store::open(&dir.path().join(format!("reg{i}.sqlite"))).unwrap();
        store.register(&plan, &code, false).unwrap()
    });
    let (t_base, _) = best_of(1, || naive_register(&plan, &dir.path().join("naive.sqlite")));
    println!("register 10,000 runs (runs + swept params + events, fresh WAL database on disk)");
    println!(
        "  dbsweep (1 transaction) {:>7.3} s   goal 2.000 s   ratio to goal {:.2}",
        t_reg.as_secs_f64(),
        t_reg.as_secs_f64() / 2.0
    );
    println!("  baseline (1 per run)    {:>7.3} s   (best of 1)", t_base.as_secs_f64());
    println!("  speed-up over baseline  {:>7.1}x", t_base.as_secs_f64() / t_reg.as_secs_f64());
}
