//! The lineage store on real SQLite files and in memory.

use std::path::Path;

use super::*;
use crate::config::yaml;
use crate::sweep::{self, Plan};

const GRID: &str =
    "name: g\nparameters:\n  train.learning_rate: {values: [1.0e-4, 2.0e-4]}\n  train.epochs: {values: [1, 2]}\n";

fn plan(text: &str) -> Plan {
    let spec = sweep::parse(yaml::parse(Path::new("g.yaml"), text).unwrap()).unwrap();
    Plan::build(spec, Vec::new(), &["train.batch_size=2".into()]).unwrap()
}

fn code() -> CodeVersion {
    CodeVersion { version: "0.0.0-test".into(), git_commit: "abc".into(), git_dirty: false }
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn opening_twice_migrates_once_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/db.sqlite");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), current_version());
    let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), current_version());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Store::open(&path).unwrap();
    store.conn.pragma_update(None, "user_version", 999).unwrap();
    drop(store);
    assert!(matches!(Store::open(&path), Err(StoreError::SchemaTooNew { found: 999, .. })));
}

#[test]
fn open_existing_does_not_create() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Store::open_existing(&dir.path().join("none.sqlite")).unwrap().is_none());
    assert!(!dir.path().join("none.sqlite").exists());
}

#[test]
fn registering_records_runs_params_and_events() {
    let mut store = Store::in_memory().unwrap();
    let p = plan(GRID);
    let reg = store.register(&p, &code(), false).unwrap();
    assert!(reg.sweep_created);
    assert_eq!(reg.runs.len(), 4);
    assert!(reg.runs.iter().all(|r| r.outcome == Outcome::New && r.status == RunStatus::Pending));
    let ids: Vec<&str> = p.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(reg.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ids);
    let rec = store.run(ids[1]).unwrap();
    assert_eq!(rec.config, serde_json::from_str::<serde_json::Value>(&p.config_text(&p.runs[1])).unwrap());
    assert_eq!(rec.config_hash, p.runs[1].config_hash.to_string());
    assert_eq!(rec.code_version, code());
    let params: Vec<(&str, &str, bool)> =
        rec.params.iter().map(|p| (p.key.as_str(), p.source.as_str(), p.swept)).collect();
    assert_eq!(
        params,
        [("train.batch_size", "flag", false), ("train.epochs", "sweep", true), ("train.learning_rate", "sweep", true)]
    );
    assert_eq!(rec.params[1].detail, "g.yaml:4:3");
    assert_eq!(rec.params[1].value, serde_json::json!(2));
    assert_eq!(rec.events.len(), 1);
    assert_eq!((rec.events[0].from, rec.events[0].to), (None, RunStatus::Pending));
    assert_eq!(rec.sweeps.len(), 1);
    assert_eq!(rec.sweeps[0].position, 1);
}

#[test]
fn resubmitting_never_duplicates_runs() {
    let mut store = Store::in_memory().unwrap();
    let p = plan(GRID);
    let first = store.register(&p, &code(), false).unwrap();
    let second = store.register(&p, &code(), false).unwrap();
    assert!(!second.sweep_created);
    assert!(second.runs.iter().all(|r| r.outcome == Outcome::Existing));
    assert_eq!(
        first.runs.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        second.runs.iter().map(|r| &r.run_id).collect::<Vec<_>>()
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 4);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM run_events"), 4);
}

#[test]
fn another_sweep_with_an_overlapping_config_reuses_the_run() {
    let mut store = Store::in_memory().unwrap();
    store.register(&plan(GRID), &code(), false).unwrap();
    let other = plan(
        "name: h\nparameters:\n  train.learning_rate: {values: [1.0e-4, 3.0e-4]}\n  train.epochs: {values: [1]}\n",
    );
    let reg = store.register(&other, &code(), false).unwrap();
    let outcomes: Vec<&Outcome> = reg.runs.iter().map(|r| &r.outcome).collect();
    assert_eq!(outcomes, [&Outcome::Existing, &Outcome::New]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 5);
    let rec = store.run(&reg.runs[0].run_id).unwrap();
    assert_eq!(rec.sweeps.len(), 2);
}

