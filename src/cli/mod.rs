//! The command line: clap definitions and one small module per command. Commands parse,
//! call the library, and print; they hold no logic of their own.

mod compare;
mod dashboard;
mod error;
mod eval;
mod export;
mod gc;
mod live;
mod ls;
mod plan;
mod reproduce;
mod run;
mod sample;
mod show;
mod sync;
mod table;
mod tensorboard;
mod train;

pub use error::Error;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::ExperimentConfig;
use crate::exit::Kind;
use crate::store::{DB_FILE, Store};
use crate::sweep::Goal;
use crate::train::attempt::{Attempt, AttemptOptions};

/// Declarative DreamBooth sweeps: expand, schedule, train, track, compare, reproduce.
#[derive(Debug, Parser)]
#[command(name = "dbsweep", version, about)]
pub struct Cli {
    /// Output root: run folders and the lineage store `dbsweep.sqlite`.
    #[arg(long, global = true, env = "DBSWEEP_ROOT", default_value = "experiments")]
    pub root: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by the commands that read a sweep file.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The sweep file (YAML).
    pub sweep: PathBuf,
    /// Override a setting for every run: `--set train.batch_size=2` (repeatable; a YAML value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// dbsweep's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a sweep file and show the runs it expands to (nothing is written).
    Plan {
        /// The sweep.
        #[command(flatten)]
        sweep: SweepArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register a sweep's runs in the lineage store as pending (finished runs are reused).
    Submit {
        /// The sweep.
        #[command(flatten)]
        sweep: SweepArgs,
        /// Add a new run even for configurations that already finished.
        #[arg(long)]
        rerun: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List sweeps and their runs with status.
    Ls {
        /// Only this sweep (id or name).
        sweep: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Register a sweep file's runs and train them all (GPU or CPU slots here, or Slurm jobs).
    Run {
        /// The sweep.
        #[command(flatten)]
        sweep: SweepArgs,
        /// Add new runs even for configurations that already finished.
        #[arg(long)]
        rerun: bool,
        /// Scheduling.
        #[command(flatten)]
        schedule: run::ScheduleArgs,
    },
    /// Continue a registered sweep: finished runs are skipped, interrupted ones resume.
    Resume {
        /// Sweep id or name.
        sweep: String,
        /// Scheduling.
        #[command(flatten)]
        schedule: run::ScheduleArgs,
    },
    /// Compare a sweep's runs: swept values, status, final and best metric, steps, time.
    Compare {
        /// Sweep id or name.
        sweep: String,
        /// Metric (default: the sweep's metric, else val/loss).
        #[arg(long)]
        metric: Option<String>,
        /// Best first.
        #[arg(long)]
        sort: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: compare::Format,
        /// Shorthand for --format json.
        #[arg(long)]
        json: bool,
        /// Shorthand for --format csv.
        #[arg(long)]
        csv: bool,
    },
    /// The best run of a sweep and its best checkpoint, with the rule that chose them.
    Best {
        /// Sweep id or name.
        sweep: String,
        /// Metric (default: the sweep's metric, else val/loss).
        #[arg(long)]
        metric: Option<String>,
        /// minimize or maximize (default: the sweep's, else minimize).
        #[arg(long)]
        goal: Option<Goal>,
        /// The runs and checkpoints on the Pareto front of two metrics instead, e.g.
        /// `eval/dino,eval/clip_t` (a metric may end in `:min` or `:max`; `eval/*` scores are
        /// maximised by default, except `eval/pres`).
        #[arg(long, value_name = "METRIC,METRIC", conflicts_with_all = ["metric", "goal"])]
        pareto: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a checkpoint (`RUN_ID`, `RUN_ID@STEP` or `best:SWEEP`) as a diffusers model folder.
    Export {
        /// The checkpoint.
        reference: String,
        /// `diffusers` (a whole model folder; a LoRA run's adapters merged in), `diffusers-lora`
        /// (a LoRA run's `pytorch_lora_weights.safetensors`) or `kohya` (a LoRA run's adapters
        /// for AUTOMATIC1111, ComfyUI and sd-scripts).
        #[arg(long, default_value = "diffusers", value_parser = ["diffusers", "diffusers-lora", "kohya"])]
        format: String,
        /// The folder to create.
        out: PathBuf,
    },
    /// Score checkpoints by subject fidelity (DINO, CLIP-I), prompt fidelity (CLIP-T) and prior
    /// preservation (PRES): `RUN_ID` (its newest), `RUN_ID@STEP`, `best:SWEEP`, or a sweep (every
    /// checkpoint of every run, and the base model).
    Eval {
        /// What to score.
        target: String,
        /// Override an evaluation setting: `--set evaluation.dino_model=PATH` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a sweep's TensorBoard folder (its runs under readable names, the HParams summary,
    /// the custom-scalars layout) under the root, and print the `tensorboard` command that shows it.
    Tensorboard {
        /// Sweep id or name.
        sweep: String,
    },
    /// Delete a sweep's checkpoints except the best and/or last; never the one `best` returns.
    Gc {
        /// Sweep id or name.
        sweep: String,
        /// What to keep of each run: `best`, `last` or `best,last`.
        #[arg(long, default_value = "best,last")]
        keep: crate::report::gc::Keep,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Retrain a run from its stored configuration as a new, linked run.
    Reproduce {
        /// The run.
        run_id: String,
        /// Compare every metric step by step with the original.
        #[arg(long)]
        verify: bool,
        /// Proceed although the instance or class images changed.
        #[arg(long)]
        allow_data_change: bool,
    },
    /// Write a self-contained HTML dashboard of a sweep: table, curves, validation image grid.
    Dashboard {
        /// Sweep id or name.
        sweep: String,
        /// Output file (default `ROOT/dashboards/<sweep-id>.html`, under the output root).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Send what runs spooled for Weights & Biases (offline mode, or while W&B was unreachable).
    Sync {
        /// A run id, or a sweep id or name; every run under the root when omitted.
        target: Option<String>,
    },
    /// List the GPUs runs can use (nvidia-smi, after CUDA_VISIBLE_DEVICES).
    Gpus {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sample images from a model folder or `builtin:tiny` (DDIM, classifier-free guidance).
    Sample(sample::SampleArgs),
    /// Train one experiment file, or one registered run, resuming from its last checkpoint.
    Train(train::TrainArgs),
    /// Show the whole lineage record of one run.
    Show {
        /// The run id.
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Writes `value` as pretty JSON and a newline.
fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

/// Trains one attempt of the registered run `run_id`, printing where it trains and how it
/// ended (progress and warnings go to stderr).
fn train_attempt(
    store: &mut Store,
    run_id: &str,
    config: ExperimentConfig,
    options: &AttemptOptions,
    env: &[(String, String)],
    root: &Path,
    out: &mut dyn Write,
) -> Result<Kind, Error> {
    let notify = Box::new(|notice: crate::train::Notice| eprintln!("{}", notice.line()));
    let attempt = Attempt::begin(store, run_id, config, options, env, root, notify)?;
    if let Some(warning) = &attempt.warning {
        eprintln!("warning: {warning}");
    }
    writeln!(out, "run {run_id}: attempt {}, folder {}", attempt.number(), attempt.run_dir().display())?;
    let outcome = attempt.train(store)?;
    writeln!(out, "run {run_id}: {outcome}")?;
    if let Some(note) = &outcome.train.wandb_undelivered {
        writeln!(out, "run {run_id}: {note}")?;
    }
    Ok(outcome.kind())
}

/// Opens the lineage store under `root` for command `what`, which writes to it.
fn open_store(root: &Path, what: &str) -> Result<Store, Error> {
    let db = root.join(DB_FILE);
    Store::open_existing(&db)?.ok_or_else(|| no_store(what, &db))
}

/// Opens the lineage store under `root` only to read, for command `what` (works on archived
/// and read-only results).
fn read_store(root: &Path, what: &str) -> Result<Store, Error> {
    let db = root.join(DB_FILE);
    Store::open_read_only(&db)?.ok_or_else(|| no_store(what, &db))
}

fn no_store(what: &str, db: &Path) -> Error {
    Error::Usage(format!(
        "{what}: no lineage store at {} (nothing has run under this root; give the root with --root or DBSWEEP_ROOT)",
        db.display()
    ))
}

/// Runs `cli` with the process environment `env`, writing results to `out`; returns how a
/// command that did not fail ended (`Ok`, or runs failed or were interrupted).
pub fn run(cli: Cli, env: &[(String, String)], out: &mut dyn Write) -> Result<Kind, Error> {
    let root = cli.root.as_path();
    let db = root.join(DB_FILE);
    let done = |result: Result<(), Error>| result.map(|()| Kind::Ok);
    match cli.command {
        Command::Plan { sweep, json } => done(plan::plan(&sweep, env, &db, json, out)),
        Command::Submit { sweep, rerun, json } => done(plan::submit(&sweep, env, &db, rerun, json, out)),
        Command::Ls { sweep, json } => done(ls::ls(&db, sweep.as_deref(), json, out)),
        Command::Show { run_id, json } => done(show::show(&db, &run_id, json, out)),
        Command::Sample(args) => done(sample::sample(&args, env, root, out)),
        Command::Train(args) => train::train(&args, env, root, out),
        Command::Run { sweep, rerun, schedule } => run::run(&sweep, rerun, &schedule, env, root, out),
        Command::Resume { sweep, schedule } => run::resume(&sweep, &schedule, env, root, out),
        Command::Gpus { json } => done(run::gpus(env, json, out)),
        Command::Sync { target } => done(sync::sync(root, target.as_deref(), env, out)),
        Command::Compare { sweep, metric, sort, format, json, csv } => {
            let format = if json {
                compare::Format::Json
            } else if csv {
                compare::Format::Csv
            } else {
                format
            };
            done(compare::compare(root, &sweep, metric.as_deref(), sort, format, out))
        }
        Command::Best { sweep, pareto: Some(axes), json, .. } => done(compare::pareto(root, &sweep, &axes, json, out)),
        Command::Best { sweep, metric, goal, json, pareto: None } => {
            done(compare::best(root, &sweep, metric.as_deref(), goal, json, out))
        }
        Command::Export { reference, format, out: dir } => done(export::export(root, &reference, &format, &dir, out)),
        Command::Eval { target, set, json } => done(eval::eval(root, &target, &set, env, json, out)),
        Command::Dashboard { sweep, out: file } => done(dashboard::dashboard(root, &sweep, file.as_deref(), out)),
        Command::Tensorboard { sweep } => done(tensorboard::tensorboard(root, &sweep, out)),
        Command::Gc { sweep, keep, dry_run } => done(gc::gc(root, &sweep, keep, dry_run, out)),
        Command::Reproduce { run_id, verify, allow_data_change } => {
            reproduce::reproduce(root, &run_id, verify, allow_data_change, env, out)
        }
    }
}
