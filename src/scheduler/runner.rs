//! Running a sweep's runs as child processes on slots until every run is done.
//!
//! Each run is `dbsweep train --run ID --claimed` in its own process group, with
//! `CUDA_VISIBLE_DEVICES` and `RAYON_NUM_THREADS` set from its slot and its output in
//! `runs/ID/attempt-N.log`. Claiming goes through the lineage store, so several orchestrators
//! can share a sweep. A freed slot gets the next run at once. On the first stop request the
//! scheduler stops launching and asks every child to checkpoint and exit (SIGINT); on the
//! second it kills them. Children watch their parent, so killing the scheduler with -9 also
//! makes them checkpoint and exit; the next `dbsweep run`/`resume` marks runs whose process is
//! gone as interrupted and continues them from their checkpoints.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::events::Event;
use super::slots::Slot;
use crate::store::{RunStatus, Store, StoreError};
use crate::sweep::Hyperband;

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The dbsweep executable children run.
    pub exe: PathBuf,
    /// Output root.
    pub root: PathBuf,
    /// This machine's host name.
    pub host: String,
    /// Retries of a failed run (each resumes from its checkpoint).
    pub max_retries: u32,
    /// Stop launching at the first failure.
    pub fail_fast: bool,
    /// Failures within this many seconds of starting, with no new checkpoint, are immediate.
    pub immediate_failure: Duration,
    /// This many immediate failures in a row stop the sweep.
    pub max_immediate_failures: usize,
    /// Early termination and the metric it ranks runs by.
    pub early: Option<(Hyperband, String)>,
}

/// Stop requests: the number of signals received so far (Ctrl-C, SIGTERM).
pub type StopCount = Arc<AtomicUsize>;

/// How running a sweep ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Runs finished.
    pub finished: usize,
    /// Runs stopped early.
    pub stopped: usize,
    /// Runs failed for good.
    pub failed: usize,
    /// Runs not finished (interrupted or pending).
    pub remaining: usize,
    /// Whether a stop request ended it.
    pub interrupted: bool,
}