#[test]
fn rerun_adds_linked_runs_only_for_finished_configs() {
    let mut store = Store::in_memory().unwrap();
    let p = plan(GRID);
    let first = store.register(&p, &code(), false).unwrap();
    let done = &first.runs[0].run_id;
    store.conn.execute("UPDATE runs SET status = 'finished' WHERE id = ?1", [done]).unwrap();
    let plain = store.register(&p, &code(), false).unwrap();
    assert_eq!(plain.runs[0].status, RunStatus::Finished);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 4);
    let rerun = store.register(&p, &code(), true).unwrap();
    assert_eq!(rerun.runs[0].outcome, Outcome::Rerun(done.clone()));
    assert_ne!(&rerun.runs[0].run_id, done);
    assert!(rerun.runs[1..].iter().all(|r| r.outcome == Outcome::Existing), "pending runs are not duplicated");
    let rec = store.run(&rerun.runs[0].run_id).unwrap();
    assert_eq!(rec.parent_run_id.as_deref(), Some(done.as_str()));
    assert_eq!(rec.config_hash, p.runs[0].config_hash.to_string());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 5);
}

#[test]
fn an_id_taken_by_another_config_gets_a_longer_suffix() {
    let mut store = Store::in_memory().unwrap();
    let p = plan(GRID);
    store.register(&plan("name: x\nparameters:\n  seed: {values: [5]}\n"), &code(), false).unwrap();
    store
        .conn
        .execute(
            "INSERT INTO runs (id, config_hash, config_json, seed, status, code_version_id, created_at)
             SELECT ?1, 'another-config', '{}', 0, 'pending', code_version_id, created_at FROM runs LIMIT 1",
            [&p.runs[0].run_id],
        )
        .unwrap();
    let reg = store.register(&p, &code(), false).unwrap();
    assert_eq!(reg.runs[0].run_id, sweep::run_id(p.runs[0].config_hash, sweep::MIN_HEX + 2));
}

#[test]
fn concurrent_submitters_create_each_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    Store::open(&path).unwrap();
    let p = plan(GRID);
    let regs: Vec<Registration> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..4).map(|_| s.spawn(|| Store::open(&path).unwrap().register(&p, &code(), false).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let store = Store::open(&path).unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 4);
    assert_eq!(regs.iter().filter(|r| r.sweep_created).count(), 1);
    let new: usize = regs.iter().map(|r| r.runs.iter().filter(|x| x.outcome == Outcome::New).count()).sum();
    assert_eq!(new, 4);
}

#[test]
fn listing_and_lookup_errors() {
    let mut store = Store::in_memory().unwrap();
    let p = plan(GRID);
    store.register(&p, &code(), false).unwrap();
    let sweeps = store.sweeps().unwrap();
    assert_eq!(sweeps.len(), 1);
    assert_eq!((sweeps[0].total, sweeps[0].counts[&RunStatus::Pending]), (4, 4));
    assert_eq!(store.sweep("g").unwrap().id, p.sweep_id);
    assert_eq!(store.sweep(&p.sweep_id).unwrap().name, "g");
    let rows = store.sweep_runs(&p.sweep_id).unwrap();
    assert_eq!(rows[3].swept["train.epochs"], serde_json::json!(2));
    let typo = format!("{}x", p.sweep_id);
    match store.sweep(&typo) {
        Err(StoreError::NotFound { what: "sweep", hint: Some(h), .. }) => assert_eq!(h, p.sweep_id),
        other => panic!("{other:?}", other = other.map(|s| s.id)),
    }
    let typo = &p.runs[0].run_id[..p.runs[0].run_id.len() - 1];
    match store.run(typo) {
        Err(StoreError::NotFound { what: "run", hint: Some(h), .. }) => assert_eq!(h, p.runs[0].run_id),
        other => panic!("{:?}", other.map(|r| r.id)),
    }
}

#[test]
fn a_failure_recorded_by_the_trainer_and_then_its_scheduler_is_one_event_with_the_fuller_reason() {
    let mut store = Store::in_memory().unwrap();
    let reg = store.register(&plan(GRID), &code(), false).unwrap();
    let claim = store.claim(&reg.sweep_id, 1, "host", 7).unwrap().unwrap();
    store.end_attempt(&claim.run_id, RunStatus::Failed, 1, Some("cannot read latents")).unwrap();
    store.end_attempt(&claim.run_id, RunStatus::Failed, 1, Some("cannot read latents\nlast lines of log")).unwrap();
    let rec = store.run(&claim.run_id).unwrap();
    let transitions: Vec<(Option<RunStatus>, RunStatus)> = rec.events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        transitions,
        [
            (None, RunStatus::Pending),
            (Some(RunStatus::Pending), RunStatus::Running),
            (Some(RunStatus::Running), RunStatus::Failed)
        ]
    );
    assert_eq!(rec.events[2].reason, "exit code 1: cannot read latents\nlast lines of log");
    assert_eq!(rec.error.as_deref(), Some("cannot read latents\nlast lines of log"));

    // The retry's failure is a transition of its own again.
    let retry = store.claim(&reg.sweep_id, 1, "host", 7).unwrap().unwrap();
    assert_eq!((retry.run_id.as_str(), retry.attempt), (claim.run_id.as_str(), 2));
    store.end_attempt(&retry.run_id, RunStatus::Failed, 1, Some("again")).unwrap();
    let rec = store.run(&claim.run_id).unwrap();
    assert_eq!(rec.events.iter().filter(|e| e.to == RunStatus::Failed).count(), 2);
}

