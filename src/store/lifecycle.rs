//! What a training process records about its run: attempts and status changes, metric points,
//! checkpoints, artifacts and data fingerprints. Each call is one transaction, except that metric
//! points are staged in a transaction of their own that [`Store::commit_metrics`] ends.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{NOW, RunStatus, Store, StoreError};
use crate::config::ExperimentConfig;

/// Scalar points of one run on their way into the store. Keys are kept once each, so adding a
/// point of a key already seen allocates nothing, and each key's series id is looked up in the
/// store once, at its first stage, not at every one. (Series are never deleted; a batch lives
/// beside the connection that stages it, so an id from a transaction rolled back with that
/// connection is dropped with it.)
#[derive(Clone, Debug)]
pub struct MetricBatch {
    run_id: String,
    keys: Vec<String>,
    /// The series id of each key, once looked up.
    series: Vec<Option<i64>>,
    points: Vec<BatchPoint>,
}

/// A point of a [`MetricBatch`]: its key as an index into the batch's keys.
#[derive(Clone, Copy, Debug)]
struct BatchPoint {
    key: usize,
    step: i64,
    value: f64,
    wall_time: f64,
}

impl MetricBatch {
    /// An empty batch for run `run_id`.
    pub fn new(run_id: &str) -> Self {
        Self { run_id: run_id.to_string(), keys: Vec::new(), series: Vec::new(), points: Vec::new() }
    }

    /// The run the points belong to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Adds the point (`key`, `step`) with `value`, logged at `wall_time` (seconds since the
    /// Unix epoch).
    pub fn push(&mut self, key: &str, step: i64, value: f64, wall_time: f64) {
        let key = match self.keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.keys.push(key.to_string());
                self.series.push(None);
                self.keys.len() - 1
            }
        };
        self.points.push(BatchPoint { key, step, value, wall_time });
    }

    /// How many points are waiting.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is waiting.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A checkpoint as the store records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckpointRow {
    /// Step.
    pub step: i64,
    /// Folder, relative to the run folder.
    pub path: String,
    /// sha256 of its manifest.
    pub sha256: String,
    /// Bytes on disk.
    pub size_bytes: i64,
    /// Validation metrics at that step (JSON object).
    pub metrics: serde_json::Value,
}

/// A run's stored configuration, for training it.
#[derive(Clone, Debug)]
pub struct StoredRun {
    /// Canonical JSON of the resolved configuration.
    pub config_json: String,
    /// Status now.
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempt: u32,
}

/// Moves run `id` from `from` to running as `attempt` on `host` under process `pid`, with a
/// status event: the one place a new attempt begins (claimed by a scheduler or started by
/// `dbsweep train`).
pub(super) fn begin_attempt(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    from: RunStatus,
    attempt: u32,
    host: &str,
    pid: u32,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "UPDATE runs SET status = 'running', attempt = ?2, host = ?3, pid = ?4, started_at = {NOW}, heartbeat_at = NULL,
             ended_at = NULL, exit_code = NULL, error = NULL WHERE id = ?1"
        ),
        params![id, attempt, host, pid],
    )?;
    tx.execute(
        &format!(
            "INSERT INTO run_events (run_id, at, from_status, to_status, reason) VALUES (?1, {NOW}, ?2, 'running', ?3)"
        ),
        params![id, from, reason],
    )?;
    Ok(())
}

impl Store {
    /// The resolved configuration run `id` trains with, as it was registered.
    pub fn run_config(&self, id: &str) -> Result<ExperimentConfig, StoreError> {
        let stored = self.stored_run(id)?;
        serde_json::from_str(&stored.config_json)
            .map_err(|e| StoreError::UnreadableConfig { run: id.to_string(), detail: e.to_string() })
    }

