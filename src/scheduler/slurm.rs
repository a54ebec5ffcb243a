//! Running a sweep's runs as Slurm batch jobs until every run is done.
//!
//! Each claimed run becomes one job: `sbatch --gres=gpu:N ... --wrap "dbsweep --root ROOT train
//! --run ID --claimed"`, with its output in `ROOT/runs/ID/slurm-JOBID.log` (ROOT must be on a
//! filesystem the compute nodes share). Slurm picks the node and the GPUs (it sets
//! `CUDA_VISIBLE_DEVICES`); the trainer records its own metrics, checkpoints and end status in
//! the lineage store, exactly as under the local backend. The scheduler follows its jobs with
//! `squeue` (and `sacct`, or `sacct -c` where there is no slurmdbd, for jobs that left the
//! queue), maps each job's final state to the run's outcome, retries failed runs through the
//! store's claim (each retry resumes from the run's checkpoint), and on the first stop request
//! asks running jobs to checkpoint and exit (`scancel --signal=INT --full`; pending ones are
//! cancelled); on the second it cancels them (`scancel`: SIGTERM, then SIGKILL).
//!
//! Jobs do not depend on the scheduler's process: if it dies, its jobs go on and record their
//! ends themselves; the next `dbsweep run`/`resume` on the same host follows the jobs that an
//! orchestrator which is gone left behind (each job's `--comment` names its orchestrator), and
//! marks runs with neither a job nor a live process interrupted, to resume them.
//!
//! Jobs are submitted held (`--hold`), recorded (`slurm job N, gres G` in the run's `device`
//! column), then released, so the record never races the trainer's own. The trainer replaces
//! it with the device it sees (`cpu (CUDA_VISIBLE_DEVICES=k)`); when the job ends, the job id is
//! appended again: `cpu (CUDA_VISIBLE_DEVICES=1), slurm job 42`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::events::Event;
use super::runner::{RunOptions, StopCount, Summary};
use crate::store::{RunStatus, Store, StoreError};

/// Settings of the Slurm backend.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// What the local backend uses too: executable, root, host, retries, failure policy.
    pub run: RunOptions,
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
    pub fn new(run: RunOptions) -> SlurmOptions {
        SlurmOptions {
            run,
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

/// A Slurm exit code: the process's exit status and the signal that killed it (0 if none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ExitCode {
    code: i32,
    signal: i32,
}

impl ExitCode {
    /// `N:S` (sacct, scontrol) or a raw wait status (squeue's `exit_code` field).
    fn parse(text: &str) -> Option<ExitCode> {
        let text = text.trim();
        if let Some((code, signal)) = text.split_once(':') {
            return Some(ExitCode { code: code.trim().parse().ok()?, signal: signal.trim().parse().ok()? });
        }
        let raw: i64 = text.parse().ok()?;
        Some(ExitCode { code: ((raw >> 8) & 0xff) as i32, signal: (raw & 0x7f) as i32 })
    }

    /// As a process exit code: 128 + signal when killed.
    fn value(self) -> i32 {
        if self.signal != 0 { 128 + self.signal } else { self.code }
    }

    fn describe(self) -> String {
        if self.signal != 0 { format!("killed by signal {}", self.signal) } else { format!("exit code {}", self.code) }
    }
}

/// One job as `squeue` lists it.
#[derive(Clone, Debug, PartialEq)]
struct JobInfo {
    id: String,
    state: String,
    reason: String,
    exit: ExitCode,
    name: String,
    comment: String,
    stdout: String,
}

/// `squeue --Format` fields, `|`-separated; the output path last (it may hold `|`).
const SQUEUE_FORMAT: &str = "JobID:|,State:|,Reason:|,exit_code:|,Name:|,Comment:|,STDOUT:";

/// Parses `squeue -h -O SQUEUE_FORMAT` output; lines that do not fit are skipped.
fn parse_squeue(text: &str) -> Vec<JobInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(7, '|').collect();
            let [id, state, reason, exit, name, comment, stdout] = f[..] else { return None };
            let id = id.trim();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(JobInfo {
                id: id.to_string(),
                state: base_state(state).to_string(),
                reason: reason.trim().to_string(),
                exit: ExitCode::parse(exit).unwrap_or_default(),
                name: name.trim().to_string(),
                comment: comment.trim().to_string(),
                stdout: stdout.trim_end().to_string(),
            })
        })
        .collect()
}

