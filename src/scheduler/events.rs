//! What the scheduler reports: the contract between running a sweep and showing it. Plain
//! lines for people and `--json` lines for scripts are both consumers of these events.

use serde::Serialize;

/// Prefix of the per-step progress lines a training process prints on stderr
/// (`progress step 12/40 loss 0.123456`), which the scheduler reads from its log.
pub const PROGRESS_PREFIX: &str = "progress step";

/// One thing that happened while running a sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
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
        /// `finished`, `interrupted` or `failed`.
        status: String,
        /// Exit code (128 + signal when killed).
        exit_code: i32,
        /// Seconds the process ran.
        seconds: f64,
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
    },
}

impl Event {
    /// The event as one line for people.
    pub fn line(&self) -> String {
        match self {
            Event::Recovered { runs } => {
                format!("resuming {} run(s) whose process was gone: {}", runs.len(), runs.join(", "))
            }
            Event::Started { run, attempt, slot, pid } => {
                format!("started  {run} (attempt {attempt}) on {slot}, pid {pid}")
            }
            Event::Ended { run, attempt, status, exit_code, seconds } => {
                format!("{status:<8} {run} (attempt {attempt}) exit {exit_code} after {seconds:.1}s")
            }
            Event::Progress { run, slot, step, total, loss, eta_seconds } => {
                let eta = eta_seconds.map_or("-".into(), |s| format!("{s:.0}s"));
                format!("{run:<24} {slot:<10} step {step:>6}/{total:<6} loss {loss:<9.5} eta {eta}")
            }
            Event::EarlyStop { run, rung, metric } => {
                format!("early stop {run}: not among the best at report {rung} of {metric}")
            }
            Event::Stopping { reason } => format!("stopping: {reason}"),
            Event::Done { finished, stopped, failed, remaining } => {
                let stopped = if *stopped > 0 { format!(", {stopped} stopped early") } else { String::new() };
                format!("sweep done: {finished} finished{stopped}, {failed} failed, {remaining} remaining")
            }
        }
    }
}