    /// The configuration and status of run `id`.
    pub fn stored_run(&self, id: &str) -> Result<StoredRun, StoreError> {
        self.conn
            .query_row("SELECT config_json, status, attempt FROM runs WHERE id = ?1", [id], |r| {
                Ok(StoredRun { config_json: r.get(0)?, status: r.get(1)?, attempt: r.get(2)? })
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound { what: "run", id: id.into(), hint: None })
    }

    /// Marks run `id` running as a new attempt on `host`/`device` by this process; returns the
    /// attempt number.
    pub fn start_attempt(&mut self, id: &str, host: &str, device: &str) -> Result<u32, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (from, attempt): (RunStatus, u32) =
            tx.query_row("SELECT status, attempt FROM runs WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let attempt = attempt + 1;
        let reason = format!("attempt {attempt} started on {host} ({device})");
        begin_attempt(&tx, id, from, attempt, host, std::process::id(), &reason)?;
        tx.execute("UPDATE runs SET device = ?2 WHERE id = ?1", params![id, device])?;
        tx.commit()?;
        Ok(attempt)
    }

    /// Ends the current attempt of run `id` with `status`, exit code and error message. A run
    /// already in `status` (the trainer recorded its failure before its scheduler saw the
    /// process end) keeps its one event for the transition, whose reason becomes this fuller one.
    pub fn end_attempt(
        &mut self,
        id: &str,
        status: RunStatus,
        exit_code: i32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let from: RunStatus = tx.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))?;
        tx.execute(
            &format!("UPDATE runs SET status = ?2, ended_at = {NOW}, exit_code = ?3, error = ?4 WHERE id = ?1"),
            params![id, status, exit_code, error],
        )?;
        let reason = error.map_or_else(|| format!("exit code {exit_code}"), |e| format!("exit code {exit_code}: {e}"));
        if from == status {
            tx.execute(
                "UPDATE run_events SET reason = ?2 WHERE id = (SELECT MAX(id) FROM run_events WHERE run_id = ?1)",
                params![id, reason],
            )?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO run_events (run_id, at, from_status, to_status, reason) VALUES (?1, {NOW}, ?2, ?3, ?4)"
                ),
                params![id, from, status, reason],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes the points of `batch` in the store's metrics transaction, starting one if none is
    /// open, and empties the batch: the work happens now, the points become visible at
    /// [`commit_metrics`](Self::commit_metrics) (and are gone if the process dies first). A
    /// point for an existing (key, step) replaces it, so replaying a journal twice, or a resumed
    /// attempt redoing steps, leaves each point once.
    pub fn stage_metrics(&mut self, batch: &mut MetricBatch) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        let mut add_series = self.conn.prepare_cached(
            "INSERT INTO metric_series (run_id, key) VALUES (?1, ?2) ON CONFLICT (run_id, key) DO NOTHING",
        )?;
        let mut find_series =
            self.conn.prepare_cached("SELECT id FROM metric_series WHERE run_id = ?1 AND key = ?2")?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO metric_points (series_id, step, value, wall_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (series_id, step) DO UPDATE SET value = excluded.value, wall_time = excluded.wall_time",
        )?;
        for p in &batch.points {
            let sid = match batch.series[p.key] {
                Some(sid) => sid,
                None => {
                    let key = &batch.keys[p.key];
                    add_series.execute(params![batch.run_id, key])?;
                    let sid: i64 = find_series.query_row(params![batch.run_id, key], |r| r.get(0))?;
                    *batch.series[p.key].insert(sid)
                }
            };
            insert.execute(params![sid, p.step, p.value, p.wall_time])?;
        }
        batch.points.clear();
        Ok(())
    }

    /// Commits the metrics transaction, if one is open.
    pub fn commit_metrics(&mut self) -> Result<(), StoreError> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// Removes run `id`'s points after `step` (a resumed attempt supersedes them).
    pub fn drop_metrics_after(&mut self, id: &str, step: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM metric_points WHERE series_id IN (SELECT id FROM metric_series WHERE run_id = ?1) AND step > ?2",
            params![id, step],
        )?;
        Ok(())
    }

    /// The metric series `key` of run `id`, by step.
    pub fn metric_series(&self, id: &str, key: &str) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step")?;
        let rows = stmt.query_map(params![id, key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a checkpoint of run `id` (replacing one at the same step).
    pub fn add_checkpoint(
        &mut self,
        id: &str,
        step: i64,
        path: &str,
        sha256: &str,
        size: u64,
        metrics_json: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT INTO checkpoints (run_id, step, path, sha256, size_bytes, metrics_json, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})
                 ON CONFLICT (run_id, step) DO UPDATE SET path = excluded.path, sha256 = excluded.sha256,
                 size_bytes = excluded.size_bytes, metrics_json = excluded.metrics_json, created_at = excluded.created_at"
            ),
            params![id, step, path, sha256, size as i64, metrics_json],
        )?;
        Ok(())
    }

    /// Adds `metrics` (name to value) to the recorded metrics of run `id`'s checkpoint at
    /// `step` (a later evaluation of it), replacing those of the same name.
    pub fn add_checkpoint_metrics(
        &mut self,
        id: &str,
        step: i64,
        metrics: &std::collections::BTreeMap<String, f64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row("SELECT metrics_json FROM checkpoints WHERE run_id = ?1 AND step = ?2", params![id, step], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(text) = current {
            let mut all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt { what: "checkpoint metrics", detail: e.to_string() })?;
            all.extend(metrics.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))));
            let text = serde_json::Value::Object(all).to_string();
            tx.execute(
                "UPDATE checkpoints SET metrics_json = ?3 WHERE run_id = ?1 AND step = ?2",
                params![id, step, text],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest checkpoint step of run `id`, if any.
    pub fn latest_checkpoint(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row("SELECT MAX(step) FROM checkpoints WHERE run_id = ?1", [id], |r| r.get(0))?)
    }

    /// The checkpoints of run `id`, oldest first.
    pub fn checkpoints(&self, id: &str) -> Result<Vec<CheckpointRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT step, path, sha256, size_bytes, metrics_json FROM checkpoints WHERE run_id = ?1 ORDER BY step",
        )?;
        let rows = stmt.query_map([id], |r| {
            let metrics: String = r.get(4)?;
            Ok(CheckpointRow {
                step: r.get(0)?,
                path: r.get(1)?,
                sha256: r.get(2)?,
                size_bytes: r.get(3)?,
                metrics: serde_json::from_str(&metrics).unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Seconds run `id` spent running, over all attempts (from its status history).
    pub fn running_seconds(&self, id: &str) -> Result<f64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT to_status, julianday(at) * 86400.0 FROM run_events WHERE run_id = ?1 ORDER BY id",
        )?;
        let events: Vec<(String, f64)> =
            stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut total = 0.0;
        let mut since: Option<f64> = None;
        for (status, at) in events {
            if let Some(start) = since.take() {
                total += at - start;
            }
            if status == "running" {
                since = Some(at);
            }
        }
        Ok(total)
    }

    /// Forgets the checkpoint of run `id` at `step` (pruned from disk).
    pub fn remove_checkpoint(&mut self, id: &str, step: i64) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2", params![id, step])?;
        Ok(())
    }

    /// Records a file the run produced.
    pub fn add_artifact(
        &mut self,
        id: &str,
        step: Option<i64>,
        kind: &str,
        path: &str,
        sha256: &str,
        meta_json: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT INTO artifacts (run_id, step, kind, path, sha256, meta_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})"
            ),
            params![id, step, kind, path, sha256, meta_json],
        )?;
        Ok(())
    }

    /// Records the fingerprint of a dataset (`instance`, `class`) run `id` trained on.
    pub fn set_fingerprint(&mut self, id: &str, name: &str, hash: &str, file_count: usize) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO data_fingerprints (run_id, name, hash, file_count) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id, name) DO UPDATE SET hash = excluded.hash, file_count = excluded.file_count",
            params![id, name, hash, file_count as i64],
        )?;
        Ok(())
    }
}