/// The state word alone: `CANCELLED by 0` and `CANCELLED+` are `CANCELLED`.
fn base_state(state: &str) -> &str {
    let state = state.trim();
    let end = state.find(|c: char| !(c.is_ascii_alphabetic() || c == '_')).unwrap_or(state.len());
    &state[..end]
}

/// States a job does not leave.
fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "PREEMPTED"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "OUT_OF_MEMORY"
            | "REVOKED"
    )
}

/// How a run's attempt ended, from its job's final state and what the trainer recorded.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Finished,
    Interrupted,
    Failed(String),
}

/// Maps a job's final `state` and `exit` to the run's outcome. `recorded` is the run's status
/// after the job (the trainer writes finished, interrupted or failed itself unless it was
/// killed), `stop_requested` whether this scheduler asked the job to stop.
fn verdict(
    job: &str,
    state: &str,
    exit: ExitCode,
    recorded: RunStatus,
    recorded_error: Option<&str>,
    stop_requested: bool,
) -> Verdict {
    if recorded == RunStatus::Finished {
        return Verdict::Finished;
    }
    let trainer_error =
        (recorded == RunStatus::Failed).then(|| recorded_error.unwrap_or("the trainer recorded a failure").to_string());
    let slurm = |what: &str| format!("Slurm job {job} {what}");
    match state {
        "COMPLETED" => match (recorded, trainer_error) {
            (RunStatus::Interrupted, _) => Verdict::Interrupted,
            (_, Some(e)) => Verdict::Failed(e),
            _ => Verdict::Failed(slurm("completed, but the run recorded no end")),
        },
        _ if stop_requested && trainer_error.is_none() => Verdict::Interrupted,
        "CANCELLED" | "PREEMPTED" | "REVOKED" => match trainer_error {
            Some(e) => Verdict::Failed(e),
            None => Verdict::Interrupted,
        },
        "FAILED" if exit.code == 130 && recorded == RunStatus::Interrupted => Verdict::Interrupted,
        "FAILED" => Verdict::Failed(match trainer_error {
            Some(e) => format!("{e} ({})", slurm(&format!("FAILED, {}", exit.describe()))),
            None => slurm(&format!("FAILED, {}", exit.describe())),
        }),
        "TIMEOUT" => Verdict::Failed(slurm("reached its time limit (TIMEOUT)")),
        "OUT_OF_MEMORY" => Verdict::Failed(slurm("ran out of memory (OUT_OF_MEMORY)")),
        "NODE_FAIL" => Verdict::Failed(slurm("ended because its node failed (NODE_FAIL)")),
        "BOOT_FAIL" => Verdict::Failed(slurm("could not boot its node (BOOT_FAIL)")),
        "DEADLINE" => Verdict::Failed(slurm("passed its deadline (DEADLINE)")),
        "VANISHED" => Verdict::Failed(slurm("left the queue with no record of how it ended")),
        other => Verdict::Failed(slurm(&format!("ended {other}, {}", exit.describe()))),
    }
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The batch script `sbatch --wrap` runs: the trainer replaces the shell, so signals from
/// `scancel` reach it and its parent is slurmstepd; its threads follow the job's CPUs.
fn wrap_script(exe: &Path, root: &Path, run: &str) -> String {
    format!(
        "export RAYON_NUM_THREADS=\"${{SLURM_CPUS_ON_NODE:-1}}\"; exec {} --root {} train --run {} --claimed",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&root.to_string_lossy()),
        shell_quote(run)
    )
}

