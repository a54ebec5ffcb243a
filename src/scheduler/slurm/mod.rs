//! The Slurm backend: each attempt is one batch job.
//!
//! Each claimed run becomes one job: `sbatch --gres=gpu:N ... --wrap "dbsweep --root ROOT train
//! --run ID --claimed"`, with its output in `ROOT/runs/ID/slurm-JOBID.log` (ROOT must be on a
//! filesystem the compute nodes share). Slurm picks the node and the GPUs (it sets
//! `CUDA_VISIBLE_DEVICES`); the trainer records its own metrics, checkpoints and end status in
//! the lineage store, exactly as under the local backend. The backend follows its jobs with
//! `squeue` (and `sacct`, or `sacct -c` where there is no slurmdbd, for jobs that left the
//! queue) and maps each job's final state to a verdict (`state::verdict`); retries, failure
//! counting, early termination and stop escalation are the dispatch loop's
//! ([`super::dispatch()`]). A graceful stop is `scancel --signal=INT --full` for a running job
//! (the trainer checkpoints and exits) and a cancel for a pending one; a kill is `scancel`
//! (SIGTERM, then SIGKILL); the third stop request stops following the jobs.
//!
//! Jobs do not depend on the orchestrator's process: if it dies, its jobs go on and record their
//! ends themselves; the next `dbsweep run`/`resume` on the same host follows the jobs that an
//! orchestrator which is gone left behind (each job's `--comment` names its orchestrator), and
//! marks runs with neither a job nor a live process interrupted, to resume them.
//!
//! Jobs are submitted held (`--hold`), recorded (`slurm job N, gres G` in the run's `device`
//! column), then released, so the record never races the trainer's own. The trainer replaces
//! it with the device it sees (`cpu (CUDA_VISIBLE_DEVICES=k)`); when the job ends, the job id is
//! appended again: `cpu (CUDA_VISIBLE_DEVICES=1), slurm job 42`.

mod command;
mod job;
mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use command::{Client, JobInfo};
use job::{comment, job_log, job_name, output_pattern, parse_comment, sbatch_args};
use state::{ExitCode, is_final, verdict};

use super::dispatch::{Active, Backend, Exit, LaunchError, Stop, recover_stale};
use super::events::Event;
use super::local::TrainCommand;
use super::process;
use crate::exit::Kind;
use crate::store::{Claim, RunStatus, Store, StoreError};

/// Settings of the Slurm backend.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The trainer jobs run (the root must be absolute: jobs start elsewhere).
    pub command: TrainCommand,
    /// This machine's host name (job comments name the orchestrator by it).
    pub host: String,
    /// Most jobs in flight (pending or running) at once; `None`: every run at once (Slurm queues).
    pub max_parallel: Option<usize>,
    /// `--gres` per job, e.g. `gpu:1`; `None` asks for no generic resource.
    pub gres: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (the job's time limit).
    pub time: Option<String>,
    /// More `sbatch` arguments, after dbsweep's own (so they can override them).
    pub extra_args: Vec<String>,
    /// `SLURM_CONF` for the Slurm commands (otherwise they use theirs).
    pub slurm_conf: Option<PathBuf>,
    /// How often the queue is read.
    pub poll: Duration,
    /// Longest wait for one Slurm command.
    pub command_timeout: Duration,
    /// Give up following the jobs after Slurm has not answered for this long.
    pub unreachable_limit: Duration,
}

impl SlurmOptions {
    /// Options with the defaults for everything Slurm-specific.
    pub fn new(command: TrainCommand, host: String) -> SlurmOptions {
        SlurmOptions {
            command,
            host,
            max_parallel: None,
            gres: Some("gpu:1".into()),
            partition: None,
            time: None,
            extra_args: Vec::new(),
            slurm_conf: None,
            poll: Duration::from_millis(500),
            command_timeout: Duration::from_secs(60),
            unreachable_limit: Duration::from_secs(300),
        }
    }

    fn gres_text(&self) -> &str {
        self.gres.as_deref().unwrap_or("none")
    }
}

/// Batch jobs on a Slurm cluster.
pub struct SlurmBackend {
    opts: SlurmOptions,
    client: Client,
    /// Polls in a row that did not list each job (by job id).
    missing: HashMap<u64, u32>,
    /// Since when Slurm has not answered.
    unreachable_since: Option<Instant>,
}

