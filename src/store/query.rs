//! Reading lineage back: sweeps with their run counts, a sweep's runs, one run's whole record.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::{CodeVersion, RunStatus, Store, StoreError};
use crate::config::suggest;
use crate::sweep::{ConfigHash, Goal};

/// A sweep and how many of its runs are in each status.
#[derive(Clone, Debug, Serialize)]
pub struct SweepSummary {
    /// Sweep id.
    pub id: String,
    /// Sweep name.
    pub name: String,
    /// The sweep file it was submitted from.
    pub file: String,
    /// `grid`, `random` or `bayes`.
    pub method: String,
    /// Metric that ranks runs, if declared.
    pub metric: Option<String>,
    /// Whether the metric is minimised or maximised, if declared.
    pub goal: Option<Goal>,
    /// When it was first submitted (UTC).
    pub created_at: String,
    /// Run count per status (statuses with no runs omitted).
    pub counts: BTreeMap<RunStatus, u64>,
    /// Total runs.
    pub total: u64,
}

/// A registered sweep as its orchestrator reads it back.
#[derive(Clone, Debug)]
pub struct StoredSweep {
    /// The sweep file (absolute for sweeps registered since schema version 6).
    pub file: PathBuf,
    /// The sweep file as parsed at submission.
    pub spec: Value,
    /// The resolved base configuration every run starts from.
    pub base: Value,
}

/// One run of a sweep, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// Run id (`run_id` in JSON, as every command names it).
    #[serde(rename = "run_id")]
    pub id: String,
    /// Position in the sweep's expansion order.
    pub position: i64,
    /// Status.
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempt: u32,
    /// The swept values of this run, by key.
    pub swept: BTreeMap<String, Value>,
}

/// A sweep a run belongs to.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRef {
    /// Sweep id.
    pub sweep_id: String,
    /// The run's position in it.
    pub position: i64,
}

/// A setting of a run that is not a built-in default, with its origin.
#[derive(Clone, Debug, Serialize)]
pub struct ParamRow {
    /// Dotted key.
    pub key: String,
    /// Value.
    pub value: Value,
    /// `file`, `sweep`, `env` or `flag`.
    pub source: String,
    /// `file:line:column`, variable name or flag text.
    pub detail: String,
    /// Whether the sweep varies it.
    pub swept: bool,
}

/// Summary of one metric key of a run.
#[derive(Clone, Debug, Serialize)]
pub struct MetricSummary {
    /// Metric key.
    pub key: String,
    /// Number of points.
    pub points: i64,
    /// Last step.
    pub last_step: i64,
    /// Value at the last step.
    pub last: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// A status change.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    /// When (UTC).
    pub at: String,
    /// Previous status (none for the first event).
    pub from: Option<RunStatus>,
    /// New status.
    pub to: RunStatus,
    /// Why.
    pub reason: String,
}

/// Everything the store knows about one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Run id (`run_id` in JSON, as every command names it).
    #[serde(rename = "run_id")]
    pub id: String,
    /// Status.
    pub status: RunStatus,
    /// Attempts started.
    pub attempt: u32,
    /// Hash of the resolved configuration.
    pub config_hash: String,
    /// Run seed.
    pub seed: u64,
    /// The run this one re-runs or continues.
    pub parent_run_id: Option<String>,
    /// The run this one reproduces.
    pub reproduced_from: Option<String>,
    /// Host that ran it.
    pub host: Option<String>,
    /// Device it ran on.
    pub device: Option<String>,
    /// Created (UTC).
    pub created_at: String,
    /// Started (UTC).
    pub started_at: Option<String>,
    /// Ended (UTC).
    pub ended_at: Option<String>,
    /// Process exit code.
    pub exit_code: Option<i64>,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Code that planned it.
    pub code_version: CodeVersion,
    /// Sweeps containing it.
    pub sweeps: Vec<SweepRef>,
    /// Non-default settings and where each came from.
    pub params: Vec<ParamRow>,
    /// The fully resolved configuration.
    pub config: Value,
    /// Data fingerprints by name (`instance`, `class`).
    pub data_fingerprints: BTreeMap<String, String>,
    /// Checkpoints: step to path.
    pub checkpoints: BTreeMap<i64, String>,
    /// Artifact paths.
    pub artifacts: Vec<String>,
    /// Metric summaries.
    pub metrics: Vec<MetricSummary>,
    /// Status history, oldest first.
    pub events: Vec<EventRow>,
    /// How bayes sweeps proposed it, with what each proposal saw.
    pub proposals: Vec<super::ProposalRecord>,
}