fn job_name(run: &str) -> String {
    format!("dbsweep-{run}")
}

/// `--output` for a run's jobs (`%` escaped, `%j` the job id).
fn output_pattern(root: &Path, run: &str) -> String {
    format!("{}/slurm-%j.log", root.join("runs").join(run).to_string_lossy().replace('%', "%%"))
}

fn job_log(root: &Path, run: &str, job: &str) -> PathBuf {
    root.join("runs").join(run).join(format!("slurm-{job}.log"))
}

/// The orchestrator a job names in its comment: `dbsweep orchestrator HOST pid PID attempt N`.
fn comment(host: &str, attempt: u32) -> String {
    format!("dbsweep orchestrator {host} pid {} attempt {attempt}", std::process::id())
}

fn parse_comment(text: &str) -> Option<(String, u32, u32)> {
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["dbsweep", "orchestrator", host, "pid", pid, "attempt", attempt] => {
            Some((host.to_string(), pid.parse().ok()?, attempt.parse().ok()?))
        }
        _ => None,
    }
}

/// The `sbatch` arguments for a run's attempt.
fn sbatch_args(opts: &SlurmOptions, run: &str, attempt: u32) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        "--hold".into(),
        format!("--job-name={}", job_name(run)),
        format!("--comment={}", comment(&opts.run.host, attempt)),
        format!("--chdir={}", opts.run.root.display()),
        // dbsweep retries through the store; a job Slurm requeued itself would run unseen.
        "--no-requeue".into(),
    ];
    if let Some(gres) = &opts.gres {
        args.push(format!("--gres={gres}"));
    }
    if let Some(partition) = &opts.partition {
        args.push(format!("--partition={partition}"));
    }
    if let Some(time) = &opts.time {
        args.push(format!("--time={time}"));
    }
    args.extend(opts.extra_args.iter().cloned());
    args.push(format!("--output={}", output_pattern(&opts.run.root, run)));
    args.push(format!("--wrap={}", wrap_script(&opts.run.exe, &opts.run.root, run)));
    args
}