struct Active {
    slot: usize,
    /// First progress seen (time, step) and the last step reported.
    first_progress: Option<(Instant, u64)>,
    reported_step: u64,
    child: Child,
    run: String,
    attempt: u32,
    started: Instant,
    log: PathBuf,
    checkpoint_before: Option<i64>,
    /// The rung at which early termination stopped it.
    early_stop: Option<usize>,
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: children are started as leaders of their own process group (pgid = pid), so this
    // signals exactly that child and what it started.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The last progress line of a run's log: (step, total, loss).
fn last_progress(log: &Path) -> Option<(u64, u64, f64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let line = text.lines().rev().find_map(|l| l.strip_prefix(super::events::PROGRESS_PREFIX))?;
    let mut parts = line.split_whitespace();
    let (step, total) = parts.next()?.split_once('/')?;
    let loss = parts.nth(1)?.parse().ok()?;
    Some((step.parse().ok()?, total.parse().ok()?, loss))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(opts: &RunOptions, slot: &Slot, run: &str, attempt: u32) -> std::io::Result<(Child, PathBuf)> {
    use std::os::unix::process::CommandExt;
    let dir = opts.root.join("runs").join(run);
    std::fs::create_dir_all(&dir)?;
    let log = dir.join(format!("attempt-{attempt}.log"));
    let out = File::create(&log)?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("--root").arg(&opts.root).args(["train", "--run", run, "--claimed"]);
    cmd.env("RAYON_NUM_THREADS", slot.threads.to_string());
    if slot.gpus.is_empty() {
        // Empty: no GPU at all (unset would let a `cuda` build take every GPU).
        cmd.env("CUDA_VISIBLE_DEVICES", "");
    } else {
        let gpus: Vec<String> = slot.gpus.iter().map(u32::to_string).collect();
        cmd.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
    }
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).process_group(0);
    Ok((cmd.spawn()?, log))
}

/// Runs every claimable run of `sweep_id` on `slots` until none is left, reporting events.
pub fn run(
    store: &mut Store,
    sweep_id: &str,
    slots: &[Slot],
    opts: &RunOptions,
    stop: &StopCount,
    report: &mut dyn FnMut(Event),
) -> Result<Summary, StoreError> {
    let recovered = store.recover_stale(sweep_id, &opts.host, alive)?;
    if !recovered.is_empty() {
        report(Event::Recovered { runs: recovered });
    }
    let mut active: Vec<Active> = Vec::new();
    let mut launching = true;
    let mut forwarded = 0;
    let mut immediate_failures = 0;
    let mut failed_for_good = 0;
    let mut last_report = Instant::now();
    loop {
        let stops = stop.load(Ordering::SeqCst);
        if stops > forwarded {
            let signal = if stops >= 2 { libc::SIGKILL } else { libc::SIGINT };
            if launching {
                report(Event::Stopping { reason: "interrupted; asking running runs to checkpoint and exit".into() });
            }
            launching = false;
            for a in &active {
                signal_group(a.child.id(), signal);
            }
            forwarded = stops;
        }
        while launching && active.len() < slots.len() {
            let Some(claim) = store.claim(sweep_id, opts.max_retries, &opts.host, std::process::id())? else { break };
            let checkpoint_before = store.latest_checkpoint(&claim.run_id)?;
            let slot = (0..slots.len()).find(|i| active.iter().all(|a| a.slot != *i)).expect("a free slot");
            match spawn(opts, &slots[slot], &claim.run_id, claim.attempt) {
                Ok((child, log)) => {
                    report(Event::Started {
                        run: claim.run_id.clone(),
                        attempt: claim.attempt,
                        slot: slots[slot].to_string(),
                        pid: child.id(),
                    });
                    active.push(Active {
                        slot,
                        first_progress: None,
                        reported_step: 0,
                        child,
                        run: claim.run_id,
                        attempt: claim.attempt,
                        started: Instant::now(),
                        log,
                        checkpoint_before,
                        early_stop: None,
                    });
                }
                Err(e) => {
                    store.end_attempt(
                        &claim.run_id,
                        RunStatus::Failed,
                        1,
                        Some(&format!("cannot start the training process: {e}")),
                    )?;
                    launching = false;
                    report(Event::Stopping { reason: format!("cannot start training processes: {e}") });
                }
            }
        }
        if active.is_empty() {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Some((rule, metric)) = &opts.early {
                let all: Vec<String> = store.sweep_runs(sweep_id)?.into_iter().map(|r| r.id).collect();
                let series = |id: &str| -> Result<Vec<f64>, StoreError> {
                    Ok(store.metric_series(id, metric)?.into_iter().map(|p| p.1).collect())
                };
                for a in active.iter_mut().filter(|a| a.early_stop.is_none()) {
                    let mine = series(&a.run)?;
                    let others =
                        all.iter().filter(|id| **id != a.run).map(|id| series(id)).collect::<Result<Vec<_>, _>>()?;
                    if let Some(rung) = rule.stop_at(&mine, &others) {
                        a.early_stop = Some(rung);
                        signal_group(a.child.id(), libc::SIGINT);
                        report(Event::EarlyStop { run: a.run.clone(), rung, metric: metric.clone() });
                    }
                }
            }
            for a in &mut active {
                let Some((step, total, loss)) = last_progress(&a.log) else { continue };
                if step == a.reported_step {
                    continue;
                }
                a.reported_step = step;
                let (t0, s0) = *a.first_progress.get_or_insert((Instant::now(), step));
                let eta_seconds =
                    (step > s0).then(|| t0.elapsed().as_secs_f64() / (step - s0) as f64 * (total - step) as f64);
                report(Event::Progress {
                    run: a.run.clone(),
                    slot: slots[a.slot].to_string(),
                    step,
                    total,
                    loss,
                    eta_seconds,
                });
            }
        }
        let mut i = 0;
        while i < active.len() {
            let Some(status) = active[i].child.try_wait().ok().flatten() else {
                i += 1;
                continue;
            };
            let a = active.swap_remove(i);
            let code = status
                .code()
                .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
            let seconds = a.started.elapsed().as_secs_f64();
            let status_name = match (code, a.early_stop) {
                (0, _) => "finished",
                (130, Some(rung)) => {
                    let reason = format!("early termination: not among the best at report {rung} of the sweep metric");
                    store.end_attempt(&a.run, RunStatus::Stopped, code, Some(&reason))?;
                    "stopped"
                }
                (130, None) => "interrupted",
                (_, _) => {
                    let reason = store.run(&a.run)?.error.unwrap_or_else(|| format!("exit code {code}"));
                    let message = format!("{reason}\nlast lines of {}:\n{}", a.log.display(), tail(&a.log, 20));
                    store.end_attempt(&a.run, RunStatus::Failed, code, Some(&message))?;
                    if a.attempt > opts.max_retries {
                        failed_for_good += 1;
                    }
                    // Immediate: it died quickly without getting anywhere (no new checkpoint).
                    let progressed = store.latest_checkpoint(&a.run)? != a.checkpoint_before;
                    if a.started.elapsed() < opts.immediate_failure && !progressed {
                        immediate_failures += 1;
                    }
                    if opts.fail_fast && launching {
                        launching = false;
                        report(Event::Stopping { reason: format!("run {} failed (--fail-fast)", a.run) });
                    } else if immediate_failures >= opts.max_immediate_failures && launching {
                        launching = false;
                        report(Event::Stopping {
                            reason: format!(
                                "{immediate_failures} runs failed right after starting; see {}",
                                a.log.display()
                            ),
                        });
                    }
                    "failed"
                }
            };
            if code == 0 {
                immediate_failures = 0;
            }
            report(Event::Ended {
                run: a.run,
                attempt: a.attempt,
                status: status_name.into(),
                exit_code: code,
                seconds,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rows = store.sweep_runs(sweep_id)?;
    let finished = rows.iter().filter(|r| r.status == RunStatus::Finished).count();
    let stopped = rows.iter().filter(|r| r.status == RunStatus::Stopped).count();
    let summary = Summary {
        finished,
        stopped,
        failed: failed_for_good,
        remaining: rows.len() - finished - stopped - failed_for_good,
        interrupted: stop.load(Ordering::SeqCst) > 0,
    };
    report(Event::Done { finished: summary.finished, stopped, failed: summary.failed, remaining: summary.remaining });
    Ok(summary)
}
