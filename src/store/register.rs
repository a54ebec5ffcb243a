//! Registering a sweep's plan: the sweep row, one run per distinct configuration, their
//! parameters with provenance, and the first status event, all in one transaction. A bayes
//! sweep registers only its sweep row: its runs are registered as they are proposed
//! (`proposal.rs`), with the settings' provenance this row records.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::{CodeVersion, NOW, RunStatus, Store, StoreError};
use crate::config::{Origin, Resolved};
use crate::sweep::{ConfigHash, MIN_HEX, Method, Plan, run_id};

/// What registering a run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "of")]
pub enum Outcome {
    /// A new run was created.
    New,
    /// A new run repeats a finished run (`--rerun`).
    Rerun(String),
    /// A run with the same configuration already existed and is reused.
    Existing,
}

/// One planned point after registration.
#[derive(Clone, Debug, Serialize)]
pub struct RegisteredRun {
    /// Position in the sweep's expansion order.
    pub position: usize,
    /// The run's id (the planned id unless an existing run or a re-run took its place).
    pub run_id: String,
    /// The run's status now.
    pub status: RunStatus,
    /// What registration did.
    pub outcome: Outcome,
}

/// The result of [`Store::register`].
#[derive(Clone, Debug, Serialize)]
pub struct Registration {
    /// The sweep's id.
    pub sweep_id: String,
    /// Whether the sweep was new to the store.
    pub sweep_created: bool,
    /// Every point, in expansion order.
    pub runs: Vec<RegisteredRun>,
}

/// A setting of a run to record: key, value as JSON text, origin kind and detail (see
/// [`Origin::kind`]), whether it is swept.
pub(super) type ParamRow<'a> = (&'a str, String, &'a str, String, bool);

/// Prepared statements that place one configuration as a run: reuse or insert.
pub(super) struct Placer<'tx> {
    find: rusqlite::CachedStatement<'tx>,
    id_taken: rusqlite::CachedStatement<'tx>,
    insert_run: rusqlite::CachedStatement<'tx>,
    insert_param: rusqlite::CachedStatement<'tx>,
    insert_event: rusqlite::CachedStatement<'tx>,
    code_id: i64,
    rerun: bool,
}

impl<'tx> Placer<'tx> {
    /// The statements of transaction `tx`, for code version `code_id`.
    pub(super) fn new(tx: &'tx Transaction<'_>, code_id: i64, rerun: bool) -> Result<Self, StoreError> {
        Ok(Self {
            // A reproduction is its original's copy, never a sweep's run of the configuration.
            find: tx.prepare_cached(
                "SELECT id, status FROM runs WHERE config_hash = ?1 AND reproduced_from IS NULL
                 ORDER BY created_at DESC, rowid DESC",
            )?,
            id_taken: tx.prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?,
            insert_run: tx.prepare_cached(&format!(
                "INSERT INTO runs (id, config_hash, config_json, seed, status, parent_run_id, code_version_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, {NOW})"
            ))?,
            insert_param: tx.prepare_cached(
                "INSERT INTO params (run_id, key, value_json, source, detail, swept) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            insert_event: tx.prepare_cached(&format!(
                "INSERT INTO run_events (run_id, at, from_status, to_status, reason) VALUES (?1, {NOW}, NULL, 'pending', ?2)"
            ))?,
            code_id,
            rerun,
        })
    }

    /// Reuses the newest run of `hash` (with `rerun`, only one that has not finished) or
    /// inserts a new run, linked to the last finished one if there is one.
    pub(super) fn place<'p>(
        &mut self,
        hash: ConfigHash,
        config_text: impl FnOnce() -> String,
        seed: u64,
        params: impl Iterator<Item = ParamRow<'p>>,
        reason: &str,
    ) -> Result<(String, RunStatus, Outcome), StoreError> {
        let hash_text = hash.to_string();
        let existing: Vec<(String, RunStatus)> =
            self.find.query_map([&hash_text], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        if let Some((id, status)) = existing.iter().find(|(_, s)| !self.rerun || *s != RunStatus::Finished) {
            return Ok((id.clone(), *status, Outcome::Existing));
        }
        let identity = match existing.len() {
            0 => hash,
            n => ConfigHash::of(&format!("{hash_text}#rerun-{n}")),
        };
        let mut hex = MIN_HEX;
        let id = loop {
            let id = run_id(identity, hex);
            if self.id_taken.query_row([&id], |_| Ok(())).optional()?.is_none() {
                break id;
            }
            hex += 2;
        };
        let parent = existing.first().map(|(id, _)| id.clone());
        self.insert_run.execute(params![id, hash_text, config_text(), seed as i64, parent, self.code_id])?;
        for (key, value, kind, detail, swept) in params {
            self.insert_param.execute(params![id, key, value, kind, detail, swept])?;
        }
        self.insert_event.execute(params![id, reason])?;
        Ok((id, RunStatus::Pending, parent.map_or(Outcome::New, Outcome::Rerun)))
    }
}