/// Runs a Slurm command with a time limit; its stdout, or a message naming what went wrong.
fn slurm(opts: &SlurmOptions, program: &str, args: &[String]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(conf) = &opts.slurm_conf {
        cmd.env("SLURM_CONF", conf);
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` not found: install Slurm's client commands (Debian: slurm-client) or put them on PATH")
        } else {
            format!("cannot run `{program}`: {e}")
        }
    })?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + opts.command_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{program}` did not answer within {} s", opts.command_timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for `{program}`: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    let detail = err.trim();
    let detail = if detail.is_empty() { out.trim() } else { detail };
    Err(format!("`{program}` failed ({status}): {}", if detail.is_empty() { "no message" } else { detail }))
}

fn ids(jobs: &[&str]) -> String {
    jobs.join(",")
}

/// Our jobs (every state Slurm still remembers), or only `jobs` when given.
fn squeue(opts: &SlurmOptions, jobs: Option<&[&str]>) -> Result<Vec<JobInfo>, String> {
    let mut args: Vec<String> = vec!["--noheader".into(), "--states=all".into(), format!("--Format={SQUEUE_FORMAT}")];
    match jobs {
        Some([]) => return Ok(Vec::new()),
        Some(list) => args.push(format!("--jobs={}", ids(list))),
        None => args.push("--me".into()),
    }
    match slurm(opts, "squeue", &args) {
        Ok(text) => Ok(parse_squeue(&text)),
        // Every job asked for has left the controller's memory.
        Err(e) if e.contains("Invalid job id") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A job's final state from accounting (`sacct`, or `sacct -c`, the job completion file, where
/// there is no slurmdbd), for a job that left the queue before it was seen ending.
fn sacct(opts: &SlurmOptions, job: &str) -> Option<(String, ExitCode)> {
    for completion_file in [false, true] {
        let mut args: Vec<String> = Vec::new();
        if completion_file {
            args.push("-c".into());
        }
        args.extend(["-X", "-n", "-P", "-j", job, "-o", "JobID,State,ExitCode"].map(String::from));
        let Ok(text) = slurm(opts, "sacct", &args) else { continue };
        let found = text.lines().rev().find_map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            match f[..] {
                [id, state, exit, ..] if id.trim() == job => {
                    Some((base_state(state).to_string(), ExitCode::parse(exit).unwrap_or_default()))
                }
                _ => None,
            }
        });
        if found.as_ref().is_some_and(|(state, _)| is_final(state)) {
            return found;
        }
    }
    None
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A job this scheduler follows.
struct Job {
    id: String,
    run: String,
    attempt: u32,
    submitted: Instant,
    /// When it was first seen running.
    started: Option<Instant>,
    checkpoint_before: Option<i64>,
    stop_requested: bool,
    /// Polls in a row that did not list it.
    missing: u32,
}

/// Submits run `run`'s attempt held, records the job, releases it; returns the job id.
fn submit(store: &mut Store, opts: &SlurmOptions, run: &str, attempt: u32) -> Result<String, SubmitError> {
    let dir = opts.run.root.join("runs").join(run);
    std::fs::create_dir_all(&dir).map_err(|e| SubmitError::Slurm(format!("cannot create {}: {e}", dir.display())))?;
    let out = slurm(opts, "sbatch", &sbatch_args(opts, run, attempt)).map_err(SubmitError::Slurm)?;
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or_default().trim().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SubmitError::Slurm(format!("`sbatch --parsable` printed `{}`, not a job id", out.trim())));
    }
    let recorded = store.set_process(run, std::process::id(), &format!("slurm job {id}, gres {}", opts.gres_text()));
    if let Err(e) = recorded {
        let _ = slurm(opts, "scancel", std::slice::from_ref(&id));
        return Err(SubmitError::Store(e));
    }
    if let Err(e) = slurm(opts, "scontrol", &["release".into(), id.clone()]) {
        let _ = slurm(opts, "scancel", std::slice::from_ref(&id));
        return Err(SubmitError::Slurm(format!("cannot release job {id}: {e}")));
    }
    Ok(id)
}

enum SubmitError {
    Slurm(String),
    Store(StoreError),
}

/// Follows the jobs that an orchestrator which is gone left behind for `sweep_id`'s running
/// runs. Returns them, and whether some running run has a job whose orchestrator still lives.
fn adopt(
    store: &mut Store,
    sweep_id: &str,
    opts: &SlurmOptions,
    queue: &[JobInfo],
) -> Result<(Vec<Job>, bool), StoreError> {
    let mut adopted = Vec::new();
    let mut owned_elsewhere = false;
    for row in store.sweep_runs(sweep_id)?.into_iter().filter(|r| r.status == RunStatus::Running) {
        let pattern = output_pattern(&opts.run.root, &row.id);
        let newest = queue
            .iter()
            .filter(|j| j.name == job_name(&row.id) && j.stdout == pattern)
            .max_by_key(|j| j.id.parse::<u64>().unwrap_or(0));
        let Some(job) = newest else { continue };
        let Some((host, pid, attempt)) = parse_comment(&job.comment) else { continue };
        if attempt != row.attempt {
            continue;
        }
        if host != opts.run.host || process_alive(pid) {
            owned_elsewhere |= !is_final(&job.state);
            continue;
        }
        let update = [format!("JobId={}", job.id), format!("Comment={}", comment(&opts.run.host, attempt))];
        let _ = slurm(opts, "scontrol", &[&["update".to_string()][..], &update].concat());
        // Our pid marks the run as followed; keep the device the trainer recorded, if it started.
        let device = match store.run(&row.id)?.device {
            Some(d) if !d.is_empty() && !d.contains("slurm job") => format!("{d}, slurm job {}", job.id),
            _ => format!("slurm job {}, gres {}", job.id, opts.gres_text()),
        };
        store.set_process(&row.id, std::process::id(), &device)?;
        if job.state == "PENDING" && job.reason.contains("JobHeld") {
            let _ = slurm(opts, "scontrol", &["release".into(), job.id.clone()]);
        }
        adopted.push(Job {
            id: job.id.clone(),
            run: row.id.clone(),
            attempt,
            submitted: Instant::now(),
            started: (job.state != "PENDING").then(Instant::now),
            checkpoint_before: store.latest_checkpoint(&row.id)?,
            stop_requested: false,
            missing: 0,
        });
    }
    Ok((adopted, owned_elsewhere))
}

