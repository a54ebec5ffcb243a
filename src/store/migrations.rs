//! Schema migrations, applied in order and tracked with `PRAGMA user_version`.
//!
//! The list is append-only: never edit or remove an entry, only add one, so every database
//! ever written can be brought to the current schema. README.md documents the tables.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the lineage schema.
    r#"
    -- Versions of dbsweep that planned or ran something ('' commit: not built from a checkout).
    CREATE TABLE code_versions (
        id          INTEGER PRIMARY KEY,
        version     TEXT NOT NULL,
        git_commit  TEXT NOT NULL,
        git_dirty   INTEGER NOT NULL,
        UNIQUE (version, git_commit, git_dirty)
    );
    -- One row per distinct sweep (same file and settings = same sweep id).
    CREATE TABLE sweeps (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        file             TEXT NOT NULL,
        method           TEXT NOT NULL CHECK (method IN ('grid', 'random')),
        metric_name      TEXT,
        metric_goal      TEXT CHECK (metric_goal IN ('minimize', 'maximize')),
        spec_json        TEXT NOT NULL,
        base_config_json TEXT NOT NULL,
        code_version_id  INTEGER NOT NULL REFERENCES code_versions(id),
        created_at       TEXT NOT NULL
    );
    -- One row per run: a fully resolved configuration and its execution state.
    CREATE TABLE runs (
        id              TEXT PRIMARY KEY,
        config_hash     TEXT NOT NULL,
        config_json     TEXT NOT NULL,
        seed            INTEGER NOT NULL,
        status          TEXT NOT NULL CHECK (status IN
                            ('pending', 'running', 'finished', 'failed', 'interrupted', 'stopped')),
        attempt         INTEGER NOT NULL DEFAULT 0,
        parent_run_id   TEXT REFERENCES runs(id),
        reproduced_from TEXT REFERENCES runs(id),
        code_version_id INTEGER NOT NULL REFERENCES code_versions(id),
        host            TEXT,
        device          TEXT,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        ended_at        TEXT,
        exit_code       INTEGER,
        error           TEXT
    );
    CREATE INDEX runs_by_config_hash ON runs (config_hash);
    -- Which runs a sweep contains, at which position of its expansion order.
    CREATE TABLE sweep_runs (
        sweep_id TEXT NOT NULL REFERENCES sweeps(id),
        run_id   TEXT NOT NULL REFERENCES runs(id),
        position INTEGER NOT NULL,
        PRIMARY KEY (sweep_id, run_id)
    ) WITHOUT ROWID;
    CREATE INDEX sweep_runs_by_run ON sweep_runs (run_id);
    -- A run's settings that are not built-in defaults, and where each came from.
    CREATE TABLE params (
        run_id     TEXT NOT NULL REFERENCES runs(id),
        key        TEXT NOT NULL,
        value_json TEXT NOT NULL,
        source     TEXT NOT NULL CHECK (source IN ('default', 'file', 'sweep', 'env', 'flag')),
        detail     TEXT NOT NULL,
        swept      INTEGER NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    -- Scalar metrics: one value per run, key and step.
    CREATE TABLE metrics (
        run_id    TEXT NOT NULL REFERENCES runs(id),
        key       TEXT NOT NULL,
        step      INTEGER NOT NULL,
        value     REAL NOT NULL,
        wall_time REAL NOT NULL,
        PRIMARY KEY (run_id, key, step)
    ) WITHOUT ROWID;
    -- Checkpoints on disk, with their hash and the metrics at that step.
    CREATE TABLE checkpoints (
        run_id       TEXT NOT NULL REFERENCES runs(id),
        step         INTEGER NOT NULL,
        path         TEXT NOT NULL,
        sha256       TEXT NOT NULL,
        size_bytes   INTEGER NOT NULL,
        metrics_json TEXT NOT NULL DEFAULT '{}',
        created_at   TEXT NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    -- Files a run produced besides checkpoints (sample images, exports).
    CREATE TABLE artifacts (
        id         INTEGER PRIMARY KEY,
        run_id     TEXT NOT NULL REFERENCES runs(id),
        step       INTEGER,
        kind       TEXT NOT NULL,
        path       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        meta_json  TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    -- Hashes of the data a run used (instance images, class images).
    CREATE TABLE data_fingerprints (
        run_id     TEXT NOT NULL REFERENCES runs(id),
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL,
        file_count INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    -- Every status change of every run, oldest first.
    CREATE TABLE run_events (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs(id),
        at          TEXT NOT NULL,
        from_status TEXT,
        to_status   TEXT NOT NULL,
        reason      TEXT NOT NULL
    );
    CREATE INDEX run_events_by_run ON run_events (run_id);
    "#,
    // 2: the process training a run, so a later orchestrator can tell a live run from one whose
    // process died with its orchestrator.
    r#"
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    "#,
    // 3: metric points keyed by an integer series (run, key) instead of repeating both strings
    // in every point: 1.6x faster inserts. `metrics` stays, as a view with the same columns.
    r#"
    CREATE TABLE metric_series (
        id     INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        key    TEXT NOT NULL,
        UNIQUE (run_id, key)
    );
    CREATE TABLE metric_points (
        series_id INTEGER NOT NULL REFERENCES metric_series(id),
        step      INTEGER NOT NULL,
        value     REAL NOT NULL,
        wall_time REAL NOT NULL,
        PRIMARY KEY (series_id, step)
    ) WITHOUT ROWID;
    INSERT INTO metric_series (run_id, key) SELECT DISTINCT run_id, key FROM metrics ORDER BY run_id, key;
    INSERT INTO metric_points (series_id, step, value, wall_time)
        SELECT s.id, m.step, m.value, m.wall_time FROM metrics m JOIN metric_series s ON s.run_id = m.run_id AND s.key = m.key;
    DROP TABLE metrics;
    CREATE VIEW metrics (run_id, key, step, value, wall_time) AS
        SELECT s.run_id, s.key, p.step, p.value, p.wall_time FROM metric_points p JOIN metric_series s ON s.id = p.series_id;
    "#,
    // 4: no foreign-key check per metric point (1.71M -> 1.88M upserts/s). Its one writer takes
    // `series_id` from `metric_series` in the same transaction and no series is ever deleted,
    // so the check could never fail; `metric_series.run_id` keeps its reference to `runs`.
    r#"
    DROP VIEW metrics;
    CREATE TABLE metric_points_v4 (
        series_id INTEGER NOT NULL,
        step      INTEGER NOT NULL,
        value     REAL NOT NULL,
        wall_time REAL NOT NULL,
        PRIMARY KEY (series_id, step)
    ) WITHOUT ROWID;
    INSERT INTO metric_points_v4 SELECT series_id, step, value, wall_time FROM metric_points;
    DROP TABLE metric_points;
    ALTER TABLE metric_points_v4 RENAME TO metric_points;
    CREATE VIEW metrics (run_id, key, step, value, wall_time) AS
        SELECT s.run_id, s.key, p.step, p.value, p.wall_time FROM metric_points p JOIN metric_series s ON s.id = p.series_id;
    "#,
    // 5: a running run's training process proves it lives by a heartbeat, so a run claimed on
    // another host whose process died is recovered once its claim expires.
    r#"
    ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;
    "#,
    // 6: `method: bayes`. Its runs are created while it runs, so a sweep records where its
    // settings came from (what each new run records in `params`), and each proposal is recorded
    // with what it saw. `sweeps` is rebuilt to allow the new method (SQLite cannot change a
    // CHECK), keeping every row and its rowid.
    r#"
    CREATE TABLE sweeps_v6 (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        file             TEXT NOT NULL,
        method           TEXT NOT NULL CHECK (method IN ('grid', 'random', 'bayes')),
        metric_name      TEXT,
        metric_goal      TEXT CHECK (metric_goal IN ('minimize', 'maximize')),
        spec_json        TEXT NOT NULL,
        base_config_json TEXT NOT NULL,
        code_version_id  INTEGER NOT NULL REFERENCES code_versions(id),
        created_at       TEXT NOT NULL,
        -- The sweep file's absolute path and where each setting that is not a default came
        -- from; NULL for sweeps registered before version 6.
        provenance_json  TEXT
    );
    INSERT INTO sweeps_v6 (rowid, id, name, file, method, metric_name, metric_goal, spec_json, base_config_json,
                           code_version_id, created_at)
        SELECT rowid, id, name, file, method, metric_name, metric_goal, spec_json, base_config_json,
               code_version_id, created_at FROM sweeps;
    DROP TABLE sweeps;
    ALTER TABLE sweeps_v6 RENAME TO sweeps;
    -- One row per run a bayes sweep proposed: its position (one proposal per position, so two
    -- orchestrators never both propose the next run) and what the proposal saw.
    CREATE TABLE proposals (
        sweep_id      TEXT NOT NULL REFERENCES sweeps(id),
        position      INTEGER NOT NULL,
        run_id        TEXT NOT NULL REFERENCES runs(id),
        how           TEXT NOT NULL CHECK (how IN ('random', 'tpe', 'fallback')),
        tpe_rank      INTEGER,
        good          INTEGER,
        observed_json TEXT NOT NULL,
        pending_json  TEXT NOT NULL,
        excluded_json TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        PRIMARY KEY (sweep_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX proposals_by_run ON proposals (run_id);
    "#,
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings `conn` to the current schema in one exclusive transaction, then turns foreign keys
/// on. A migration may rebuild a table that others reference, so foreign keys are off while
/// migrations run and checked before they commit (SQLite's procedure for table changes that
/// `ALTER TABLE` cannot make).
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", false)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > current_version() {
        return Err(StoreError::SchemaTooNew { found, supported: current_version() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
    }
    if found < current_version() {
        let broken: Vec<String> = {
            let mut check = tx.prepare("PRAGMA foreign_key_check")?;
            check.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?
        };
        if !broken.is_empty() {
            let detail = format!("migrating left rows whose references are missing, in {}", broken.join(", "));
            return Err(StoreError::Corrupt { what: "schema", detail });
        }
    }
    tx.commit()?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}
