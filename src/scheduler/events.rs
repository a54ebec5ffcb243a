//! What the scheduler reports: the contract between running a sweep and showing it. Plain
//! lines for people and `--json` lines for scripts are both consumers of these events.

use serde::Serialize;

/// Prefix of the per-step progress lines a training process prints on stderr
/// (`progress step 12/40 loss 0.123456`), which the scheduler reads from its log.
pub const PROGRESS_PREFIX: &str = "progress step";

/// A run that another orchestrator's process is training.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claimed {
    /// Run id.
    pub run: String,
    /// The process recorded for it.
    pub pid: Option<u32>,
    /// Its host.
    pub host: Option<String>,
    /// When its claim expires if its process stops sending heartbeats (runs on other hosts).
    pub expires_at: Option<String>,
}

impl std::fmt::Display for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.pid.map_or("?".to_string(), |p| p.to_string());
        write!(f, "{} (pid {pid} on {}", self.run, self.host.as_deref().unwrap_or("?"))?;
        match &self.expires_at {
            Some(at) => write!(f, "; claimed until {at} unless its process keeps sending heartbeats)"),
            None => f.write_str(")"),
        }
    }
}

/// One thing that happened while running a sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The sweep this orchestrator runs (the first event).
    Sweep {
        /// Sweep id.
        sweep_id: String,
    },
    /// Runs found running with no live process were marked interrupted (to be resumed).
    Recovered {
        /// Their ids.
        runs: Vec<String>,
    },
    /// A run's training process started.
    Started {
        /// Run id.
        run: String,
        /// Attempt.
        attempt: u32,
        /// The slot, e.g. `gpu 2` or `cpu x2`.
        slot: String,
        /// The process id.
        pid: u32,
    },
    /// A run's process ended.
    Ended {
        /// Run id.
        run: String,
        /// Attempt.
        attempt: u32,
        /// `finished`, `stopped`, `interrupted` or `failed`.
        status: String,
        /// Exit code (128 + signal when killed).
        exit_code: i32,
        /// Seconds the process ran.
        seconds: f64,
        /// Why it failed or was stopped, and whether it is retried.
        reason: Option<String>,
        /// What the training process warned about (e.g. corrupt checkpoints it skipped).
        warnings: Vec<String>,
    },
    /// Where a running run is (about once a second per run).
    Progress {
        /// Run id.
        run: String,
        /// Its slot.
        slot: String,
        /// Optimiser steps done.
        step: u64,
        /// Total steps.
        total: u64,
        /// Loss of the last step.
        loss: f64,
        /// Seconds left at the rate seen so far, once known.
        eta_seconds: Option<f64>,
    },
    /// A bayes sweep proposed its next run and registered it.
    Proposed {
        /// Run id.
        run: String,
        /// Its position in the sweep.
        position: usize,
        /// How it was chosen, in words.
        how: String,
        /// Runs with a value the proposal learned from.
        results: usize,
        /// Runs without a value yet (counted as the worst).
        pending: usize,
    },
    /// A bayes sweep proposes no more runs (the runs it has still run).
    ProposalsEnded {
        /// Why.
        reason: String,
    },
    /// Early termination stops a run that fell behind at a rung.
    EarlyStop {
        /// Run id.
        run: String,
        /// The rung (reports of the metric).
        rung: usize,
        /// The metric.
        metric: String,
    },
    /// The scheduler stops launching runs.
    Stopping {
        /// Why.
        reason: String,
    },
    /// Every run of the sweep is done or nothing more can be launched.
    Done {
        /// Runs finished.
        finished: usize,
        /// Runs stopped early.
        #[serde(default)]
        stopped: usize,
        /// Runs failed for good.
        failed: usize,
        /// Runs left interrupted or pending.
        remaining: usize,
        /// Runs another orchestrator's process is training.
        elsewhere: Vec<Claimed>,
    },
}

impl Event {
    /// The event as one line for people.
    pub fn line(&self) -> String {
        match self {
            Event::Sweep { sweep_id } => format!("sweep {sweep_id}"),
            Event::Recovered { runs } => {
                format!("resuming {} run(s) whose process was gone: {}", runs.len(), runs.join(", "))
            }
            Event::Started { run, attempt, slot, pid } => {
                format!("started  {run} (attempt {attempt}) on {slot}, pid {pid}")
            }
            Event::Ended { run, attempt, status, exit_code, seconds, reason, warnings } => {
                let mut line = format!("{status:<8} {run} (attempt {attempt}) exit {exit_code} after {seconds:.1}s");
                if let Some(reason) = reason {
                    line.push_str(&format!(": {reason}"));
                }
                for warning in warnings {
                    line.push_str(&format!("\n         warning: {warning}"));
                }
                line
            }
            Event::Progress { run, slot, step, total, loss, eta_seconds } => {
                let eta = eta_seconds.map_or("-".into(), |s| format!("{s:.0}s"));
                format!("{run:<24} {slot:<10} step {step:>6}/{total:<6} loss {loss:<9.5} eta {eta}")
            }
            Event::Proposed { run, position, how, results, pending } => {
                format!("proposed {run} (#{position}): {how}, from {results} result(s), {pending} without one yet")
            }
            Event::ProposalsEnded { reason } => format!("no more proposals: {reason}"),
            Event::EarlyStop { run, rung, metric } => {
                format!("early stop {run}: not among the best at report {rung} of {metric}")
            }
            Event::Stopping { reason } => format!("stopping: {reason}"),
            Event::Done { finished, stopped, failed, remaining, elsewhere } => {
                let stopped = if *stopped > 0 { format!(", {stopped} stopped early") } else { String::new() };
                let mut line =
                    format!("sweep done: {finished} finished{stopped}, {failed} failed, {remaining} remaining");
                if !elsewhere.is_empty() {
                    let runs: Vec<String> = elsewhere.iter().map(Claimed::to_string).collect();
                    let n = elsewhere.len();
                    let noun = if n == 1 { "run is" } else { "runs are" };
                    line.push_str(&format!("; {n} {noun} being trained by another process: {}", runs.join(", ")));
                }
                line
            }
        }
    }
}
