//! `dbsweep train`: train one experiment, or one registered run, to the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Error;
use crate::config::{ExperimentConfig, Layers, yaml};
use crate::exit;
use crate::model::device;
use crate::scheduler::events::PROGRESS_PREFIX;
use crate::store::{CodeVersion, RunStatus, Store};
use crate::tracking::EndStatus;
use crate::train::trainer::{TrainJob, train as train_run};

/// Options of `dbsweep train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The experiment file (YAML, the keys of a sweep file's `base:`).
    #[arg(required_unless_present = "run")]
    pub experiment: Option<PathBuf>,
    /// Override a setting: `--set train.max_train_steps=20` (repeatable; a YAML value).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "run")]
    pub set: Vec<String>,
    /// Train this registered run (e.g. from `dbsweep submit`) instead of an experiment file.
    #[arg(long, conflicts_with = "experiment")]
    pub run: Option<String>,
    /// Resume from the newest valid checkpoint (`latest`, the default) or the newest at or
    /// before a step.
    #[arg(long, default_value = "latest")]
    pub resume: String,
    /// Set by `dbsweep run`: the run is already claimed for this attempt, and the process stops
    /// (after a checkpoint) if its orchestrator dies.
    #[arg(long, hide = true, requires = "run")]
    pub claimed: bool,
}

/// The device this process computes on, from the GPUs its scheduler assigned.
pub fn choose_device(env: &[(String, String)]) -> Result<device::Choice, Error> {
    let visible = env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.as_str());
    let choice = device::choose(visible)?;
    if let Some(warning) = &choice.warning {
        eprintln!("warning: {warning}");
    }
    Ok(choice)
}

/// Sets `stop` when this process's parent (the orchestrator) goes away.
fn watch_parent(stop: Arc<AtomicBool>) {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

/// This machine's host name, as runs record it.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Trains and returns the process exit code (0 finished, 130 interrupted).
pub fn train(args: &TrainArgs, env: &[(String, String)], root: &Path, out: &mut dyn Write) -> Result<i32, Error> {
    let resume_at_most = match args.resume.as_str() {
        "latest" => None,
        step => Some(
            step.parse::<u64>()
                .map_err(|_| Error::Usage(format!("--resume {step}: expected `latest` or a step number")))?,
        ),
    };
    let mut store = Store::open(&root.join(crate::store::DB_FILE))?;
    let (run_id, config) = match (&args.run, &args.experiment) {
        (Some(id), _) => {
            let stored = store.stored_run(id)?;
            let config: ExperimentConfig = serde_json::from_str(&stored.config_json)
                .map_err(|e| Error::Usage(format!("run `{id}` has a configuration this dbsweep cannot read: {e}")))?;
            if stored.status == RunStatus::Finished {
                writeln!(out, "run {id} already finished; nothing to do")?;
                return Ok(exit::OK);
            }
            (id.clone(), config)
        }
        (None, Some(file)) => {
            let doc = yaml::load_file(file)?;
            let resolved = Layers::new().file(&doc, &[]).env(env.iter().cloned()).flags(&args.set).resolve()?;
            let placed = store.register_experiment(&resolved, &file.display().to_string(), &CodeVersion::current())?;
            (placed.run_id, resolved.config)
        }
        (None, None) => return Err(Error::Usage("give an experiment file or --run RUN_ID".into())),
    };
    execute(&mut store, &run_id, config, args.claimed, resume_at_most, env, root, out)
}

/// Trains the registered run `run_id` with `config` to the end (see [`train`]); returns the
/// process exit code.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    store: &mut Store,
    run_id: &str,
    config: ExperimentConfig,
    claimed: bool,
    resume_at_most: Option<u64>,
    env: &[(String, String)],
    root: &Path,
    out: &mut dyn Write,
) -> Result<i32, Error> {
    let run_id = run_id.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once with 130.
        signal_hook::flag::register_conditional_shutdown(signal, exit::INTERRUPTED, Arc::clone(&stop))
            .map_err(Error::Output)?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(Error::Output)?;
    }
    let device = choose_device(env)?;
    let attempt = if claimed {
        store.set_process(&run_id, std::process::id(), &device.description)?;
        watch_parent(Arc::clone(&stop));
        store.stored_run(&run_id)?.attempt
    } else {
        store.start_attempt(&run_id, &host(), &device.description)?
    };
    let run_dir = root.join("runs").join(&run_id);
    writeln!(out, "run {run_id}: attempt {attempt}, folder {}", run_dir.display())?;
    let mut job = TrainJob {
        run_id: run_id.clone(),
        attempt,
        config,
        run_dir,
        root: root.to_path_buf(),
        resume_at_most,
        stop,
        env: env.to_vec(),
        sweep_id: store.run(&run_id)?.sweeps.first().map(|s| s.sweep_id.clone()),
        device: device.device,
        // One line per step on stderr: the terminal, or the run's log that a scheduler reads.
        progress: Box::new(|step, total, loss| eprintln!("{PROGRESS_PREFIX} {step}/{total} loss {loss:.6}")),
    };
    match train_run(&mut job, store) {
        Ok(outcome) => {
            let (status, code) = match outcome.status {
                EndStatus::Success => (RunStatus::Finished, exit::OK),
                EndStatus::Interrupted | EndStatus::Failure => (RunStatus::Interrupted, exit::INTERRUPTED),
            };
            store.end_attempt(&run_id, status, code, None)?;
            writeln!(
                out,
                "run {run_id}: {status} at step {}/{} (class images generated: {}, images encoded: {}, prompts \
                 encoded: {})",
                outcome.step,
                outcome.total_steps,
                outcome.class_images_generated,
                outcome.latents_encoded,
                outcome.prompts_encoded
            )?;
            Ok(code)
        }
        Err(e) => {
            let code = if e.is_bad_input() { exit::BAD_INPUT } else { exit::FAILED };
            store.end_attempt(&run_id, RunStatus::Failed, code, Some(&e.to_string()))?;
            Err(Error::Train(e))
        }
    }
}
