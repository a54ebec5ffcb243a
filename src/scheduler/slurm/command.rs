//! Slurm's client commands, run with a time limit (`squeue`, `sacct`, `sbatch`, `scancel`,
//! `scontrol`), and what `squeue` and `sacct` print, parsed.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::state::{ExitCode, base_state, is_final};

/// How Slurm's commands are run.
#[derive(Clone, Debug)]
pub struct Client {
    /// `SLURM_CONF` for the commands (otherwise they use theirs).
    pub slurm_conf: Option<PathBuf>,
    /// Longest wait for one command.
    pub timeout: Duration,
}

/// One job as `squeue` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// State word (`PENDING`, `RUNNING`, `COMPLETED`...).
    pub state: String,
    /// Why it is pending, or `None`.
    pub reason: String,
    /// Its exit code once it ended.
    pub exit: ExitCode,
    /// Job name.
    pub name: String,
    /// Job comment.
    pub comment: String,
    /// Its output file pattern.
    pub stdout: String,
}

/// `squeue --Format` fields, `|`-separated; the output path last (it may hold `|`).
const SQUEUE_FORMAT: &str = "JobID:|,State:|,Reason:|,exit_code:|,Name:|,Comment:|,STDOUT:";

/// Parses `squeue -h -O SQUEUE_FORMAT` output; lines that do not fit are skipped.
pub fn parse_squeue(text: &str) -> Vec<JobInfo> {
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

impl Client {
    /// Runs a Slurm command with a time limit; its stdout, or a message naming what went wrong.
    pub fn run(&self, program: &str, args: &[String]) -> Result<String, String> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(conf) = &self.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "`{program}` not found: install Slurm's client commands (Debian: slurm-client) or put them on PATH"
                )
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
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("`{program}` did not answer within {} s", self.timeout.as_secs()));
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

    /// Our jobs (every state Slurm still remembers), or only `jobs` when given.
    pub fn squeue(&self, jobs: Option<&[&str]>) -> Result<Vec<JobInfo>, String> {
        let mut args: Vec<String> =
            vec!["--noheader".into(), "--states=all".into(), format!("--Format={SQUEUE_FORMAT}")];
        match jobs {
            Some([]) => return Ok(Vec::new()),
            Some(list) => args.push(format!("--jobs={}", list.join(","))),
            None => args.push("--me".into()),
        }
        match self.run("squeue", &args) {
            Ok(text) => Ok(parse_squeue(&text)),
            // Every job asked for has left the controller's memory.
            Err(e) if e.contains("Invalid job id") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A job's final state from accounting (`sacct`, or `sacct -c`, the job completion file, where
    /// there is no slurmdbd), for a job that left the queue before it was seen ending.
    pub fn sacct(&self, job: &str) -> Option<(String, ExitCode)> {
        for completion_file in [false, true] {
            let mut args: Vec<String> = Vec::new();
            if completion_file {
                args.push("-c".into());
            }
            args.extend(["-X", "-n", "-P", "-j", job, "-o", "JobID,State,ExitCode"].map(String::from));
            let Ok(text) = self.run("sacct", &args) else { continue };
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
}
