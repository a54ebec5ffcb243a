//! What Slurm says of a job: exit codes in both of Slurm's forms, state words, and the
//! verdict on a run's attempt from its job's final state and what the trainer recorded.

use crate::scheduler::dispatch::Verdict;
use crate::store::RunStatus;

/// A Slurm exit code: the process's exit status and the signal that killed it (0 if none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCode {
    /// The exit status.
    pub code: i32,
    /// The signal that killed it (0: none).
    pub signal: i32,
}

impl ExitCode {
    /// `N:S` (sacct, scontrol) or a raw wait status (squeue's `exit_code` field).
    pub fn parse(text: &str) -> Option<ExitCode> {
        let text = text.trim();
        if let Some((code, signal)) = text.split_once(':') {
            return Some(ExitCode { code: code.trim().parse().ok()?, signal: signal.trim().parse().ok()? });
        }
        let raw: i64 = text.parse().ok()?;
        Some(ExitCode { code: ((raw >> 8) & 0xff) as i32, signal: (raw & 0x7f) as i32 })
    }

    /// As a process exit code: 128 + signal when killed.
    pub fn value(self) -> i32 {
        if self.signal != 0 { 128 + self.signal } else { self.code }
    }

    pub fn describe(self) -> String {
        if self.signal != 0 { format!("killed by signal {}", self.signal) } else { format!("exit code {}", self.code) }
    }
}

/// The state word alone: `CANCELLED by 0` and `CANCELLED+` are `CANCELLED`.
pub fn base_state(state: &str) -> &str {
    let state = state.trim();
    let end = state.find(|c: char| !(c.is_ascii_alphabetic() || c == '_')).unwrap_or(state.len());
    &state[..end]
}

/// States a job does not leave.
pub fn is_final(state: &str) -> bool {
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

/// Maps a job's final `state` and `exit` to the run's outcome. `recorded` is the run's status
/// after the job (the trainer writes finished, interrupted or failed itself unless it was
/// killed), `stop_requested` whether this scheduler asked the job to stop.
pub fn verdict(
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
