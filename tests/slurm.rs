//! `dbsweep run --backend slurm` against a real single-node Slurm cluster (munged, slurmctld,
//! slurmd; 4 fake GPUs) that `scripts/slurm-up.sh` brings up in `target/slurm`, installing
//! Slurm with apt-get if it is missing. Nothing is mocked: runs go through sbatch, squeue,
//! scancel and the job completion file. Tests take the cluster one at a time (a lock shared by
//! every process on the machine, since the cluster's ports are) and tear it down when done;
//! `DBSWEEP_KEEP_SLURM=1` leaves it up.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const STEPS: usize = 4;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster, held by one test at a time; brought down on drop.
struct Cluster {
    state: PathBuf,
    conf: PathBuf,
    _lock: File,
    _guard: MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Cluster {
    fn up() -> Cluster {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock = File::create(std::env::temp_dir().join("dbsweep-slurm-tests.lock")).unwrap();
        // SAFETY: flock on a file descriptor this File owns; released when it is closed.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "cannot lock the cluster");
        let state = repo().join("target/slurm");
        let out = Command::new("bash").arg(repo().join("scripts/slurm-up.sh")).arg(&state).output().unwrap();
        assert!(
            out.status.success(),
            "cannot bring up the test Slurm cluster (scripts/slurm-up.sh needs root and, the first time, \
             apt-get install slurmctld slurmd slurm-client munge):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = state.join("etc/slurm.conf");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&conf.display().to_string()));
        Cluster { state, conf, _lock: lock, _guard: guard }
    }

    /// A Slurm client command against this cluster; its stdout.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).env("SLURM_CONF", &self.conf).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Jobs in the queue (pending, running or completing).
    fn queued(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-t", "PD,R,CG", "-o", "%i"]).lines().map(str::to_string).collect()
    }

    /// Final states from the job completion file (`sacct -c`): job id to state.
    fn completed(&self) -> Vec<(String, String)> {
        self.client("sacct", &["-c", "-n", "-P", "-X", "-o", "JobID,State"])
            .lines()
            .filter_map(|l| l.split_once('|').map(|(id, st)| (id.to_string(), st.to_string())))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("DBSWEEP_KEEP_SLURM").is_some() {
            return;
        }
        let _ = Command::new("bash").arg(repo().join("scripts/slurm-down.sh")).arg(&self.state).output();
    }
}

/// One test's output root and sweep file.
struct Sweep {
    root: tempfile::TempDir,
    file: PathBuf,
    conf: PathBuf,
}

impl Sweep {
    /// A sweep of `n` runs (seeds 1..=n) of `steps` steps on the built-in tiny model.
    fn new(cluster: &Cluster, name: &str, n: usize, steps: usize) -> Sweep {
        let seeds: Vec<String> = (1..=n).map(|s| s.to_string()).collect();
        let settings = format!(
            "name: {name}\nbase:\n  train: {{max_train_steps: {steps}}}\n  checkpoint: {{every_steps: 2}}\n  validation: {{every_steps: 1000}}\nparameters:\n  seed: {{values: [{}]}}\n",
            seeds.join(", ")
        );
        Sweep::of(cluster, &settings)
    }

    /// A sweep file of `settings` (YAML, with `base:` in block style) extending the built-in
    /// tiny model's experiment file, on the shipped instance images and 2 class images.
    fn of(cluster: &Cluster, settings: &str) -> Sweep {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("sweep.yaml");
        let data = format!(
            "base:\n  data: {{instance_dir: {}, num_class_images: 2}}\n",
            repo().join("examples/instance").display()
        );
        let text = format!(
            "extends: {}\n{}",
            repo().join("sweeps/base/tiny.yaml").display(),
            settings.replacen("base:\n", &data, 1)
        );
        std::fs::write(&file, text).unwrap();
        Sweep { root, file, conf: cluster.conf.clone() }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbsweep"));
        cmd.current_dir(repo()).arg("--root").arg(self.root()).args(args);
        cmd.env_remove("DBSWEEP_ROOT").env_remove("DBSWEEP_TEST_CRASH_AT_STEP").env("SLURM_CONF", &self.conf);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    /// Runs dbsweep to the end: exit code and stdout (stderr must show no panic).
    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
        finish(self.command(args, vars).output().unwrap())
    }

    fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> Vec<T> {
        let conn = rusqlite::Connection::open(self.root().join("dbsweep.sqlite")).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// Every run has each train/loss point exactly once, steps 1..=steps.
    fn assert_each_point_once(&self, runs: usize, steps: usize) {
        let counts: Vec<i64> = self.query("SELECT COUNT(*) FROM metrics WHERE key = 'train/loss' GROUP BY run_id");
        assert_eq!(counts, vec![steps as i64; runs], "train/loss points per run");
        let distinct: Vec<i64> =
            self.query("SELECT COUNT(DISTINCT step) FROM metrics WHERE key = 'train/loss' GROUP BY run_id");
        assert_eq!(distinct, vec![steps as i64; runs]);
    }

    /// The Slurm job logs of run `id`, by job id.
    fn job_logs(&self, id: &str) -> Vec<(String, String)> {
        let mut logs: Vec<(String, String)> = std::fs::read_dir(self.root().join("runs").join(id))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let job = name.strip_prefix("slurm-")?.strip_suffix(".log")?.to_string();
                let text = std::fs::read_to_string(self.root().join("runs").join(id).join(&name)).unwrap();
                Some((job, text))
            })
            .collect();
        logs.sort_by_key(|(job, _)| job.parse::<u64>().unwrap());
        logs
    }

    /// `sql`'s first value, or `None` while the store or its tables do not exist yet.
    fn try_count(&self, sql: &str) -> Option<i64> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
        let conn = rusqlite::Connection::open_with_flags(self.root().join("dbsweep.sqlite"), flags).ok()?;
        conn.query_row(sql, [], |r| r.get(0)).ok()
    }