impl Store {
    /// Records `plan` as a sweep with its runs. A configuration that already has a run is not
    /// duplicated: the existing run joins this sweep. With `rerun`, a configuration whose
    /// runs have all finished gets a new run linked to the last one. A bayes sweep gets no run
    /// here (its plan's runs only preview its random phase).
    pub fn register(&mut self, plan: &Plan, code: &CodeVersion, rerun: bool) -> Result<Registration, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let code_id = code_version_id(&tx, code)?;
        let provenance = SweepProvenance::of(plan);
        let sweep_created = insert_sweep(&tx, plan, &provenance, code_id)?;
        let (swept, fixed): (Vec<&SettingOrigin>, Vec<&SettingOrigin>) =
            provenance.settings.iter().partition(|s| s.swept);
        let fixed: Vec<(&SettingOrigin, String)> =
            fixed.into_iter().map(|s| (s, value_at(&plan.base.json, &s.key).to_string())).collect();
        let seed_slot = plan.keys.iter().position(|k| k == "seed");
        let reason = format!("planned by sweep {}", plan.sweep_id);
        let planned = if plan.spec.method == Method::Bayes { &[][..] } else { &plan.runs[..] };
        let mut runs = Vec::with_capacity(planned.len());
        {
            let mut placer = Placer::new(&tx, code_id, rerun)?;
            let mut link =
                tx.prepare_cached("INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id, position) VALUES (?1, ?2, ?3)")?;
            for planned in planned {
                let seed = match seed_slot {
                    Some(i) => plan.values(planned).nth(i).and_then(|v| v.as_u64()).unwrap_or(0),
                    None => plan.base.config.seed,
                };
                let fixed_rows = fixed.iter().map(|(s, v)| s.row(v.clone()));
                let swept_rows = swept.iter().zip(plan.values(planned)).map(|(s, v)| s.row(v.to_string()));
                let (run_id, status, outcome) = placer.place(
                    planned.config_hash,
                    || plan.config_text(planned),
                    seed,
                    fixed_rows.chain(swept_rows),
                    &reason,
                )?;
                link.execute(params![plan.sweep_id, run_id, planned.position as i64])?;
                runs.push(RegisteredRun { position: planned.position, run_id, status, outcome });
            }
        }
        tx.commit()?;
        Ok(Registration { sweep_id: plan.sweep_id.clone(), sweep_created, runs })
    }

    /// Records a new run that reproduces run `original`: the same stored configuration, linked
    /// by `reproduced_from`, never reused.
    pub fn register_reproduction(&mut self, original: &str, code: &CodeVersion) -> Result<String, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let code_id = code_version_id(&tx, code)?;
        let (hash, config, seed): (String, String, i64) = tx
            .query_row("SELECT config_hash, config_json, seed FROM runs WHERE id = ?1", [original], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound { what: "run", id: original.into(), hint: None })?;
        let copies: i64 =
            tx.query_row("SELECT COUNT(*) FROM runs WHERE reproduced_from = ?1", [original], |r| r.get(0))?;
        let mut hex = MIN_HEX;
        let id = loop {
            let id = run_id(ConfigHash::of(&format!("{hash}#reproduce-{original}-{copies}")), hex);
            if tx.query_row("SELECT 1 FROM runs WHERE id = ?1", [&id], |_| Ok(())).optional()?.is_none() {
                break id;
            }
            hex += 2;
        };
        tx.execute(
            &format!(
                "INSERT INTO runs (id, config_hash, config_json, seed, status, reproduced_from, code_version_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, {NOW})"
            ),
            params![id, hash, config, seed, original, code_id],
        )?;
        tx.execute(
            "INSERT INTO params (run_id, key, value_json, source, detail, swept)
             SELECT ?1, key, value_json, source, detail, swept FROM params WHERE run_id = ?2",
            params![id, original],
        )?;
        tx.execute(
            &format!("INSERT INTO run_events (run_id, at, from_status, to_status, reason) VALUES (?1, {NOW}, NULL, 'pending', ?2)"),
            params![id, format!("reproduces {original}")],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Records one experiment (outside any sweep) with run identity `identity` (see
    /// [`crate::sweep::Fingerprints`]) as a run: a run of the same identity is reused (with
    /// `rerun`, only one that has not finished; otherwise a new run linked to the finished one).
    pub fn register_experiment(
        &mut self,
        config: &Resolved,
        identity: ConfigHash,
        source: &str,
        code: &CodeVersion,
        rerun: bool,
    ) -> Result<RegisteredRun, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let code_id = code_version_id(&tx, code)?;
        let text = config.canonical_text();
        let rows = config
            .provenance
            .iter()
            .filter(|(_, o)| **o != Origin::Default)
            .map(|(k, o)| (k.as_str(), value_at(&config.json, k).to_string(), o.kind(), o.detail(), false));
        let reason = format!("planned by `dbsweep train {source}`");
        let placed =
            Placer::new(&tx, code_id, rerun)?.place(identity, || text.clone(), config.config.seed, rows, &reason)?;
        tx.commit()?;
        Ok(RegisteredRun { position: 0, run_id: placed.0, status: placed.1, outcome: placed.2 })
    }
}

