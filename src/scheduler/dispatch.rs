//! The one dispatch loop every backend runs under: claim runs through the lineage store (for a
//! bayes sweep, proposing the next run when none is left to claim), launch them while the
//! backend has room, follow them to their end, retry failures from their checkpoints, count
//! immediate failures, honour `--fail-fast`, escalate stop requests, stop runs that Hyperband
//! drops, and report everything as [`Event`]s.
//!
//! A [`Backend`] only knows how to launch an attempt, tell how launched attempts ended, and
//! signal them: [`super::local`] runs them as child processes on slots, [`super::slurm`] as
//! batch jobs. Everything a run's status depends on is decided here, once, for both.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::events::{Claimed, Event};
use super::process;
use super::propose::Proposer;
use crate::exit::Kind;
use crate::store::{Claim, RunStatus, Store, StoreError};
use crate::sweep::Hyperband;
use crate::sweep::bayes::Searcher;

/// Stop requests: the number of signals received so far (Ctrl-C, SIGTERM).
pub type StopCount = Arc<AtomicUsize>;

/// The policy of a sweep's dispatch, whatever the backend.
#[derive(Clone, Debug)]
pub struct DispatchOptions {
    /// This machine's host name (claims record it).
    pub host: String,
    /// Retries of a failed run (each resumes from its checkpoint). A run that failed on bad
    /// input is never retried.
    pub max_retries: u32,
    /// Stop launching at the first failure.
    pub fail_fast: bool,
    /// Failures within this long of starting, with no new checkpoint, are immediate.
    pub immediate_failure: Duration,
    /// This many immediate failures in a row stop the sweep.
    pub max_immediate_failures: usize,
    /// Early termination and the metric it ranks runs by.
    pub early: Option<(Hyperband, String)>,
    /// For a bayes sweep, its searcher: runs are proposed as slots free up.
    pub search: Option<Searcher>,
}

/// How running a sweep ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Runs finished.
    pub finished: usize,
    /// Runs stopped early.
    pub stopped: usize,
    /// Runs failed for good (retries used up, or bad input).
    pub failed: usize,
    /// Runs not finished and not being trained (interrupted, pending, or failed with retries
    /// left), and a bayes sweep's runs not proposed yet.
    pub remaining: usize,
    /// Runs being trained by another orchestrator.
    pub elsewhere: Vec<Claimed>,
    /// Whether a stop request ended it.
    pub interrupted: bool,
}

impl Summary {
    /// The kind of end: interrupted, runs failed or left over, or every run done (runs another
    /// process trains are its to finish).
    pub fn kind(&self) -> Kind {
        if self.interrupted {
            Kind::Interrupted
        } else if self.failed > 0 || self.remaining > 0 {
            Kind::Failed
        } else {
            Kind::Ok
        }
    }
}

/// How a launched attempt ended, as its backend tells it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Trained to the end.
    Finished,
    /// Stopped on request (Ctrl-C, early termination, a cancelled job); resumes later.
    Interrupted,
    /// Failed, for this reason.
    Failed(String),
}

/// An attempt the dispatcher follows.
#[derive(Debug)]
pub struct Active {
    /// Run id.
    pub run: String,
    /// Attempt number.
    pub attempt: u32,
    /// The backend's handle: a process id, or a Slurm job id.
    pub handle: u64,
    /// Where it runs, in words (`cpu x2`, `gpu 1`, `slurm job 42, gres gpu:1`).
    pub slot: String,
    /// The log its training process writes (progress is read from it).
    pub log: PathBuf,
    /// When it was launched.
    pub launched: Instant,
    /// When it was first seen running (a queued Slurm job is not running yet).
    pub running_since: Option<Instant>,
    /// The run's newest checkpoint when it was launched.
    pub checkpoint_before: Option<i64>,
    /// Whether this orchestrator asked it to stop.
    pub stop_requested: bool,
    /// The rung at which early termination stopped it.
    pub early_stop: Option<usize>,
    /// First progress seen (time, step) and the last step reported.
    first_progress: Option<(Instant, u64)>,
    reported_step: u64,
}

impl Active {
    /// An attempt just launched.
    pub fn new(claim: &Claim, handle: u64, slot: String, log: PathBuf, checkpoint_before: Option<i64>) -> Self {
        Active {
            run: claim.run_id.clone(),
            attempt: claim.attempt,
            handle,
            slot,
            log,
            launched: Instant::now(),
            running_since: None,
            checkpoint_before,
            stop_requested: false,
            early_stop: None,
            first_progress: None,
            reported_step: 0,
        }
    }
}

