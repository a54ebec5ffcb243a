//! How dbsweep names and describes its Slurm jobs: the job name, output file, the comment that
//! names the orchestrator following the job, the batch script and the `sbatch` arguments.

use std::path::{Path, PathBuf};

use super::SlurmOptions;

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The batch script `sbatch --wrap` runs: the trainer replaces the shell, so signals from
/// `scancel` reach it and its parent is slurmstepd; its threads follow the job's CPUs.
pub fn wrap_script(exe: &Path, root: &Path, run: &str) -> String {
    format!(
        "export RAYON_NUM_THREADS=\"${{SLURM_CPUS_ON_NODE:-1}}\"; exec {} --root {} train --run {} --claimed",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&root.to_string_lossy()),
        shell_quote(run)
    )
}

/// The job name of a run's jobs.
pub fn job_name(run: &str) -> String {
    format!("dbsweep-{run}")
}

/// `--output` for a run's jobs (`%` escaped, `%j` the job id).
pub fn output_pattern(root: &Path, run: &str) -> String {
    format!("{}/slurm-%j.log", root.join("runs").join(run).to_string_lossy().replace('%', "%%"))
}

/// The output file of job `job` of run `run`.
pub fn job_log(root: &Path, run: &str, job: &str) -> PathBuf {
    root.join("runs").join(run).join(format!("slurm-{job}.log"))
}

/// The orchestrator a job names in its comment: `dbsweep orchestrator HOST pid PID attempt N`.
pub fn comment(host: &str, attempt: u32) -> String {
    format!("dbsweep orchestrator {host} pid {} attempt {attempt}", std::process::id())
}

/// The orchestrator named by a job comment: host, pid and attempt.
pub fn parse_comment(text: &str) -> Option<(String, u32, u32)> {
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["dbsweep", "orchestrator", host, "pid", pid, "attempt", attempt] => {
            Some((host.to_string(), pid.parse().ok()?, attempt.parse().ok()?))
        }
        _ => None,
    }
}

/// The `sbatch` arguments for a run's attempt.
pub fn sbatch_args(opts: &SlurmOptions, run: &str, attempt: u32) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        "--hold".into(),
        format!("--job-name={}", job_name(run)),
        format!("--comment={}", comment(&opts.host, attempt)),
        format!("--chdir={}", opts.command.root.display()),
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
    args.push(format!("--output={}", output_pattern(&opts.command.root, run)));
    args.push(format!("--wrap={}", wrap_script(&opts.command.exe, &opts.command.root, run)));
    args
}
