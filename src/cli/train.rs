//! `dbsweep train`: train one experiment, or one registered run, to the end.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Error;
use crate::config::{Layers, Origin, Problem, ProblemKind, Resolved, yaml};
use crate::exit::Kind;
use crate::store::{CodeVersion, RunStatus, Store};
use crate::sweep::{ConfigHash, Fingerprints};
use crate::train::attempt::AttemptOptions;
use crate::train::preflight;

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
    /// Train a new run even if this configuration already finished (linked to the old one).
    #[arg(long, conflicts_with = "run")]
    pub rerun: bool,
    /// Set by `dbsweep run`: the run is already claimed for this attempt, and the process stops
    /// (after a checkpoint) if its orchestrator dies.
    #[arg(long, hide = true, requires = "run")]
    pub claimed: bool,
}

/// Trains and returns how it ended (finished, or interrupted).
pub fn train(args: &TrainArgs, env: &[(String, String)], root: &Path, out: &mut dyn Write) -> Result<Kind, Error> {
    let resume_at_most = match args.resume.as_str() {
        "latest" => None,
        step => Some(
            step.parse::<u64>()
                .map_err(|_| Error::Usage(format!("--resume {step}: expected `latest` or a step number")))?,
        ),
    };
    // An experiment file is read and validated before the store is touched.
    let resolved = match (&args.run, &args.experiment) {
        (None, Some(file)) => {
            let doc = yaml::load_file(file)?;
            let resolved = Layers::new().experiment(&doc).env(env.iter().cloned()).flags(&args.set).resolve()?;
            preflight::check_experiment(&resolved, env)?;
            Some(resolved)
        }
        _ => None,
    };
    let mut store = Store::open(&root.join(crate::store::DB_FILE))?;
    let (run_id, config) = match (&args.run, &args.experiment, resolved) {
        (Some(id), _, _) => {
            let config = store.run_config(id)?;
            if store.stored_run(id)?.status == RunStatus::Finished {
                writeln!(out, "run {id} already finished; nothing to do")?;
                return Ok(Kind::Ok);
            }
            (id.clone(), config)
        }
        (None, Some(file), Some(resolved)) => {
            let identity = run_identity(&resolved)?;
            let source = file.display().to_string();
            let placed =
                store.register_experiment(&resolved, identity, &source, &CodeVersion::current(), args.rerun)?;
            if placed.status == RunStatus::Finished {
                writeln!(
                    out,
                    "run {} already finished with these settings; nothing to do (--rerun trains a new run)",
                    placed.run_id
                )?;
                return Ok(Kind::Ok);
            }
            (placed.run_id, resolved.config)
        }
        _ => return Err(Error::Usage("give an experiment file or --run RUN_ID".into())),
    };
    let options = AttemptOptions { claimed: args.claimed, resume_at_most };
    super::train_attempt(&mut store, &run_id, config, &options, env, root, out)
}

/// The run identity of an experiment: its settings with the images of its folders (which
/// must exist and hold images).
fn run_identity(resolved: &Resolved) -> Result<ConfigHash, Error> {
    Fingerprints::default().hash(&resolved.json).map_err(|(key, e)| {
        let origin = resolved.provenance.get(key).cloned().unwrap_or(Origin::Default);
        let kind = ProblemKind::Invalid { expected: "a folder of images".into(), found: e.to_string() };
        Error::Config(Problem::new(origin, Some(key.to_string()), kind).into())
    })
}
