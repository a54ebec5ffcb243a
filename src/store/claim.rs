//! Handing runs of a sweep to training processes: claiming is one transaction, so two
//! orchestrators on the same store never train the same run twice.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{NOW, RunStatus, Store, StoreError};

/// A run handed to a training process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Run id.
    pub run_id: String,
    /// The attempt this claim starts.
    pub attempt: u32,
}

impl Store {
    /// Claims the first run of `sweep_id` (in expansion order) that is pending, interrupted, or
    /// failed with fewer than `1 + max_retries` attempts, marking it running on `host` under
    /// process `pid` (the claimer's, until the training process records its own).
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
                "SELECT r.id, r.status, r.attempt FROM sweep_runs s JOIN runs r ON r.id = s.run_id
                 WHERE s.sweep_id = ?1 AND (r.status IN ('pending', 'interrupted') OR (r.status = 'failed' AND r.attempt <= ?2))
                 ORDER BY s.position LIMIT 1",
                params![sweep_id, max_retries],
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

    /// Records the process training run `id` and the device it uses.
    pub fn set_process(&mut self, id: &str, pid: u32, device: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE runs SET pid = ?2, device = ?3 WHERE id = ?1", params![id, pid, device])?;
        Ok(())
    }

    /// Marks interrupted every run of `sweep_id` that is running on `host` but whose process is
    /// gone (`alive` says whether a pid is still running); returns their ids.
    pub fn recover_stale(
        &mut self,
        sweep_id: &str,
        host: &str,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running: Vec<(String, Option<u32>)> = {
            let mut stmt = tx.prepare(
                "SELECT r.id, r.pid FROM sweep_runs s JOIN runs r ON r.id = s.run_id
                 WHERE s.sweep_id = ?1 AND r.status = 'running' AND r.host = ?2",
            )?;
            stmt.query_map(params![sweep_id, host], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        let mut recovered = Vec::new();
        for (id, pid) in running {
            if pid.is_some_and(&alive) {
                continue;
            }
            tx.execute(&format!("UPDATE runs SET status = 'interrupted', ended_at = {NOW} WHERE id = ?1"), [&id])?;
            tx.execute(
                &format!(
                    "INSERT INTO run_events (run_id, at, from_status, to_status, reason)
                     VALUES (?1, {NOW}, 'running', 'interrupted', 'its training process is gone')"
                ),
                [&id],
            )?;
            recovered.push(id);
        }
        tx.commit()?;
        Ok(recovered)
    }
}