/// An ended attempt, from [`Backend::poll`].
#[derive(Clone, Debug)]
pub struct Exit {
    /// Index into the active attempts given to `poll`.
    pub index: usize,
    /// How it ended.
    pub verdict: Verdict,
    /// Its exit code (128 + signal when killed).
    pub code: i32,
}

/// How a backend asks an attempt to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Checkpoint and exit (SIGINT).
    Graceful,
    /// End it now.
    Kill,
}

/// Why an attempt could not be launched.
#[derive(Debug)]
pub enum LaunchError {
    /// The store failed: the sweep cannot go on.
    Store(StoreError),
    /// The backend could not start it (recorded as the attempt's failure; launching stops).
    Backend(String),
}

impl From<StoreError> for LaunchError {
    fn from(e: StoreError) -> Self {
        LaunchError::Store(e)
    }
}

/// Where a sweep's attempts run.
pub trait Backend {
    /// Before the loop: the attempts a previous orchestrator left running that this one
    /// follows now, after marking interrupted the runs whose process is gone.
    fn adopt(
        &mut self,
        store: &mut Store,
        sweep_id: &str,
        report: &mut dyn FnMut(Event),
    ) -> Result<Vec<Active>, StoreError>;
    /// How many attempts may be in flight at once.
    fn capacity(&self) -> usize;
    /// Launches the claimed attempt; `active` are those in flight.
    fn launch(&mut self, store: &mut Store, claim: &Claim, active: &[Active]) -> Result<Active, LaunchError>;
    /// Which attempts ended, and how (the run's record in `store` says what the trainer saw).
    /// May update `running_since`. `Err` means the backend cannot follow its attempts any more
    /// (they go on; a later `resume` follows them), with the reason.
    fn poll(&mut self, store: &mut Store, active: &mut [Active]) -> Result<Result<Vec<Exit>, String>, StoreError>;
    /// Asks one attempt to stop.
    fn stop(&mut self, attempt: &Active, how: Stop);
    /// The stop request (counted from 1) after which the loop stops following the attempts,
    /// when the backend's attempts outlive it (Slurm jobs).
    fn abandon_at(&self) -> Option<usize> {
        None
    }
    /// How long to wait between polls.
    fn poll_interval(&self) -> Duration;
}

