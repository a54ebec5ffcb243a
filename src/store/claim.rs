//! Handing runs of a sweep to training processes: claiming is one transaction, so two
//! orchestrators on the same store never train the same run twice.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{NOW, RunStatus, Store, StoreError};
use crate::exit::Kind;

/// This machine's host name, as claims and runs record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A run handed to a training process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Run id.
    pub run_id: String,
    /// The attempt this claim starts.
    pub attempt: u32,
}

/// How often a training process records that it lives ([`Store::heartbeat`]).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a run claimed on another host stays claimed without a heartbeat: after that, its
/// process is taken for dead and the run is resumed (on this host, a dead process is seen at
/// once).
pub const CLAIM_EXPIRY_SECONDS: i64 = 120;

/// Who holds a running run: the process recorded for it, its host, and until when its claim
/// holds without a new heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its process id (the trainer's, or the orchestrator's until the trainer records its own).
    pub pid: Option<u32>,
    /// Its host.
    pub host: Option<String>,
    /// When its claim expires unless its process records a heartbeat (UTC).
    pub expires_at: Option<String>,
}

/// SQL condition on `r` (a row of `runs`): a failed run that may be tried again, its retries
/// (`?2`) not used up and its failure not bad input (exit code `?3`), which would fail the same
/// way again.
pub(super) const RETRYABLE: &str = "(r.status = 'failed' AND r.attempt <= ?2 AND r.exit_code IS NOT ?3)";

impl Store {
    /// Claims the first run of `sweep_id` (in expansion order) that is pending, interrupted, or
    /// failed with fewer than `1 + max_retries` attempts and not on bad input, marking it
    /// running on `host` under process `pid` (the claimer's, until the training process records
    /// its own).
    pub fn claim(
        &mut self,
        sweep_id: &str,
        max_retries: u32,
        host: &str,
        pid: u32,
    ) -> Result<Option<Claim>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: Option<(String, RunStatus, u32)> = tx
            .query_row(
                &format!(
                    "SELECT r.id, r.status, r.attempt FROM sweep_runs s JOIN runs r ON r.id = s.run_id
                     WHERE s.sweep_id = ?1 AND (r.status IN ('pending', 'interrupted') OR {RETRYABLE})
                     ORDER BY s.position LIMIT 1"
                ),
                params![sweep_id, max_retries, Kind::BadInput.code()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((run_id, from, attempt)) = next else { return Ok(None) };
        let attempt = attempt + 1;
        super::lifecycle::begin_attempt(
            &tx,
            &run_id,
            from,
            attempt,
            host,
            pid,
            &format!("attempt {attempt} claimed on {host}"),
        )?;
        tx.commit()?;
        Ok(Some(Claim { run_id, attempt }))
    }

    /// Whether the failed run `id` would be claimed again with `max_retries`.
    pub fn retryable(&self, id: &str, max_retries: u32) -> Result<bool, StoreError> {
        let sql = format!("SELECT {RETRYABLE} FROM runs r WHERE r.id = ?1");
        Ok(self.conn.query_row(&sql, params![id, max_retries, Kind::BadInput.code()], |r| r.get(0))?)
    }

    /// Who holds run `id` (meaningful while it runs).
    pub fn holder(&self, id: &str) -> Result<Holder, StoreError> {
        let sql = format!(
            "SELECT pid, host, strftime('%Y-%m-%dT%H:%M:%SZ', COALESCE(heartbeat_at, started_at), '+{CLAIM_EXPIRY_SECONDS} seconds')
             FROM runs WHERE id = ?1"
        );
        Ok(self
            .conn
            .query_row(&sql, [id], |r| Ok(Holder { pid: r.get(0)?, host: r.get(1)?, expires_at: r.get(2)? }))?)
    }

    /// Records that the process training attempt `attempt` of run `id` on `host` lives (a
    /// training process calls it every [`HEARTBEAT`]); the run's host becomes the process's
    /// own. A process whose attempt was superseded changes nothing.
    pub fn heartbeat(&mut self, id: &str, attempt: u32, host: &str) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "UPDATE runs SET heartbeat_at = {NOW}, host = ?3 WHERE id = ?1 AND status = 'running' AND attempt = ?2"
            ),
            params![id, attempt, host],
        )?;
        Ok(())
    }

    /// Records the process training run `id` and the device it uses.
    pub fn set_process(&mut self, id: &str, pid: u32, device: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE runs SET pid = ?2, device = ?3 WHERE id = ?1", params![id, pid, device])?;
        Ok(())
    }

    /// Marks interrupted every run of `sweep_id` whose training process is gone: on `host`,
    /// a process that `alive` says is not running; on another host, one whose claim expired
    /// ([`CLAIM_EXPIRY_SECONDS`] without a heartbeat). Returns their ids.
    pub fn recover_stale(
        &mut self,
        sweep_id: &str,
        host: &str,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running: Vec<(String, Option<u32>, Option<String>, bool)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT r.id, r.pid, r.host,
                        COALESCE(r.heartbeat_at, r.started_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{CLAIM_EXPIRY_SECONDS} seconds')
                 FROM sweep_runs s JOIN runs r ON r.id = s.run_id WHERE s.sweep_id = ?1 AND r.status = 'running'"
            ))?;
            stmt.query_map(params![sweep_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut recovered = Vec::new();
        for (id, pid, run_host, expired) in running {
            let reason = if run_host.as_deref() == Some(host) {
                if pid.is_some_and(&alive) {
                    continue;
                }
                "its training process is gone".to_string()
            } else if expired {
                format!(
                    "no heartbeat from its process on {} for {CLAIM_EXPIRY_SECONDS} s: its claim expired",
                    run_host.as_deref().unwrap_or("an unknown host")
                )
            } else {
                continue;
            };
            tx.execute(&format!("UPDATE runs SET status = 'interrupted', ended_at = {NOW} WHERE id = ?1"), [&id])?;
            tx.execute(
                &format!(
                    "INSERT INTO run_events (run_id, at, from_status, to_status, reason)
                     VALUES (?1, {NOW}, 'running', 'interrupted', ?2)"
                ),
                params![id, reason],
            )?;
            recovered.push(id);
        }
        tx.commit()?;
        Ok(recovered)
    }
}