/// Writes at `path` a store as schema `version` wrote it, with one code version (id 1) and
/// the rows `rows` adds.
fn old_store(path: &Path, version: usize, rows: impl FnOnce(&rusqlite::Transaction<'_>)) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for sql in &migrations::MIGRATIONS[..version] {
        tx.execute_batch(sql).unwrap();
    }
    tx.pragma_update(None, "user_version", version as u32).unwrap();
    tx.execute("INSERT INTO code_versions (id, version, git_commit, git_dirty) VALUES (1, 'v', '', 0)", []).unwrap();
    rows(&tx);
    tx.commit().unwrap();
}

#[test]
fn a_version_2_store_keeps_every_metric_point_through_migrations_3_and_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    // A store as version 2 wrote it, with points of two runs.
    old_store(&path, 2, |tx| {
        for run in ["a", "b"] {
            tx.execute(
                "INSERT INTO runs (id, config_hash, config_json, seed, status, attempt, code_version_id, created_at)
                 VALUES (?1, 'h', '{}', 0, 'finished', 1, 1, 'now')",
                [run],
            )
            .unwrap();
            for (key, step, value) in [("train/loss", 1, 0.5), ("train/loss", 2, 0.25), ("val/loss", 2, 0.75)] {
                tx.execute(
                    "INSERT INTO metrics (run_id, key, step, value, wall_time) VALUES (?1, ?2, ?3, ?4, 1.0)",
                    rusqlite::params![run, key, step, value],
                )
                .unwrap();
            }
        }
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), current_version());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM metrics"), 6);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM metric_series"), 4);
    // Version 4 checks no foreign key per point; the series keep theirs to `runs`.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM pragma_foreign_key_list('metric_points')"), 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM pragma_foreign_key_list('metric_series')"), 1);
    assert_eq!(store.metric_series("b", "train/loss").unwrap(), [(1, 0.5), (2, 0.25)]);
    // Writes after the migration land in the same series and replace points by step.
    let mut batch = MetricBatch::new("b");
    for (key, step, value) in [("train/loss", 2, 0.125), ("train/loss", 3, 0.0625), ("lr", 3, 1.0)] {
        batch.push(key, step, value, 2.0);
    }
    store.stage_metrics(&mut batch).unwrap();
    store.commit_metrics().unwrap();
    assert_eq!(store.metric_series("b", "train/loss").unwrap(), [(1, 0.5), (2, 0.125), (3, 0.0625)]);
    assert_eq!(store.metric_series("a", "train/loss").unwrap(), [(1, 0.5), (2, 0.25)]);
    store.drop_metrics_after("b", 1).unwrap();
    assert_eq!(store.metric_series("b", "train/loss").unwrap(), [(1, 0.5)]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM metrics WHERE run_id = 'a'"), 3);
}