/// Runs every claimable run of `sweep_id` on `backend` until none is left (or a stop request
/// or an immediate-failure streak ends it), reporting events.
pub fn dispatch(
    store: &mut Store,
    sweep_id: &str,
    backend: &mut dyn Backend,
    opts: &DispatchOptions,
    stop: &StopCount,
    report: &mut dyn FnMut(Event),
) -> Result<Summary, StoreError> {
    report(Event::Sweep { sweep_id: sweep_id.to_string() });
    let mut active = backend.adopt(store, sweep_id, report)?;
    let mut proposer = opts.search.clone().map(Proposer::new);
    let mut launching = true;
    let mut forwarded = 0;
    let mut immediate_failures = 0;
    let mut last_report = Instant::now();
    'dispatch: loop {
        let stops = stop.load(Ordering::SeqCst);
        if stops > forwarded {
            if launching {
                report(Event::Stopping { reason: "interrupted; asking running runs to checkpoint and exit".into() });
            }
            launching = false;
            forwarded = stops;
            if backend.abandon_at().is_some_and(|n| stops >= n) {
                report(Event::Stopping {
                    reason: "stop requested again: no longer following the jobs (`dbsweep resume` follows them again)"
                        .into(),
                });
                break;
            }
            let how = if stops >= 2 { Stop::Kill } else { Stop::Graceful };
            for a in active.iter_mut().filter(|a| how == Stop::Kill || !a.stop_requested) {
                a.stop_requested = true;
                backend.stop(a, how);
            }
        }
        while launching && active.len() < backend.capacity() && stop.load(Ordering::SeqCst) == forwarded {
            let Some(claim) = store.claim(sweep_id, opts.max_retries, &opts.host, std::process::id())? else {
                let proposed = match proposer.as_mut() {
                    Some(p) => p.next(store, sweep_id, opts.max_retries, report)?,
                    None => false,
                };
                if proposed {
                    continue;
                }
                break;
            };
            match backend.launch(store, &claim, &active) {
                Ok(a) => {
                    report(Event::Started {
                        run: a.run.clone(),
                        attempt: a.attempt,
                        slot: a.slot.clone(),
                        pid: a.handle as u32,
                    });
                    active.push(a);
                }
                Err(LaunchError::Store(e)) => return Err(e),
                Err(LaunchError::Backend(e)) => {
                    store.end_attempt(&claim.run_id, RunStatus::Failed, Kind::Failed.code(), Some(&e))?;
                    launching = false;
                    report(Event::Stopping { reason: e });
                }
            }
        }
        if active.is_empty() {
            break;
        }
        let wait_until = Instant::now() + backend.poll_interval();
        while Instant::now() < wait_until && stop.load(Ordering::SeqCst) == forwarded {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::SeqCst) != forwarded {
            continue;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Some((rule, metric)) = &opts.early {
                early_stops(store, sweep_id, rule, metric, &mut active, backend, report)?;
            }
            progress(&mut active, report);
        }
        let exits = match backend.poll(store, &mut active)? {
            Ok(exits) => exits,
            Err(reason) => {
                report(Event::Stopping { reason });
                break 'dispatch;
            }
        };
        let mut ended: Vec<(Active, Verdict, i32)> = Vec::new();
        let mut indices: Vec<(usize, Verdict, i32)> = exits.into_iter().map(|e| (e.index, e.verdict, e.code)).collect();
        // Remove from the back so the indices stay valid.
        indices.sort_by_key(|(i, ..)| std::cmp::Reverse(*i));
        for (i, verdict, code) in indices {
            ended.push((active.swap_remove(i), verdict, code));
        }
        for (a, verdict, code) in ended.into_iter().rev() {
            if store.stored_run(&a.run)?.attempt != a.attempt {
                continue; // another orchestrator took the run over
            }
            let quick = a.running_since.unwrap_or(a.launched).elapsed() < opts.immediate_failure
                && store.latest_checkpoint(&a.run)? == a.checkpoint_before;
            let seconds = a.running_since.unwrap_or(a.launched).elapsed().as_secs_f64();
            let (status, reason) = match verdict {
                Verdict::Finished => {
                    immediate_failures = 0;
                    (RunStatus::Finished, None)
                }
                Verdict::Interrupted if a.early_stop.is_some() => {
                    let rung = a.early_stop.unwrap_or_default();
                    let reason = format!("early termination: not among the best at report {rung} of the sweep metric");
                    store.end_attempt(&a.run, RunStatus::Stopped, code, Some(&reason))?;
                    (RunStatus::Stopped, Some(reason))
                }
                Verdict::Interrupted => {
                    if store.stored_run(&a.run)?.status == RunStatus::Running {
                        let why = format!("{} ended without recording its end (exit code {code})", a.slot);
                        store.end_attempt(&a.run, RunStatus::Interrupted, code, Some(&why))?;
                    }
                    // Interrupted by someone else (e.g. a cancelled job): resumed later, but a
                    // run that keeps being stopped at once counts as an immediate failure.
                    if !a.stop_requested && quick {
                        immediate_failures += 1;
                    }
                    (RunStatus::Interrupted, None)
                }
                Verdict::Failed(reason) => {
                    let bad_input = Kind::of_code(code) == Kind::BadInput;
                    let message =
                        format!("{reason}\nlast lines of {}:\n{}", a.log.display(), process::tail(&a.log, 20));
                    store.end_attempt(&a.run, RunStatus::Failed, code, Some(&message))?;
                    if quick {
                        immediate_failures += 1;
                    }
                    if opts.fail_fast && launching {
                        launching = false;
                        report(Event::Stopping { reason: format!("run {} failed (--fail-fast)", a.run) });
                    }
                    let retry = if bad_input {
                        "bad input: not retried (the same input fails the same way)".to_string()
                    } else if a.attempt > opts.max_retries {
                        format!("no retries left ({} attempts)", a.attempt)
                    } else {
                        format!(
                            "will be retried from its last checkpoint (attempt {} of {})",
                            a.attempt + 1,
                            opts.max_retries + 1
                        )
                    };
                    let first_line = reason.lines().next().unwrap_or_default();
                    (RunStatus::Failed, Some(format!("{first_line} ({retry})")))
                }
            };
            if immediate_failures >= opts.max_immediate_failures && launching {
                launching = false;
                report(Event::Stopping {
                    reason: format!("{immediate_failures} runs failed right after starting; see {}", a.log.display()),
                });
            }
            report(Event::Ended {
                run: a.run.clone(),
                attempt: a.attempt,
                status: status.to_string(),
                exit_code: code,
                seconds,
                reason,
                warnings: process::warnings(&a.log),
            });
        }
    }
    // Attempts still in flight here were abandoned (their jobs go on): their runs remain.
    let abandoned: Vec<String> = active.iter().map(|a| a.run.clone()).collect();
    let mut summary = summarize(store, sweep_id, opts, &abandoned, stop.load(Ordering::SeqCst) > 0)?;
    if let Some(p) = &proposer {
        summary.remaining += p.unproposed(store.sweep_runs(sweep_id)?.len());
    }
    report(Event::Done {
        finished: summary.finished,
        stopped: summary.stopped,
        failed: summary.failed,
        remaining: summary.remaining,
        elsewhere: summary.elsewhere.clone(),
    });
    Ok(summary)
}