fn json(text: String, what: &'static str) -> Result<Value, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

impl Store {
    /// Every sweep, newest first.
    pub fn sweeps(&self) -> Result<Vec<SweepSummary>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, file, method, metric_name, metric_goal, created_at FROM sweeps ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SweepSummary {
                id: r.get(0)?,
                name: r.get(1)?,
                file: r.get(2)?,
                method: r.get(3)?,
                metric: r.get(4)?,
                goal: r.get::<_, Option<String>>(5)?.and_then(|g| g.parse().ok()),
                created_at: r.get(6)?,
                counts: BTreeMap::new(),
                total: 0,
            })
        })?;
        let mut sweeps: Vec<SweepSummary> = rows.collect::<Result<_, _>>()?;
        let mut counts = self.conn.prepare(
            "SELECT r.status, COUNT(*) FROM sweep_runs s JOIN runs r ON r.id = s.run_id WHERE s.sweep_id = ?1 GROUP BY r.status",
        )?;
        for sweep in &mut sweeps {
            for row in counts.query_map([&sweep.id], |r| Ok((r.get::<_, RunStatus>(0)?, r.get::<_, i64>(1)? as u64)))? {
                let (status, n) = row?;
                sweep.counts.insert(status, n);
                sweep.total += n;
            }
        }
        Ok(sweeps)
    }

    /// The sweep with id `key`, or else the newest sweep named `key`.
    pub fn sweep(&self, key: &str) -> Result<SweepSummary, StoreError> {
        let sweeps = self.sweeps()?;
        if let Some(s) = sweeps.iter().find(|s| s.id == key).or_else(|| sweeps.iter().find(|s| s.name == key)) {
            return Ok(s.clone());
        }
        let names = sweeps.iter().flat_map(|s| [s.id.as_str(), s.name.as_str()]);
        Err(StoreError::NotFound { what: "sweep", id: key.into(), hint: suggest(key, names) })
    }

    /// Sweep `sweep_id` as it was registered: its file as parsed, its base configuration, and
    /// the sweep file's path (absolute when the sweep recorded it).
    pub fn stored_sweep(&self, sweep_id: &str) -> Result<StoredSweep, StoreError> {
        let (file, spec, base, provenance): (String, String, String, Option<String>) = self.conn.query_row(
            "SELECT file, spec_json, base_config_json, provenance_json FROM sweeps WHERE id = ?1",
            [sweep_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let absolute = match provenance {
            Some(text) => json(text, "sweep provenance")?["sweep_file"].as_str().map(PathBuf::from),
            None => None,
        };
        Ok(StoredSweep {
            file: absolute.unwrap_or_else(|| PathBuf::from(file)),
            spec: json(spec, "sweep file")?,
            base: json(base, "sweep configuration")?,
        })
    }

    /// The runs of sweep `sweep_id`, in expansion order.
    pub fn sweep_runs(&self, sweep_id: &str) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, s.position, r.status, r.attempt FROM sweep_runs s JOIN runs r ON r.id = s.run_id
             WHERE s.sweep_id = ?1 ORDER BY s.position",
        )?;
        let mut rows: Vec<RunRow> = stmt
            .query_map([sweep_id], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    position: r.get(1)?,
                    status: r.get(2)?,
                    attempt: r.get(3)?,
                    swept: BTreeMap::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut swept = self.conn.prepare(
            "SELECT p.run_id, p.key, p.value_json FROM params p JOIN sweep_runs s ON s.run_id = p.run_id
             WHERE s.sweep_id = ?1 AND p.swept",
        )?;
        let mut by_run: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
        for row in swept
            .query_map([sweep_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        {
            let (run, key, value) = row?;
            by_run.entry(run).or_default().insert(key, json(value, "parameter value")?);
        }
        for row in &mut rows {
            row.swept = by_run.remove(&row.id).unwrap_or_default();
        }
        Ok(rows)
    }

    /// The runs that belong to no sweep (trained with `dbsweep train`, or reproductions), oldest
    /// first; `position` counts them from 0.
    pub fn runs_outside_sweeps(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.status, r.attempt FROM runs r
             WHERE NOT EXISTS (SELECT 1 FROM sweep_runs s WHERE s.run_id = r.id) ORDER BY r.created_at, r.rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RunRow { id: r.get(0)?, position: 0, status: r.get(1)?, attempt: r.get(2)?, swept: BTreeMap::new() })
        })?;
        let mut rows: Vec<RunRow> = rows.collect::<Result<_, _>>()?;
        for (i, row) in rows.iter_mut().enumerate() {
            row.position = i as i64;
        }
        Ok(rows)
    }

    /// The newest run of each of `hashes` that has one, with its status (reproductions are
    /// their original's copies, not runs of the configuration).
    pub fn runs_by_hash(&self, hashes: &[ConfigHash]) -> Result<HashMap<ConfigHash, (String, RunStatus)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status FROM runs WHERE config_hash = ?1 AND reproduced_from IS NULL
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )?;
        let mut out = HashMap::new();
        for hash in hashes {
            if let Some(found) = stmt.query_row([hash.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
                out.insert(*hash, found);
            }
        }
        Ok(out)
    }

    /// The whole lineage record of run `id`.
    pub fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let c = &self.conn;
        let found = c
            .query_row(
                "SELECT r.id, r.status, r.attempt, r.config_hash, r.seed, r.parent_run_id, r.reproduced_from, r.host, r.device,
                        r.created_at, r.started_at, r.ended_at, r.exit_code, r.error, r.config_json,
                        v.version, v.git_commit, v.git_dirty
                 FROM runs r JOIN code_versions v ON v.id = r.code_version_id WHERE r.id = ?1",
                [id],
                |r| {
                    Ok((
                        RunRecord {
                            id: r.get(0)?,
                            status: r.get(1)?,
                            attempt: r.get(2)?,
                            config_hash: r.get(3)?,
                            seed: r.get::<_, i64>(4)? as u64,
                            parent_run_id: r.get(5)?,
                            reproduced_from: r.get(6)?,
                            host: r.get(7)?,
                            device: r.get(8)?,
                            created_at: r.get(9)?,
                            started_at: r.get(10)?,
                            ended_at: r.get(11)?,
                            exit_code: r.get(12)?,
                            error: r.get(13)?,
                            code_version: CodeVersion { version: r.get(15)?, git_commit: r.get(16)?, git_dirty: r.get(17)? },
                            sweeps: Vec::new(),
                            params: Vec::new(),
                            config: Value::Null,
                            data_fingerprints: BTreeMap::new(),
                            checkpoints: BTreeMap::new(),
                            artifacts: Vec::new(),
                            metrics: Vec::new(),
                            events: Vec::new(),
                            proposals: Vec::new(),
                        },
                        r.get::<_, String>(14)?,
                    ))
                },
            )
            .optional()?;
        let Some((mut rec, config)) = found else {
            let mut ids = c.prepare("SELECT id FROM runs")?;
            let ids: Vec<String> = ids.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            return Err(StoreError::NotFound {
                what: "run",
                id: id.into(),
                hint: suggest(id, ids.iter().map(String::as_str)),
            });
        };
        rec.config = json(config, "run configuration")?;
        let mut stmt = c.prepare("SELECT sweep_id, position FROM sweep_runs WHERE run_id = ?1 ORDER BY sweep_id")?;
        rec.sweeps = stmt
            .query_map([id], |r| Ok(SweepRef { sweep_id: r.get(0)?, position: r.get(1)? }))?
            .collect::<Result<_, _>>()?;
        let mut stmt =
            c.prepare("SELECT key, value_json, source, detail, swept FROM params WHERE run_id = ?1 ORDER BY key")?;
        let params: Vec<(String, String, String, String, bool)> = stmt
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?;
        for (key, value, source, detail, swept) in params {
            rec.params.push(ParamRow { key, value: json(value, "parameter value")?, source, detail, swept });
        }
        let mut stmt = c.prepare("SELECT name, hash FROM data_fingerprints WHERE run_id = ?1")?;
        rec.data_fingerprints = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut stmt = c.prepare("SELECT step, path FROM checkpoints WHERE run_id = ?1")?;
        rec.checkpoints = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut stmt = c.prepare("SELECT path FROM artifacts WHERE run_id = ?1 ORDER BY id")?;
        rec.artifacts = stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut stmt = c.prepare(
            "SELECT m.key, COUNT(*), MAX(m.step), MIN(m.value), MAX(m.value),
                    (SELECT value FROM metrics l WHERE l.run_id = m.run_id AND l.key = m.key ORDER BY step DESC LIMIT 1)
             FROM metrics m WHERE m.run_id = ?1 GROUP BY m.key ORDER BY m.key",
        )?;
        rec.metrics = stmt
            .query_map([id], |r| {
                Ok(MetricSummary {
                    key: r.get(0)?,
                    points: r.get(1)?,
                    last_step: r.get(2)?,
                    min: r.get(3)?,
                    max: r.get(4)?,
                    last: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt =
            c.prepare("SELECT at, from_status, to_status, reason FROM run_events WHERE run_id = ?1 ORDER BY id")?;
        rec.events = stmt
            .query_map(params![id], |r| {
                Ok(EventRow { at: r.get(0)?, from: r.get(1)?, to: r.get(2)?, reason: r.get(3)? })
            })?
            .collect::<Result<_, _>>()?;
        rec.proposals = self.proposals_of(id)?;
        Ok(rec)
    }
}