impl SlurmBackend {
    /// A backend submitting jobs with `opts`.
    pub fn new(opts: SlurmOptions) -> Self {
        let client = Client { slurm_conf: opts.slurm_conf.clone(), timeout: opts.command_timeout };
        SlurmBackend { opts, client, missing: HashMap::new(), unreachable_since: None }
    }

    /// Submits run `run`'s attempt held, records the job, releases it; returns the job id.
    fn submit(&self, store: &mut Store, run: &str, attempt: u32) -> Result<String, LaunchError> {
        let dir = self.opts.command.root.join("runs").join(run);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LaunchError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let submit_error = |e: String| LaunchError::Backend(format!("cannot submit Slurm jobs: {e}"));
        let out = self.client.run("sbatch", &sbatch_args(&self.opts, run, attempt)).map_err(submit_error)?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or_default().trim().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(submit_error(format!("`sbatch --parsable` printed `{}`, not a job id", out.trim())));
        }
        let device = format!("slurm job {id}, gres {}", self.opts.gres_text());
        if let Err(e) = store.set_process(run, std::process::id(), &device) {
            let _ = self.client.run("scancel", std::slice::from_ref(&id));
            return Err(LaunchError::Store(e));
        }
        if let Err(e) = self.client.run("scontrol", &["release".into(), id.clone()]) {
            let _ = self.client.run("scancel", std::slice::from_ref(&id));
            return Err(submit_error(format!("cannot release job {id}: {e}")));
        }
        Ok(id)
    }

    /// Follows the job `job` of the running run `run` (attempt `attempt`) that an orchestrator
    /// which is gone left behind: records this orchestrator in the job's comment and the
    /// store, and releases it if it was left held.
    fn take_over(&self, store: &mut Store, run: &str, attempt: u32, job: &JobInfo) -> Result<Active, StoreError> {
        let update = [format!("JobId={}", job.id), format!("Comment={}", comment(&self.opts.host, attempt))];
        let _ = self.client.run("scontrol", &[&["update".to_string()][..], &update].concat());
        // Our pid marks the run as followed; keep the device the trainer recorded, if it started.
        let device = match store.run(run)?.device {
            Some(d) if !d.is_empty() && !d.contains("slurm job") => format!("{d}, slurm job {}", job.id),
            _ => format!("slurm job {}, gres {}", job.id, self.opts.gres_text()),
        };
        store.set_process(run, std::process::id(), &device)?;
        if job.state == "PENDING" && job.reason.contains("JobHeld") {
            let _ = self.client.run("scontrol", &["release".into(), job.id.clone()]);
        }
        let claim = Claim { run_id: run.to_string(), attempt };
        let slot = format!("slurm job {} (submitted earlier), gres {}", job.id, self.opts.gres_text());
        let log = job_log(&self.opts.command.root, run, &job.id);
        let mut active = Active::new(&claim, job.id.parse().unwrap_or(0), slot, log, store.latest_checkpoint(run)?);
        active.running_since = (job.state != "PENDING").then(Instant::now);
        Ok(active)
    }
}

impl Backend for SlurmBackend {
    fn adopt(
        &mut self,
        store: &mut Store,
        sweep_id: &str,
        report: &mut dyn FnMut(Event),
    ) -> Result<Vec<Active>, StoreError> {
        let queue = match self.client.squeue(None) {
            Ok(queue) => queue,
            Err(e) => {
                report(Event::Stopping { reason: format!("cannot reach Slurm: {e}") });
                // Nothing can be launched either: no capacity.
                self.opts.max_parallel = Some(0);
                return Ok(Vec::new());
            }
        };
        let mut adopted = Vec::new();
        let mut owned_elsewhere = false;
        for row in store.sweep_runs(sweep_id)?.into_iter().filter(|r| r.status == RunStatus::Running) {
            let pattern = output_pattern(&self.opts.command.root, &row.id);
            let newest = queue
                .iter()
                .filter(|j| j.name == job_name(&row.id) && j.stdout == pattern)
                .max_by_key(|j| j.id.parse::<u64>().unwrap_or(0));
            let Some(job) = newest else { continue };
            let Some((host, pid, attempt)) = parse_comment(&job.comment) else { continue };
            if attempt != row.attempt {
                continue;
            }
            if host != self.opts.host || process::alive(pid) {
                owned_elsewhere |= !is_final(&job.state);
                continue;
            }
            adopted.push(self.take_over(store, &row.id, attempt, job)?);
        }
        for a in &adopted {
            report(Event::Started {
                run: a.run.clone(),
                attempt: a.attempt,
                slot: a.slot.clone(),
                pid: a.handle as u32,
            });
        }
        // Runs whose job another live orchestrator follows keep their trainer's pid, which may
        // live on another node: recovering by pid would be wrong for them, so wait for a later
        // resume.
        if !owned_elsewhere {
            recover_stale(store, sweep_id, &self.opts.host, report)?;
        }
        Ok(adopted)
    }

