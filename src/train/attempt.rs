//! One attempt at training a registered run in this process, from the store's record to its
//! end: stop requests (Ctrl-C, SIGTERM, a dead orchestrator), the device, the attempt's
//! lifecycle in the lineage store, and the trainer in between.
//!
//! `dbsweep train` (by hand, or `--run ID --claimed` in a process a scheduler started) and
//! `dbsweep reproduce` both train through here, so a run's status, attempt count, device
//! and failure reason are recorded the same way whoever started it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::TrainError;
use super::job::{Notice, TrainJob, TrainOutcome};
use super::trainer::train;
use crate::config::ExperimentConfig;
use crate::exit::Kind;
use crate::model::device;
use crate::store::{HEARTBEAT, RunStatus, Store, host_name};
use crate::tracking::EndStatus;

/// How the attempt was started.
#[derive(Clone, Debug, Default)]
pub struct AttemptOptions {
    /// A scheduler already claimed the run for this attempt (and is this process's parent:
    /// the attempt stops, after a checkpoint, when the parent goes away).
    pub claimed: bool,
    /// Resume from the newest valid checkpoint at or before this step (`None`: the newest).
    pub resume_at_most: Option<u64>,
}

/// An attempt that has begun: recorded in the store, device chosen, not yet trained.
pub struct Attempt {
    job: TrainJob,
    /// Said to the user before training: e.g. a GPU was assigned that this build cannot use.
    pub warning: Option<String>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptOutcome {
    /// What the trainer reported.
    pub train: TrainOutcome,
    /// The status recorded for the run.
    pub status: RunStatus,
}

impl AttemptOutcome {
    /// The kind of end: finished is `Ok`, anything else interrupted.
    pub fn kind(&self) -> Kind {
        if self.status == RunStatus::Finished { Kind::Ok } else { Kind::Interrupted }
    }
}

impl std::fmt::Display for AttemptOutcome {
    /// `finished at step 40/40 (class images generated: 8, images encoded: 4, prompts encoded: 2)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.train;
        write!(
            f,
            "{} at step {}/{} (class images generated: {}, images encoded: {}, prompts encoded: {})",
            self.status, t.step, t.total_steps, t.class_images_generated, t.latents_encoded, t.prompts_encoded
        )
    }
}

/// The thread that records a training process's heartbeat in the store until dropped.
struct Heartbeat {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Beats at once, then every [`HEARTBEAT`], for attempt `attempt` of run `run_id` (with
    /// its own connection to the store at `db`; a missed beat is tried again at the next).
    fn start(db: &Path, run_id: &str, attempt: u32) -> Heartbeat {
        let done = Arc::new(AtomicBool::new(false));
        let (db, run_id, flag) = (db.to_path_buf(), run_id.to_string(), Arc::clone(&done));
        let thread = std::thread::Builder::new().name("heartbeat".into()).spawn(move || {
            let host = host_name();
            let mut store = None;
            let step = std::time::Duration::from_millis(100);
            let mut waited = HEARTBEAT;
            while !flag.load(Ordering::SeqCst) {
                if waited >= HEARTBEAT {
                    waited = std::time::Duration::ZERO;
                    if store.is_none() {
                        store = Store::open(&db).ok();
                    }
                    if let Some(s) = store.as_mut() {
                        let _ = s.heartbeat(&run_id, attempt, &host);
                    }
                }
                std::thread::sleep(step);
                waited += step;
            }
        });
        Heartbeat { done, thread: thread.ok() }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A flag set by SIGINT or SIGTERM; a second signal while stopping exits at once with the
/// interrupted code.
fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, Kind::Interrupted.code(), Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Sets `stop` when this process's parent (the orchestrator) goes away.
fn watch_parent(stop: Arc<AtomicBool>) {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        stop.store(true, Ordering::SeqCst);
    });
}

impl Attempt {
    /// Begins an attempt at run `run_id` with its stored `config`: chooses the device from
    /// `CUDA_VISIBLE_DEVICES` in `env`, and records the attempt (a claimed one only records
    /// this process and its device). `notify` hears the attempt's progress and warnings.
    pub fn begin(
        store: &mut Store,
        run_id: &str,
        config: ExperimentConfig,
        options: &AttemptOptions,
        env: &[(String, String)],
        root: &Path,
        notify: Box<dyn FnMut(Notice)>,
    ) -> Result<Attempt, TrainError> {
        let stop = stop_on_signals().map_err(|e| TrainError::Process(format!("cannot handle signals: {e}")))?;
        let visible = env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.as_str());
        let choice = device::choose(visible)?;
        let attempt = if options.claimed {
            store.set_process(run_id, std::process::id(), &choice.description)?;
            watch_parent(Arc::clone(&stop));
            store.stored_run(run_id)?.attempt
        } else {
            store.start_attempt(run_id, &host_name(), &choice.description)?
        };
        let job = TrainJob {
            run_id: run_id.to_string(),
            attempt,
            config,
            run_dir: root.join("runs").join(run_id),
            root: root.to_path_buf(),
            resume_at_most: options.resume_at_most,
            stop,
            env: env.to_vec(),
            sweep_id: store.run(run_id)?.sweeps.first().map(|s| s.sweep_id.clone()),
            device: choice.device,
            notify,
        };
        Ok(Attempt { job, warning: choice.warning })
    }

    /// The attempt number.
    pub fn number(&self) -> u32 {
        self.job.attempt
    }

    /// The run folder.
    pub fn run_dir(&self) -> &PathBuf {
        &self.job.run_dir
    }

    /// Trains to the end (or until stopped) and records how the attempt ended; a failure is
    /// recorded with its reason and exit code before it is returned. While it trains, a
    /// heartbeat tells other hosts' orchestrators that the process lives.
    pub fn train(mut self, store: &mut Store) -> Result<AttemptOutcome, TrainError> {
        let run_id = self.job.run_id.clone();
        let heartbeat = Heartbeat::start(store.path(), &run_id, self.job.attempt);
        let trained = train(&mut self.job, store);
        drop(heartbeat);
        match trained {
            Ok(outcome) => {
                let status = match outcome.status {
                    EndStatus::Success => RunStatus::Finished,
                    EndStatus::Interrupted | EndStatus::Failure => RunStatus::Interrupted,
                };
                let result = AttemptOutcome { train: outcome, status };
                store.end_attempt(&run_id, status, result.kind().code(), None)?;
                Ok(result)
            }
            Err(e) => {
                let kind = if e.is_bad_input() { Kind::BadInput } else { Kind::Failed };
                store.end_attempt(&run_id, RunStatus::Failed, kind.code(), Some(&e.to_string()))?;
                Err(e)
            }
        }
    }
}