#[test]
fn a_version_5_store_keeps_every_sweep_and_its_runs_through_migration_6() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    // A store as version 5 wrote it: two sweeps (the older one with the higher rowid) and
    // their runs.
    old_store(&path, 5, |tx| {
        tx.execute_batch(
            "INSERT INTO sweeps (rowid, id, name, file, method, metric_name, metric_goal, spec_json, base_config_json, code_version_id, created_at)
                VALUES (7, 'g-1', 'g', 'g.yaml', 'grid', 'val/loss', 'minimize', '{}', '{}', 1, 't1'),
                       (3, 'r-2', 'r', 'r.yaml', 'random', NULL, NULL, '{}', '{}', 1, 't2');
             INSERT INTO runs (id, config_hash, config_json, seed, status, attempt, code_version_id, created_at)
                VALUES ('a', 'h', '{}', 0, 'finished', 1, 1, 't'), ('b', 'h2', '{}', 0, 'pending', 0, 1, 't');
             INSERT INTO sweep_runs (sweep_id, run_id, position) VALUES ('g-1', 'a', 0), ('g-1', 'b', 1), ('r-2', 'a', 0);",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), current_version());
    let sweeps: Vec<(String, String, usize)> =
        store.sweeps().unwrap().into_iter().map(|s| (s.id, s.method, s.total as usize)).collect();
    assert_eq!(sweeps, [("r-2".into(), "random".into(), 1), ("g-1".into(), "grid".into(), 2)]);
    assert_eq!(count(&store, "SELECT rowid FROM sweeps WHERE id = 'g-1'"), 7, "rowids kept");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM sweeps WHERE provenance_json IS NULL"), 2);
    // The rebuilt table is still what `sweep_runs` references, and foreign keys are on again.
    assert_eq!(count(&store, "PRAGMA foreign_keys"), 1);
    let orphan = store.conn.execute("INSERT INTO sweep_runs (sweep_id, run_id, position) VALUES ('nope', 'a', 0)", []);
    assert!(orphan.is_err(), "a sweep run of no sweep is refused");
    // A bayes sweep can be registered now.
    let bayes = "name: b\nmethod: bayes\nrun_cap: 2\nmetric: {name: val/loss, goal: minimize}\nparameters:\n  train.epochs: {values: [1, 2]}\n";
    let reg = store.register(&plan(bayes), &code(), false).unwrap();
    assert_eq!(store.sweep(&reg.sweep_id).unwrap().method, "bayes");
}

/// Writes `n` points of run `run` through `writer` and commits them.
fn write_points(writer: &mut Store, run: &str, n: i64) {
    let mut batch = MetricBatch::new(run);
    (0..n).for_each(|step| batch.push("train/loss", step, 0.5, 1.0));
    writer.stage_metrics(&mut batch).unwrap();
    writer.commit_metrics().unwrap();
}

#[test]
fn a_store_left_to_a_checkpointer_gets_its_log_copied_by_it_and_not_by_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut store = Store::open(&path).unwrap();
    let run = store.register(&plan("parameters: {seed: {value: 1}}\n"), &code(), false).unwrap().runs[0].run_id.clone();
    let mut writer = Store::open(&path).unwrap();
    writer.leave_checkpoints_to_others().unwrap();
    // Pages reach the database file only through checkpoints. 150k points take more than the
    // 1000 log pages after which a commit would checkpoint by default.
    let db_size = || std::fs::metadata(&path).unwrap().len();
    let before = db_size();
    write_points(&mut writer, &run, 150_000);
    assert!(std::fs::metadata(path.with_extension("sqlite-wal")).unwrap().len() > 1000 * 4096);
    std::thread::sleep(checkpointer::INTERVAL * 3);
    assert_eq!(db_size(), before, "the writer's commits do not checkpoint");
    let checkpointer = Checkpointer::spawn(&path).unwrap();
    let deadline = std::time::Instant::now() + checkpointer::INTERVAL * 20;
    while db_size() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(checkpointer::INTERVAL / 5);
    }
    assert!(db_size() > before, "the checkpointer copied the log into the database");
    drop(checkpointer);
    assert_eq!(store.metric_series(&run, "train/loss").unwrap().len(), 150_000);
}

#[test]
fn stale_claims_are_recovered_by_pid_here_and_by_heartbeat_elsewhere() {
    let mut store = Store::in_memory().unwrap();
    let reg = store.register(&plan(GRID), &code(), false).unwrap();
    let sweep = reg.sweep_id.clone();
    let here = store.claim(&sweep, 2, "here", 11).unwrap().unwrap();
    let alive_there = store.claim(&sweep, 2, "there", 22).unwrap().unwrap();
    let dead_there = store.claim(&sweep, 2, "there", 33).unwrap().unwrap();
    store.heartbeat(&alive_there.run_id, alive_there.attempt, "there").unwrap();
    // The third one's process on the other host last beat three minutes ago.
    let old = "UPDATE runs SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-180 seconds') WHERE id = ?1";
    store.conn.execute(old, [&dead_there.run_id]).unwrap();
    // pid 11 lives here; on the other host only the expired claim is taken back.
    let recovered = store.recover_stale(&sweep, "here", |pid| pid == 11).unwrap();
    assert_eq!(recovered, std::slice::from_ref(&dead_there.run_id));
    let recovered = store.recover_stale(&sweep, "here", |_| false).unwrap();
    assert_eq!(recovered, std::slice::from_ref(&here.run_id), "a dead pid here is seen at once");
    let holder = store.holder(&alive_there.run_id).unwrap();
    assert_eq!((holder.pid, holder.host.as_deref()), (Some(22), Some("there")));
    assert!(holder.expires_at.is_some());
    let reason: String = store
        .conn
        .query_row(
            "SELECT reason FROM run_events WHERE run_id = ?1 ORDER BY id DESC LIMIT 1",
            [&dead_there.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("no heartbeat from its process on there"), "{reason}");
    // A heartbeat of a superseded attempt changes nothing.
    store.heartbeat(&here.run_id, here.attempt, "elsewhere").unwrap();
    assert_eq!(store.holder(&here.run_id).unwrap().host.as_deref(), Some("here"));
}