/// Runs every claimable run of `sweep_id` as Slurm jobs until none is left, reporting events
/// (the contract of [`super::runner::run`]; `started` events name the job in `slot` and carry
/// the Slurm job id in `pid`).
pub fn run(
    store: &mut Store,
    sweep_id: &str,
    opts: &SlurmOptions,
    stop: &StopCount,
    report: &mut dyn FnMut(Event),
) -> Result<Summary, StoreError> {
    let summary = |store: &Store, failed: usize| -> Result<Summary, StoreError> {
        let rows = store.sweep_runs(sweep_id)?;
        let finished = rows.iter().filter(|r| r.status == RunStatus::Finished).count();
        let stopped = rows.iter().filter(|r| r.status == RunStatus::Stopped).count();
        Ok(Summary {
            finished,
            stopped,
            failed,
            remaining: rows.len() - finished - stopped - failed,
            interrupted: stop.load(Ordering::SeqCst) > 0,
        })
    };
    let done = |report: &mut dyn FnMut(Event), s: Summary| {
        report(Event::Done { finished: s.finished, stopped: s.stopped, failed: s.failed, remaining: s.remaining });
        Ok(s)
    };

    let queue = match squeue(opts, None) {
        Ok(queue) => queue,
        Err(e) => {
            report(Event::Stopping { reason: format!("cannot reach Slurm: {e}") });
            return done(report, summary(store, 0)?);
        }
    };
    let (mut active, owned_elsewhere) = adopt(store, sweep_id, opts, &queue)?;
    for job in &active {
        report(Event::Started {
            run: job.run.clone(),
            attempt: job.attempt,
            slot: format!("slurm job {} (submitted earlier), gres {}", job.id, opts.gres_text()),
            pid: job.id.parse().unwrap_or(0),
        });
    }
    // Runs whose job another live orchestrator follows keep their trainer's pid, which may live
    // on another node: recovering by pid would be wrong for them, so wait for a later resume.
    if !owned_elsewhere {
        let recovered = store.recover_stale(sweep_id, &opts.run.host, process_alive)?;
        if !recovered.is_empty() {
            report(Event::Recovered { runs: recovered });
        }
    }

    let max_in_flight = opts.max_parallel.unwrap_or(usize::MAX).max(1);
    let mut launching = true;
    let mut forwarded = 0;
    let mut immediate_failures = 0;
    let mut failed_for_good = 0;
    let mut unreachable_since: Option<Instant> = None;
    let mut next_poll = Instant::now();
    loop {
        let stops = stop.load(Ordering::SeqCst);
        if stops > forwarded {
            if launching {
                report(Event::Stopping { reason: "interrupted; asking running jobs to checkpoint and exit".into() });
            }
            launching = false;
            forwarded = stops;
            if stops >= 3 {
                report(Event::Stopping {
                    reason: "third stop request: no longer following the jobs (`dbsweep resume` follows them again)"
                        .into(),
                });
                break;
            }
            for job in active.iter_mut().filter(|j| stops >= 2 || !j.stop_requested) {
                job.stop_requested = true;
                let one = std::slice::from_ref(&job.id);
                let asked = stops == 1
                    && job.started.is_some()
                    && slurm(opts, "scancel", &[&["--signal=INT".to_string(), "--full".into()][..], one].concat())
                        .is_ok();
                if !asked {
                    // Pending (nothing to checkpoint yet), or the second request: cancel.
                    let _ = slurm(opts, "scancel", one);
                }
            }
        }
        while launching && active.len() < max_in_flight && stop.load(Ordering::SeqCst) == forwarded {
            let Some(claim) = store.claim(sweep_id, opts.run.max_retries, &opts.run.host, std::process::id())? else {
                break;
            };
            let checkpoint_before = store.latest_checkpoint(&claim.run_id)?;
            match submit(store, opts, &claim.run_id, claim.attempt) {
                Ok(id) => {
                    report(Event::Started {
                        run: claim.run_id.clone(),
                        attempt: claim.attempt,
                        slot: format!("slurm job {id}, gres {}", opts.gres_text()),
                        pid: id.parse().unwrap_or(0),
                    });
                    active.push(Job {
                        id,
                        run: claim.run_id,
                        attempt: claim.attempt,
                        submitted: Instant::now(),
                        started: None,
                        checkpoint_before,
                        stop_requested: false,
                        missing: 0,
                    });
                }
                Err(SubmitError::Store(e)) => return Err(e),
                Err(SubmitError::Slurm(e)) => {
                    store.end_attempt(
                        &claim.run_id,
                        RunStatus::Failed,
                        1,
                        Some(&format!("cannot submit the Slurm job: {e}")),
                    )?;
                    launching = false;
                    report(Event::Stopping { reason: format!("cannot submit Slurm jobs: {e}") });
                }
            }
        }
        if active.is_empty() {
            break;
        }

        // Wait for the next poll, staying responsive to stop requests.
        while Instant::now() < next_poll && stop.load(Ordering::SeqCst) == forwarded {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::SeqCst) != forwarded {
            continue;
        }
        next_poll = Instant::now() + opts.poll;
        let listed: Vec<&str> = active.iter().map(|j| j.id.as_str()).collect();
        let queue = match squeue(opts, Some(&listed)) {
            Ok(queue) => {
                unreachable_since = None;
                queue
            }
            Err(e) => {
                let since = unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= opts.unreachable_limit {
                    report(Event::Stopping {
                        reason: format!(
                            "Slurm has not answered for {} s ({e}); its jobs go on, `dbsweep resume` follows them",
                            opts.unreachable_limit.as_secs()
                        ),
                    });
                    break;
                }
                continue;
            }
        };
        let by_id: HashMap<&str, &JobInfo> = queue.iter().map(|j| (j.id.as_str(), j)).collect();
        let mut ended: Vec<(usize, String, ExitCode)> = Vec::new();
        for (i, job) in active.iter_mut().enumerate() {
            match by_id.get(job.id.as_str()) {
                Some(info) => {
                    job.missing = 0;
                    if info.state != "PENDING" && job.started.is_none() {
                        job.started = Some(Instant::now());
                    }
                    if is_final(&info.state) {
                        ended.push((i, info.state.clone(), info.exit));
                    }
                }
                None => {
                    job.missing += 1;
                    if job.missing >= 3 {
                        let (state, exit) =
                            sacct(opts, &job.id).unwrap_or_else(|| ("VANISHED".into(), ExitCode::default()));
                        ended.push((i, state, exit));
                    }
                }
            }
        }
        // Remove from the back so the indices stay valid.
        ended.sort_by_key(|(i, ..)| std::cmp::Reverse(*i));
        for (i, state, exit) in ended {
            let job = active.swap_remove(i);
            let record = store.run(&job.run)?;
            if record.attempt != job.attempt {
                continue; // another orchestrator took the run over
            }
            let seconds = job.started.unwrap_or(job.submitted).elapsed().as_secs_f64();
            // The trainer replaced the job id in `device` with what it ran on: add it back.
            let device = record.device.clone().unwrap_or_default();
            if !device.contains("slurm job") {
                let device = if device.is_empty() {
                    format!("slurm job {}", job.id)
                } else {
                    format!("{device}, slurm job {}", job.id)
                };
                store.set_process(&job.run, std::process::id(), &device)?;
            }
            let log = job_log(&opts.run.root, &job.run, &job.id);
            let v = verdict(&job.id, &state, exit, record.status, record.error.as_deref(), job.stop_requested);
            let code = match &v {
                Verdict::Finished => 0,
                Verdict::Interrupted if exit.value() == 0 => crate::exit::INTERRUPTED,
                _ if exit.value() == 0 => 1,
                _ => exit.value(),
            };
            let quick = job.started.unwrap_or(job.submitted).elapsed() < opts.run.immediate_failure
                && store.latest_checkpoint(&job.run)? == job.checkpoint_before;
            let status = match v {
                Verdict::Finished => {
                    immediate_failures = 0;
                    "finished"
                }
                Verdict::Interrupted => {
                    if record.status == RunStatus::Running {
                        let why = format!("Slurm job {} ended {state}", job.id);
                        store.end_attempt(&job.run, RunStatus::Interrupted, code, Some(&why))?;
                    }
                    // Interrupted by someone else (e.g. cancelled): resubmitted, but a run that
                    // keeps being cancelled at once counts as an immediate failure.
                    if !job.stop_requested && quick {
                        immediate_failures += 1;
                    }
                    "interrupted"
                }
                Verdict::Failed(reason) => {
                    let message = format!("{reason}\nlast lines of {}:\n{}", log.display(), tail(&log, 20));
                    store.end_attempt(&job.run, RunStatus::Failed, code, Some(&message))?;
                    if job.attempt > opts.run.max_retries {
                        failed_for_good += 1;
                    }
                    if quick {
                        immediate_failures += 1;
                    }
                    if opts.run.fail_fast && launching {
                        launching = false;
                        report(Event::Stopping { reason: format!("run {} failed (--fail-fast)", job.run) });
                    }
                    "failed"
                }
            };
            if immediate_failures >= opts.run.max_immediate_failures && launching {
                launching = false;
                report(Event::Stopping {
                    reason: format!(
                        "{immediate_failures} runs failed or were cancelled right after starting; see {}",
                        log.display()
                    ),
                });
            }
            report(Event::Ended {
                run: job.run,
                attempt: job.attempt,
                status: status.into(),
                exit_code: code,
                seconds,
            });
        }
    }
    done(report, summary(store, failed_for_good)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_parse_in_both_forms() {
        assert_eq!(ExitCode::parse("0:0"), Some(ExitCode { code: 0, signal: 0 }));
        assert_eq!(ExitCode::parse("3:0"), Some(ExitCode { code: 3, signal: 0 }));
        assert_eq!(ExitCode::parse("0:6").map(ExitCode::value), Some(134));
        assert_eq!(ExitCode::parse("33280").map(ExitCode::value), Some(130), "raw wait status of exit 130");
        assert_eq!(ExitCode::parse("6").map(ExitCode::value), Some(134), "raw wait status of SIGABRT");
        assert_eq!(ExitCode::parse("n/a"), None);
    }

    #[test]
    fn squeue_lines_parse_and_odd_lines_are_skipped() {
        let text = "12|RUNNING|None|0|dbsweep-a-b-1|dbsweep orchestrator h pid 7 attempt 2|/r/runs/x/slurm-%j.log\n\
                    garbage\n13|CANCELLED+|None|33280|wrap|(null)|/tmp/a|b.log\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].state, "RUNNING");
        assert_eq!(parse_comment(&jobs[0].comment), Some(("h".into(), 7, 2)));
        assert_eq!(jobs[1].state, "CANCELLED");
        assert_eq!(jobs[1].stdout, "/tmp/a|b.log");
        assert_eq!(parse_comment("(null)"), None);
        assert_eq!(base_state("CANCELLED by 0"), "CANCELLED");
    }

    #[test]
    fn states_map_to_outcomes() {
        let ok = ExitCode::default();
        let code = |c| ExitCode { code: c, signal: 0 };
        let abort = ExitCode { code: 0, signal: 6 };
        use RunStatus::{Failed, Finished, Interrupted, Running};
        assert_eq!(verdict("1", "COMPLETED", ok, Finished, None, false), Verdict::Finished);
        assert_eq!(verdict("1", "COMPLETED", ok, Interrupted, None, false), Verdict::Interrupted);
        assert!(matches!(verdict("1", "COMPLETED", ok, Running, None, false), Verdict::Failed(_)));
        assert_eq!(verdict("1", "CANCELLED", code(130), Interrupted, None, false), Verdict::Interrupted);
        assert_eq!(verdict("1", "CANCELLED", ok, Running, None, false), Verdict::Interrupted);
        assert_eq!(verdict("1", "FAILED", code(130), Interrupted, None, true), Verdict::Interrupted);
        assert_eq!(verdict("1", "FAILED", abort, Running, None, true), Verdict::Interrupted, "stopped by us");
        let Verdict::Failed(why) = verdict("9", "FAILED", abort, Running, None, false) else { panic!() };
        assert!(why.contains("job 9") && why.contains("signal 6"), "{why}");
        let Verdict::Failed(why) = verdict("9", "FAILED", code(3), Failed, Some("bad data"), false) else { panic!() };
        assert!(why.starts_with("bad data") && why.contains("exit code 3"), "{why}");
        for (state, word) in [("TIMEOUT", "time limit"), ("OUT_OF_MEMORY", "memory"), ("NODE_FAIL", "node failed")] {
            let Verdict::Failed(why) = verdict("9", state, ok, Interrupted, None, false) else { panic!("{state}") };
            assert!(why.contains(word), "{why}");
        }
        assert_eq!(verdict("9", "TIMEOUT", ok, Finished, None, false), Verdict::Finished);
        assert_eq!(verdict("9", "PREEMPTED", ok, Interrupted, None, false), Verdict::Interrupted);
    }

    #[test]
    fn the_batch_script_quotes_paths() {
        let script = wrap_script(Path::new("/opt/my bin/dbsweep"), Path::new("/data/it's"), "witty-ember-1b75a4");
        assert_eq!(
            script,
            "export RAYON_NUM_THREADS=\"${SLURM_CPUS_ON_NODE:-1}\"; exec '/opt/my bin/dbsweep' --root '/data/it'\\''s' train --run witty-ember-1b75a4 --claimed"
        );
        assert_eq!(output_pattern(Path::new("/r/100%"), "x"), "/r/100%%/runs/x/slurm-%j.log");
    }

    #[test]
    fn sbatch_arguments_put_extra_ones_after_dbsweeps() {
        let mut opts = SlurmOptions::new(RunOptions {
            exe: "/bin/dbsweep".into(),
            root: "/r".into(),
            host: "h".into(),
            max_retries: 2,
            fail_fast: false,
            immediate_failure: Duration::from_secs(10),
            max_immediate_failures: 3,
            early: None,
        });
        opts.partition = Some("gpu".into());
        opts.time = Some("1:00:00".into());
        opts.extra_args = vec!["--account=lab".into()];
        let args = sbatch_args(&opts, "x", 2);
        let pos = |a: &str| args.iter().position(|x| x == a).unwrap_or_else(|| panic!("{a} in {args:?}"));
        assert!(pos("--gres=gpu:1") < pos("--account=lab"));
        assert!(pos("--partition=gpu") < pos("--account=lab") && pos("--time=1:00:00") > 0);
        assert!(args.contains(&format!("--comment=dbsweep orchestrator h pid {} attempt 2", std::process::id())));
        assert!(args.last().is_some_and(|a| a.starts_with("--wrap=export RAYON")));
        opts.gres = None;
        assert!(!sbatch_args(&opts, "x", 1).iter().any(|a| a.starts_with("--gres")));
    }
}