    fn capacity(&self) -> usize {
        self.opts.max_parallel.unwrap_or(usize::MAX)
    }

    fn launch(&mut self, store: &mut Store, claim: &Claim, _active: &[Active]) -> Result<Active, LaunchError> {
        let checkpoint_before = store.latest_checkpoint(&claim.run_id)?;
        let id = self.submit(store, &claim.run_id, claim.attempt)?;
        let slot = format!("slurm job {id}, gres {}", self.opts.gres_text());
        let log = job_log(&self.opts.command.root, &claim.run_id, &id);
        Ok(Active::new(claim, id.parse().unwrap_or(0), slot, log, checkpoint_before))
    }

    fn poll(&mut self, store: &mut Store, active: &mut [Active]) -> Result<Result<Vec<Exit>, String>, StoreError> {
        let ids: Vec<String> = active.iter().map(|a| a.handle.to_string()).collect();
        let listed: Vec<&str> = ids.iter().map(String::as_str).collect();
        let queue = match self.client.squeue(Some(&listed)) {
            Ok(queue) => {
                self.unreachable_since = None;
                queue
            }
            Err(e) => {
                let since = self.unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.opts.unreachable_limit {
                    return Ok(Err(format!(
                        "Slurm has not answered for {} s ({e}); its jobs go on, `dbsweep resume` follows them",
                        self.opts.unreachable_limit.as_secs()
                    )));
                }
                return Ok(Ok(Vec::new()));
            }
        };
        let by_id: HashMap<&str, &JobInfo> = queue.iter().map(|j| (j.id.as_str(), j)).collect();
        let mut exits = Vec::new();
        for (index, a) in active.iter_mut().enumerate() {
            let id = a.handle.to_string();
            let (state, exit) = match by_id.get(id.as_str()) {
                Some(info) => {
                    self.missing.remove(&a.handle);
                    if info.state != "PENDING" && a.running_since.is_none() {
                        a.running_since = Some(Instant::now());
                    }
                    if !is_final(&info.state) {
                        continue;
                    }
                    (info.state.clone(), info.exit)
                }
                None => {
                    let missing = self.missing.entry(a.handle).or_default();
                    *missing += 1;
                    if *missing < 3 {
                        continue;
                    }
                    self.client.sacct(&id).unwrap_or_else(|| ("VANISHED".into(), ExitCode::default()))
                }
            };
            self.missing.remove(&a.handle);
            let record = store.run(&a.run)?;
            // The trainer replaced the job id in `device` with what it ran on: add it back.
            let device = record.device.clone().unwrap_or_default();
            if record.attempt == a.attempt && !device.contains("slurm job") {
                let device =
                    if device.is_empty() { format!("slurm job {id}") } else { format!("{device}, slurm job {id}") };
                store.set_process(&a.run, std::process::id(), &device)?;
            }
            let v = verdict(&id, &state, exit, record.status, record.error.as_deref(), a.stop_requested);
            let code = match &v {
                super::dispatch::Verdict::Finished => Kind::Ok.code(),
                super::dispatch::Verdict::Interrupted if exit.value() == 0 => Kind::Interrupted.code(),
                _ if exit.value() == 0 => Kind::Failed.code(),
                _ => exit.value(),
            };
            exits.push(Exit { index, verdict: v, code });
        }
        Ok(Ok(exits))
    }

    fn stop(&mut self, attempt: &Active, how: Stop) {
        let id = attempt.handle.to_string();
        let asked = how == Stop::Graceful
            && attempt.running_since.is_some()
            && self.client.run("scancel", &["--signal=INT".into(), "--full".into(), id.clone()]).is_ok();
        if !asked {
            // Pending (nothing to checkpoint yet), or a kill: cancel.
            let _ = self.client.run("scancel", &[id]);
        }
    }

    fn abandon_at(&self) -> Option<usize> {
        Some(3)
    }

    fn poll_interval(&self) -> Duration {
        self.opts.poll
    }
}

#[cfg(test)]
mod tests;
