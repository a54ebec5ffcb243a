//! The command line: clap definitions and one small module per command. Commands parse,
//! call the library, and print; they hold no logic of their own.

mod dashboard;
mod live;
mod ls;
mod plan;
mod report;
mod run;
mod sample;
mod show;
mod sync;
mod table;
mod train;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;
use crate::store::{DB_FILE, StoreError};

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
        format: report::Format,
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
        goal: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a checkpoint (`RUN_ID`, `RUN_ID@STEP` or `best:SWEEP`) as a diffusers model folder.
    Export {
        /// The checkpoint.
        reference: String,
        /// Only `diffusers`.
        #[arg(long, default_value = "diffusers", value_parser = ["diffusers"])]
        format: String,
        /// The folder to create.
        out: PathBuf,
    },
    /// Print the TensorBoard command that shows a sweep's runs under readable names.
    Tensorboard {
        /// Sweep id or name.
        sweep: String,
    },
    /// Delete a sweep's checkpoints except the best and/or last; never the one `best` returns.
    Gc {
        /// Sweep id or name.
        sweep: String,
        /// What to keep.
        #[arg(long, default_value = "best,last")]
        keep: String,
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
        /// Output file (default `dashboards/<sweep-id>.html`).
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

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sweep or configuration file, variable or flag is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The lineage store failed or lacks what was asked for.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// A model folder is unusable, or computing with it failed.
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// A tensor computation failed.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Training failed.
    #[error("{0}")]
    Train(#[from] crate::train::trainer::TrainError),
    /// Delivering tracking data (W&B) failed.
    #[error("{0}")]
    Tracking(#[from] crate::tracking::TrackingError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Writes `value` as pretty JSON and a newline.
fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

/// Runs `cli` with the process environment `env`, writing results to `out`; returns the exit
/// code of a command that succeeded (0, or 130 for an interrupted training run).
pub fn run(cli: Cli, env: &[(String, String)], out: &mut dyn Write) -> Result<i32, Error> {
    let db = cli.root.join(DB_FILE);
    let done = |result: Result<(), Error>| result.map(|()| crate::exit::OK);
    match cli.command {
        Command::Plan { sweep, json } => done(plan::plan(&sweep, env, &db, json, out)),
        Command::Submit { sweep, rerun, json } => done(plan::submit(&sweep, env, &db, rerun, json, out)),
        Command::Ls { sweep, json } => done(ls::ls(&db, sweep.as_deref(), json, out)),
        Command::Show { run_id, json } => done(show::show(&db, &run_id, json, out)),
        Command::Sample(args) => done(sample::sample(&args, env, &cli.root, out)),
        Command::Train(args) => train::train(&args, env, &cli.root, out),
        Command::Run { sweep, rerun, schedule } => run::run(&sweep, rerun, &schedule, env, &cli.root, out),
        Command::Resume { sweep, schedule } => run::resume(&sweep, &schedule, env, &cli.root, out),
        Command::Gpus { json } => done(run::gpus(env, json, out)),
        Command::Sync { target } => done(sync::sync(&cli.root, target.as_deref(), env, out)),
        Command::Compare { sweep, metric, sort, format, json, csv } => {
            let format = if json {
                report::Format::Json
            } else if csv {
                report::Format::Csv
            } else {
                format
            };
            done(report::compare_cmd(&cli.root, &sweep, metric.as_deref(), sort, format, out))
        }
        Command::Best { sweep, metric, goal, json } => {
            done(report::best_cmd(&cli.root, &sweep, metric.as_deref(), goal.as_deref(), json, out))
        }
        Command::Export { reference, format: _, out: dir } => {
            done(report::export_cmd(&cli.root, &reference, &dir, out))
        }
        Command::Dashboard { sweep, out: file } => done(dashboard::dashboard(&cli.root, &sweep, file.as_deref(), out)),
        Command::Tensorboard { sweep } => done(report::tensorboard_cmd(&cli.root, &sweep, out)),
        Command::Gc { sweep, keep } => done(report::gc_cmd(&cli.root, &sweep, &keep, out)),
        Command::Reproduce { run_id, verify, allow_data_change } => {
            report::reproduce_cmd(&cli.root, &run_id, verify, allow_data_change, env, out)
        }
    }
}