/// Marks interrupted the runs of `sweep_id` whose training process is gone (see
/// [`Store::recover_stale`]) and reports them, for a backend's [`Backend::adopt`].
pub fn recover_stale(
    store: &mut Store,
    sweep_id: &str,
    host: &str,
    report: &mut dyn FnMut(Event),
) -> Result<(), StoreError> {
    let recovered = store.recover_stale(sweep_id, host, process::alive)?;
    if !recovered.is_empty() {
        report(Event::Recovered { runs: recovered });
    }
    Ok(())
}

/// Stops the active runs that Hyperband drops at a rung, comparing each with every other run
/// of the sweep.
fn early_stops(
    store: &Store,
    sweep_id: &str,
    rule: &Hyperband,
    metric: &str,
    active: &mut [Active],
    backend: &mut dyn Backend,
    report: &mut dyn FnMut(Event),
) -> Result<(), StoreError> {
    let all: Vec<String> = store.sweep_runs(sweep_id)?.into_iter().map(|r| r.id).collect();
    let series = |id: &str| -> Result<Vec<f64>, StoreError> {
        Ok(store.metric_series(id, metric)?.into_iter().map(|p| p.1).collect())
    };
    for a in active.iter_mut().filter(|a| a.early_stop.is_none() && !a.stop_requested) {
        let mine = series(&a.run)?;
        let others = all.iter().filter(|id| **id != a.run).map(|id| series(id)).collect::<Result<Vec<_>, _>>()?;
        if let Some(rung) = rule.stop_at(&mine, &others) {
            a.early_stop = Some(rung);
            a.stop_requested = true;
            backend.stop(a, Stop::Graceful);
            report(Event::EarlyStop { run: a.run.clone(), rung, metric: metric.to_string() });
        }
    }
    Ok(())
}

/// Reports each active run's newest progress line, with the time left at its rate so far.
fn progress(active: &mut [Active], report: &mut dyn FnMut(Event)) {
    for a in active {
        let Some((step, total, loss)) = process::last_progress(&a.log) else { continue };
        if step == a.reported_step {
            continue;
        }
        a.reported_step = step;
        let (t0, s0) = *a.first_progress.get_or_insert((Instant::now(), step));
        let eta_seconds = (step > s0).then(|| t0.elapsed().as_secs_f64() / (step - s0) as f64 * (total - step) as f64);
        report(Event::Progress { run: a.run.clone(), slot: a.slot.clone(), step, total, loss, eta_seconds });
    }
}

/// The sweep's state in the store: what finished, stopped or failed for good, what is left
/// (`abandoned` runs among it), and what other orchestrators are training.
fn summarize(
    store: &Store,
    sweep_id: &str,
    opts: &DispatchOptions,
    abandoned: &[String],
    interrupted: bool,
) -> Result<Summary, StoreError> {
    let mut s = Summary { finished: 0, stopped: 0, failed: 0, remaining: 0, elsewhere: Vec::new(), interrupted };
    for row in store.sweep_runs(sweep_id)? {
        match row.status {
            RunStatus::Finished => s.finished += 1,
            RunStatus::Stopped => s.stopped += 1,
            RunStatus::Failed if !store.retryable(&row.id, opts.max_retries)? => s.failed += 1,
            RunStatus::Running if !abandoned.contains(&row.id) => {
                let holder = store.holder(&row.id)?;
                // On this host a dead process is seen at once; elsewhere the claim expires.
                let expires_at = holder.expires_at.filter(|_| holder.host.as_deref() != Some(opts.host.as_str()));
                s.elsewhere.push(Claimed { run: row.id, pid: holder.pid, host: holder.host, expires_at });
            }
            _ => s.remaining += 1,
        }
    }
    Ok(s)
}