/// The value at dotted `key` of a configuration (`null` when absent).
pub(super) fn value_at<'a>(json: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    key.split('.').fold(json, |v, k| &v[k])
}

/// The id of `code`'s row, inserted if new.
pub(super) fn code_version_id(tx: &Transaction<'_>, code: &CodeVersion) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO code_versions (version, git_commit, git_dirty) VALUES (?1, ?2, ?3)",
        params![code.version, code.git_commit, code.git_dirty],
    )?;
    Ok(tx.query_row(
        "SELECT id FROM code_versions WHERE version = ?1 AND git_commit = ?2 AND git_dirty = ?3",
        params![code.version, code.git_commit, code.git_dirty],
        |r| r.get(0),
    )?)
}

/// What a sweep records of where its settings came from: the sweep file's absolute path and,
/// per setting that is not a default, its origin (the swept ones with `swept: true`).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub(super) struct SweepProvenance {
    /// The sweep file, absolute.
    pub sweep_file: String,
    /// The settings, in key order.
    pub settings: Vec<SettingOrigin>,
}

/// Where one setting of a sweep came from.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub(super) struct SettingOrigin {
    /// Dotted key.
    pub key: String,
    /// [`Origin::kind`].
    pub source: String,
    /// [`Origin::detail`].
    pub detail: String,
    /// Whether the sweep varies it.
    pub swept: bool,
}

impl SettingOrigin {
    /// The `params` row of a run whose value of this setting is `value` (JSON text).
    pub(super) fn row(&self, value: String) -> ParamRow<'_> {
        (self.key.as_str(), value, self.source.as_str(), self.detail.clone(), self.swept)
    }
}

impl SweepProvenance {
    /// The provenance of `plan`'s settings.
    fn of(plan: &Plan) -> Self {
        let fixed = plan.base.provenance.iter().filter(|(k, o)| **o != Origin::Default && !plan.keys.contains(k));
        let mut settings: Vec<SettingOrigin> = fixed
            .map(|(k, o)| SettingOrigin { key: k.clone(), source: o.kind().into(), detail: o.detail(), swept: false })
            .collect();
        for p in plan.parameters() {
            let o = Origin::Sweep(p.at.clone());
            settings.push(SettingOrigin {
                key: p.key.clone(),
                source: o.kind().into(),
                detail: o.detail(),
                swept: true,
            });
        }
        let file = std::path::absolute(&plan.spec.file).unwrap_or_else(|_| plan.spec.file.clone());
        SweepProvenance { sweep_file: file.display().to_string(), settings }
    }
}

fn insert_sweep(
    tx: &Transaction<'_>,
    plan: &Plan,
    provenance: &SweepProvenance,
    code_id: i64,
) -> Result<bool, StoreError> {
    let spec = &plan.spec;
    let provenance = serde_json::to_string(provenance).expect("provenance serializes");
    let inserted = tx.execute(
        &format!(
            "INSERT OR IGNORE INTO sweeps (id, name, file, method, metric_name, metric_goal, spec_json, base_config_json, code_version_id, created_at, provenance_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW}, ?10)"
        ),
        params![
            plan.sweep_id,
            spec.name,
            spec.file.display().to_string(),
            spec.method.as_str(),
            spec.metric.as_ref().map(|m| m.name.clone()),
            spec.metric.as_ref().map(|m| m.goal.as_str()),
            spec.doc.value.to_string(),
            plan.base.canonical_text(),
            code_id,
            provenance,
        ],
    )?;
    Ok(inserted == 1)
}