    /// Waits (bounded) until `sql` returns `want`.
    fn wait_for(&self, sql: &str, want: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_count(sql) != Some(want) {
            assert!(Instant::now() < deadline, "timed out waiting for `{sql}` to be {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn finish(out: Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "dbsweep panicked:\n{stderr}");
    let code =
        out.status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap());
    (code, format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
}

/// `device` as the trainer and the scheduler record it: `cpu (CUDA_VISIBLE_DEVICES=k), slurm job N`.
fn parse_device(device: &str) -> (String, String) {
    let rest = device.strip_prefix("cpu (CUDA_VISIBLE_DEVICES=").unwrap_or_else(|| panic!("device `{device}`"));
    let (gpus, job) = rest.split_once("), slurm job ").unwrap_or_else(|| panic!("device `{device}`"));
    (gpus.to_string(), job.to_string())
}

#[test]
fn every_run_is_a_slurm_job_on_its_own_gpu() {
    let cluster = Cluster::up();
    let sweep = Sweep::new(&cluster, "slurm4", 4, STEPS);
    let file = sweep.file.to_str().unwrap();
    let (code, out) = sweep.run(&["run", file, "--backend", "slurm", "--gres", "gpu:1", "--json"], &[]);
    assert_eq!(code, 0, "{out}");
    let events: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let started: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "started").collect();
    assert_eq!(started.len(), 4, "{out}");
    assert!(started.iter().all(|e| e["slot"].as_str().unwrap().starts_with("slurm job ")), "{out}");
    assert_eq!(events.last().unwrap()["event"], "done");
    assert_eq!(events.last().unwrap()["finished"], 4);

    assert_eq!(sweep.query::<String>("SELECT status FROM runs"), ["finished"; 4]);
    assert_eq!(sweep.query::<i64>("SELECT attempt FROM runs"), [1; 4]);
    sweep.assert_each_point_once(4, STEPS);

    // Each run ran as its own Slurm job, logged to runs/ID/slurm-JOBID.log, and saw its own GPU
    // (CUDA_VISIBLE_DEVICES set by Slurm from the gres, recorded by the trainer).
    let completed = cluster.completed();
    let mut gpus = BTreeSet::new();
    let mut jobs = HashSet::new();
    for id in sweep.query::<String>("SELECT id FROM runs") {
        let device = sweep.query::<String>(&format!("SELECT device FROM runs WHERE id = '{id}'"))[0].clone();
        let (gpu, job) = parse_device(&device);
        gpus.insert(gpu);
        assert!(jobs.insert(job.clone()), "job {job} recorded twice");
        let logs = sweep.job_logs(&id);
        assert_eq!(logs.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>(), [job.as_str()], "{id}");
        assert!(logs[0].1.contains(&format!("run {id}: finished at step {STEPS}/{STEPS}")), "{}", logs[0].1);
        assert!(completed.contains(&(job.clone(), "COMPLETED".into())), "job {job} in {completed:?}");
    }
    assert_eq!(gpus.into_iter().collect::<Vec<_>>(), ["0", "1", "2", "3"], "one GPU per job");
    assert!(cluster.queued().is_empty());

    // Running it again submits nothing: every run is finished.
    let (code, out) = sweep.run(&["run", file, "--backend", "slurm"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("started"), "{out}");
}

#[test]
fn a_crashing_first_attempt_is_retried_through_slurm_from_its_checkpoint() {
    let cluster = Cluster::up();
    let steps = 6;
    let sweep = Sweep::new(&cluster, "slurmcrash", 3, steps);
    let file = sweep.file.to_str().unwrap();
    let (code, out) = sweep.run(&["run", file, "--backend", "slurm"], &[("DBSWEEP_TEST_CRASH_AT_STEP", "3")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("failed   ").count(), 3, "{out}");
    assert!(out.contains("sweep done: 3 finished, 0 failed, 0 remaining"), "{out}");
    assert_eq!(sweep.query::<String>("SELECT status FROM runs"), ["finished"; 3]);
    assert_eq!(sweep.query::<i64>("SELECT attempt FROM runs"), [2; 3]);
    let reasons: Vec<String> = sweep.query("SELECT reason FROM run_events WHERE to_status = 'failed'");
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons.iter().all(|r| r.contains("FAILED, killed by signal 6") && r.contains("last lines of")),
        "{reasons:?}"
    );
    // Two jobs per run: the crashed one, and the retry that resumed from the step-2 checkpoint.
    let completed = cluster.completed();
    for id in sweep.query::<String>("SELECT id FROM runs") {
        let logs = sweep.job_logs(&id);
        assert_eq!(logs.len(), 2, "{id}: {logs:?}");
        assert!(completed.contains(&(logs[0].0.clone(), "FAILED".into())), "{completed:?}");
        assert!(completed.contains(&(logs[1].0.clone(), "COMPLETED".into())), "{completed:?}");
        assert!(logs[1].1.contains("attempt 2"), "{}", logs[1].1);
    }
    sweep.assert_each_point_once(3, steps);
}

#[test]
fn ctrl_c_checkpoints_the_jobs_and_resume_finishes_them() {
    let cluster = Cluster::up();
    let steps = 30;
    let sweep = Sweep::new(&cluster, "slurmstop", 3, steps);
    let child = sweep.spawn(&["run", sweep.file.to_str().unwrap(), "--backend", "slurm"]);
    // Every job is training and has checkpointed once.
    sweep.wait_for("SELECT COUNT(DISTINCT run_id) FROM checkpoints", 3);
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let (code, out) = finish(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{out}");
    assert!(out.contains("stopping: interrupted"), "{out}");
    assert_eq!(out.matches("interrupted ").count(), 3, "{out}");
    assert_eq!(sweep.query::<String>("SELECT status FROM runs"), ["interrupted"; 3]);
    assert!(cluster.queued().is_empty(), "jobs left: {:?}", cluster.queued());

    let (code, out) = sweep.run(&["resume", "slurmstop", "--backend", "slurm"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sweep done: 3 finished, 0 failed, 0 remaining"), "{out}");
    // Each run resumed at least once (a job still starting when Ctrl-C came may take one more).
    let attempts = sweep.query::<i64>("SELECT attempt FROM runs");
    assert!(attempts.iter().all(|&a| a >= 2), "{attempts:?}");
    sweep.assert_each_point_once(3, steps);
}

#[test]
fn resume_follows_the_jobs_of_a_killed_orchestrator_instead_of_resubmitting() {
    let cluster = Cluster::up();
    let steps = 40;
    let sweep = Sweep::new(&cluster, "slurmkill", 3, steps);
    let mut child = sweep.spawn(&["run", sweep.file.to_str().unwrap(), "--backend", "slurm"]);
    sweep.wait_for("SELECT COUNT(*) FROM runs WHERE device LIKE 'cpu (CUDA_VISIBLE_DEVICES=%'", 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cluster.queued().is_empty(), "the jobs outlive their orchestrator");

    let (code, out) = sweep.run(&["resume", "slurmkill", "--backend", "slurm"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(submitted earlier)"), "{out}");
    assert!(out.contains("sweep done: 3 finished, 0 failed, 0 remaining"), "{out}");
    assert_eq!(sweep.query::<i64>("SELECT attempt FROM runs"), [1; 3], "nothing was submitted twice");
    for device in sweep.query::<String>("SELECT device FROM runs") {
        parse_device(&device);
    }
    sweep.assert_each_point_once(3, steps);
}

#[test]
fn hyperband_stops_slurm_jobs_as_it_stops_local_runs() {
    // The same sweep and assertions as the local backend's Hyperband test (tests/cli/run.rs):
    // train/lr is constant per run, so the ranking is known, and one job at a time gives the
    // same order of reports as one CPU slot, so the same decisions.
    let cluster = Cluster::up();
    let sweep = Sweep::of(
        &cluster,
        "name: slurmhb\nbase:\n  train: {max_train_steps: 80}\n  validation: {every_steps: 1000}\n  checkpoint: {every_steps: 1000}\nmetric: {name: train/lr, goal: minimize}\nearly_terminate: {type: hyperband, min_iter: 3, eta: 2}\nparameters:\n  train.learning_rate: {values: [1.0e-5, 1.0e-4, 1.0e-3]}\n",
    );
    let args = ["run", sweep.file.to_str().unwrap(), "--backend", "slurm", "--gres", "none", "--max-parallel", "1"];
    let (code, out) = sweep.run(&args, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sweep done: 1 finished, 2 stopped early, 0 failed, 0 remaining"), "{out}");
    assert_eq!(out.matches("early stop ").count(), 2, "{out}");
    assert_eq!(
        sweep.query::<String>("SELECT status FROM runs ORDER BY json_extract(config_json, '$.train.learning_rate')"),
        ["finished", "stopped", "stopped"]
    );
    let steps: Vec<i64> =
        sweep.query("SELECT COUNT(*) FROM metrics WHERE key = 'train/loss' GROUP BY run_id ORDER BY COUNT(*) DESC");
    assert!(steps[0] == 80 && steps[1] < 80 && steps[2] < 80, "{steps:?}");
    // The stopped jobs checkpointed and ended on the signal: no job is left, none was cancelled
    // by force.
    assert!(cluster.queued().is_empty(), "jobs left: {:?}", cluster.queued());
    let (code, again) = sweep.run(&["resume", "slurmhb", "--backend", "slurm", "--gres", "none"], &[]);
    assert_eq!(code, 0, "{again}");
    assert!(!again.contains("started"), "stopped runs are not resumed: {again}");
}

#[test]
fn a_bayes_sweep_proposes_its_runs_as_jobs_end() {
    // The dispatch loop is the local backend's: with two jobs at a time, each later proposal
    // is made when a job ends, with the other still pending.
    let cluster = Cluster::up();
    let sweep = Sweep::of(
        &cluster,
        &format!(
            "name: slurmbayes\nmethod: bayes\nrun_cap: 4\nmetric: {{name: val/loss, goal: minimize}}\nbase:\n  train: {{max_train_steps: {STEPS}}}\n  validation: {{every_steps: 2}}\n  checkpoint: {{every_steps: 2}}\nparameters:\n  train.learning_rate: {{distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-3}}\n"
        ),
    );
    let args = ["run", sweep.file.to_str().unwrap(), "--backend", "slurm", "--gres", "none", "--max-parallel", "2"];
    let (code, out) = sweep.run(&args, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "--max-parallel given: {out}");
    assert_eq!(out.matches("proposed ").count(), 4, "{out}");
    assert!(out.contains("sweep done: 4 finished, 0 failed, 0 remaining"), "{out}");
    assert_eq!(sweep.query::<i64>("SELECT position FROM proposals ORDER BY position"), [0, 1, 2, 3]);
    let devices: Vec<String> = sweep.query("SELECT device FROM runs");
    assert!(devices.iter().all(|d| d.starts_with("cpu, slurm job ")), "each run a Slurm job: {devices:?}");
    let pending: Vec<String> = sweep.query("SELECT pending_json FROM proposals ORDER BY position");
    assert_eq!(pending[0], "[]");
    assert_ne!(pending[1], "[]", "the second proposal is made while the first job is pending or running");
    sweep.assert_each_point_once(4, STEPS);
    assert!(cluster.queued().is_empty());
}

#[test]
fn slurm_errors_are_clear_messages() {
    let cluster = Cluster::up();
    let sweep = Sweep::new(&cluster, "slurmbad", 1, STEPS);
    let file = sweep.file.to_str().unwrap();
    let (code, out) = sweep.run(&["run", file, "--partition", "gpu"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--partition applies to `--backend slurm`"), "{out}");
    let (code, out) = sweep.run(&["run", file, "--backend", "slurm", "--partition", "nosuchpartition"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stopping: cannot submit Slurm jobs: `sbatch` failed"), "{out}");
    assert!(out.contains("invalid partition"), "{out}");
    let errors: Vec<String> = sweep.query("SELECT error FROM runs");
    assert!(errors[0].contains("cannot submit Slurm jobs"), "{errors:?}");
    let (code, out) =
        sweep.run(&["resume", "slurmbad", "--backend", "slurm"], &[("SLURM_CONF", "/nonexistent/slurm.conf")]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SLURM_CONF is `/nonexistent/slurm.conf`, which is not a file"), "{out}");
    // A controller that does not answer (a port nothing listens on): Slurm's clients give up
    // after about 10 s.
    let conf = std::fs::read_to_string(&cluster.conf).unwrap();
    let port = conf.lines().find_map(|l| l.strip_prefix("SlurmctldPort=")).unwrap();
    let dead = sweep.root().join("dead.conf");
    std::fs::write(&dead, conf.replace(&format!("SlurmctldPort={port}"), "SlurmctldPort=1")).unwrap();
    let (code, out) =
        sweep.run(&["resume", "slurmbad", "--backend", "slurm"], &[("SLURM_CONF", dead.to_str().unwrap())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stopping: cannot reach Slurm: `squeue` failed"), "{out}");
    assert!(out.contains("Unable to contact slurm controller"), "{out}");
}
