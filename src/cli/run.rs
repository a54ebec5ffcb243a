//! `dbsweep run`, `dbsweep resume` and `dbsweep gpus`: run a sweep's runs on this machine.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::io::IsTerminal;

use super::live::{Mode, View};
use super::{Error, SweepArgs, print_json, table};
use crate::exit::Kind;
use crate::scheduler::local::{LocalBackend, TrainCommand};
use crate::scheduler::slurm::{SlurmBackend, SlurmOptions};
use crate::scheduler::{self, DispatchOptions, Event, GpuSelection, Slot, gpus, slots};
use crate::store::{CodeVersion, Store, host_name};
use crate::sweep::bayes::Searcher;
use crate::sweep::{self, Plan};
use crate::train::preflight;

/// Where runs train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// This machine: one child process per run on GPU or CPU slots.
    Local,
    /// A Slurm cluster: one batch job per run (`sbatch`), the output root on a shared filesystem.
    Slurm,
}

/// Scheduling options shared by `run` and `resume`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// GPUs to use (local backend): `all`, `none` (CPU slots) or indices like `0,2`.
    #[arg(long, default_value = "all")]
    pub gpus: GpuSelection,
    /// GPUs given to each run.
    #[arg(long, default_value_t = 1)]
    pub gpus_per_run: usize,
    /// Runs sharing one GPU (local backend).
    #[arg(long, default_value_t = 1)]
    pub runs_per_gpu: usize,
    /// Most runs at once (CPU slots: default 1, cores are split between slots; Slurm: jobs in
    /// flight, default all, Slurm queues them).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Retries of a failed run, each resuming from its last checkpoint.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,
    /// Stop launching runs at the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Where runs train: `local` (this machine) or `slurm` (one `sbatch` job per run).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// Slurm: the partition to submit to.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: generic resources per run, e.g. `gpu:2` or `gpu:a100:1`; `none` for none
    /// [default: gpu:<gpus-per-run>].
    #[arg(long)]
    pub gres: Option<String>,
    /// Slurm: time limit per job, e.g. `4:00:00` (a job that reaches it fails and is retried from
    /// its checkpoint).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: one more `sbatch` argument, e.g. `--slurm-arg=--account=lab` (repeatable; placed
    /// after dbsweep's own, so it can override them).
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_args: Vec<String>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Counts SIGINT/SIGTERM deliveries: the first asks runs to checkpoint and stop, the second
/// kills them.
fn stop_counter() -> Result<Arc<AtomicUsize>, Error> {
    let count = Arc::new(AtomicUsize::new(0));
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(Error::Output)?;
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for _ in signals.forever() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Ok(count)
}

/// How the registered sweep `sweep_id` is dispatched: the flags' policy, and its
/// early-termination rule and a bayes sweep's searcher, read back from the store.
fn dispatch_options(store: &Store, sweep_id: &str, args: &ScheduleArgs) -> Result<DispatchOptions, Error> {
    let stored = store.stored_sweep(sweep_id)?;
    let doc = crate::config::yaml::YamlDoc { value: stored.spec, map: crate::config::SourceMap::new(&stored.file) };
    let spec = sweep::parse(doc)?;
    let search = match spec.method {
        sweep::Method::Bayes => Some(Searcher::from_stored(&spec, stored.base)?),
        sweep::Method::Grid | sweep::Method::Random => None,
    };
    let early = match (spec.early_terminate, spec.metric) {
        (Some(rule), Some(metric)) => Some((sweep::Hyperband { rule, goal: metric.goal }, metric.name)),
        _ => None,
    };
    Ok(DispatchOptions {
        host: host_name(),
        max_retries: args.max_retries,
        fail_fast: args.fail_fast,
        immediate_failure: Duration::from_secs(10),
        max_immediate_failures: 3,
        early,
        search,
    })
}

/// The slots of the local backend: the GPUs `--gpus` names (each must exist), or CPU slots.
fn local_slots(args: &ScheduleArgs, env: &[(String, String)]) -> Result<Vec<Slot>, Error> {
    let found = gpus::discover(env).map_err(Error::Usage)?;
    let indices: Vec<u32> = match &args.gpus {
        GpuSelection::None => Vec::new(),
        GpuSelection::All => found.iter().map(|g| g.index).collect(),
        GpuSelection::List(list) => {
            if let Some(missing) = list.iter().find(|i| !found.iter().any(|g| g.index == **i)) {
                let have = if found.is_empty() {
                    "this machine has no GPU that dbsweep can use (nvidia-smi lists none); use `--gpus none` (or \
                     leave `--gpus` out) for CPU slots"
                        .to_string()
                } else {
                    let list: Vec<String> = found.iter().map(|g| format!("{} ({})", g.index, g.name)).collect();
                    format!("the GPUs here are {}", list.join(", "))
                };
                return Err(Error::Usage(format!("--gpus: no GPU {missing}: {have}")));
            }
            list.clone()
        }
    };
    slots::plan(&indices, args.gpus_per_run, args.runs_per_gpu, args.max_parallel, cores()).map_err(Error::Usage)
}

/// The backend the flags ask for, checked before anything is written.
fn backend(args: &ScheduleArgs, env: &[(String, String)], root: &Path) -> Result<Box<dyn scheduler::Backend>, Error> {
    let command = TrainCommand { exe: std::env::current_exe().map_err(Error::Output)?, root: root.to_path_buf() };
    Ok(match args.backend {
        Backend::Local => {
            let slurm_only = [
                ("--partition", args.partition.is_some()),
                ("--gres", args.gres.is_some()),
                ("--time", args.time.is_some()),
                ("--slurm-arg", !args.slurm_args.is_empty()),
            ];
            if let Some((flag, _)) = slurm_only.iter().find(|(_, given)| *given) {
                return Err(Error::Usage(format!("{flag} applies to `--backend slurm`")));
            }
            Box::new(LocalBackend::new(local_slots(args, env)?, command, host_name()))
        }
        Backend::Slurm => Box::new(SlurmBackend::new(slurm_options(args, env, command, host_name())?)),
    })
}

/// Runs the registered sweep `sweep_id` on `backend` and shows its events.
fn schedule(
    store: &mut Store,
    sweep_id: &str,
    mut backend: Box<dyn scheduler::Backend>,
    args: &ScheduleArgs,
    out: &mut dyn Write,
) -> Result<Kind, Error> {
    let opts = dispatch_options(store, sweep_id, args)?;
    let total = opts.search.as_ref().map(|s| s.run_cap() as usize);
    let stop = stop_counter()?;
    let mut write_err = None;
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Plain
    };
    let rows = store.sweep_runs(sweep_id)?;
    let finished = rows.iter().filter(|r| r.status == crate::store::RunStatus::Finished).count();
    let mut view = View::new(mode, total.unwrap_or(rows.len()), finished);
    let mut report = |event: Event| {
        if let Err(e) = view.show(&event, out) {
            write_err.get_or_insert(e);
        }
    };
    let summary = scheduler::dispatch(store, sweep_id, backend.as_mut(), &opts, &stop, &mut report)?;
    if let Some(e) = write_err {
        return Err(Error::Output(e));
    }
    Ok(summary.kind())
}

/// The Slurm backend's options from the flags and `SLURM_CONF`.
fn slurm_options(
    args: &ScheduleArgs,
    env: &[(String, String)],
    command: TrainCommand,
    host: String,
) -> Result<SlurmOptions, Error> {
    if args.gpus_per_run == 0 {
        return Err(Error::Usage("--gpus-per-run must be at least 1 (use `--gres none` for jobs without GPUs)".into()));
    }
    let gres = match args.gres.as_deref().map(str::trim) {
        None => Some(format!("gpu:{}", args.gpus_per_run)),
        Some("none") => None,
        Some(g) if g.is_empty() || g.contains(char::is_whitespace) => {
            return Err(Error::Usage(format!("--gres `{g}`: expected e.g. gpu:1, gpu:a100:2 or none")));
        }
        Some(g) => Some(g.to_string()),
    };
    for (flag, value) in [("--partition", &args.partition), ("--time", &args.time)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty() || v.contains(char::is_whitespace)) {
            return Err(Error::Usage(format!("{flag}: expected one word, got `{}`", value.as_deref().unwrap_or(""))));
        }
    }
    let mut opts = SlurmOptions::new(command, host);
    // Jobs find the root by this path (on other nodes, from another folder): make it absolute.
    opts.command.root = std::path::absolute(&opts.command.root).map_err(Error::Output)?;
    opts.max_parallel = args.max_parallel;
    opts.gres = gres;
    opts.partition = args.partition.clone();
    opts.time = args.time.clone();
    opts.extra_args = args.slurm_args.clone();
    opts.slurm_conf = env.iter().find(|(k, _)| k == "SLURM_CONF").map(|(_, v)| v.into());
    // Slurm's commands retry a missing configuration file for a minute before they fail.
    if let Some(conf) = opts.slurm_conf.as_ref().filter(|c| !c.is_file()) {
        return Err(Error::Usage(format!("SLURM_CONF is `{}`, which is not a file", conf.display())));
    }
    Ok(opts)
}

/// `dbsweep run SWEEP.yaml`: registers the sweep (reusing finished runs) and runs it.
pub fn run(
    sweep_args: &SweepArgs,
    rerun: bool,
    args: &ScheduleArgs,
    env: &[(String, String)],
    root: &Path,
    out: &mut dyn Write,
) -> Result<Kind, Error> {
    let spec = sweep::load(&sweep_args.sweep)?;
    let plan = Plan::build(spec, env.iter().cloned(), &sweep_args.set)?;
    preflight::check_plan(&plan, env)?;
    let bayes = plan.spec.method == sweep::Method::Bayes;
    if bayes && rerun {
        return Err(Error::Usage(
            "--rerun applies to grid and random sweeps: a bayes sweep proposes its runs from its own results \
             (change its `seed:` for another sequence)"
                .into(),
        ));
    }
    let backend = backend(args, env, root)?;
    if bayes && args.backend == Backend::Slurm && args.max_parallel.is_none() {
        eprintln!(
            "warning: without --max-parallel every run of this bayes sweep is proposed at once, before any result \
             exists: give the number of jobs to run at a time"
        );
    }
    let mut store = Store::open(&root.join(crate::store::DB_FILE))?;
    let reg = store.register(&plan, &CodeVersion::current(), rerun)?;
    if !args.json {
        let runs = match (bayes, plan.spec.run_cap) {
            (true, Some(cap)) => format!("bayes, up to {cap} runs"),
            _ => format!("{} runs", reg.runs.len()),
        };
        writeln!(out, "sweep {} ({runs}) in {}", reg.sweep_id, root.display())?;
    }
    schedule(&mut store, &reg.sweep_id, backend, args, out)
}

/// `dbsweep resume SWEEP`: continues a registered sweep (id or name).
pub fn resume(
    sweep: &str,
    args: &ScheduleArgs,
    env: &[(String, String)],
    root: &Path,
    out: &mut dyn Write,
) -> Result<Kind, Error> {
    let backend = backend(args, env, root)?;
    let mut store = Store::open(&root.join(crate::store::DB_FILE))?;
    let id = store.sweep(sweep)?.id;
    schedule(&mut store, &id, backend, args, out)
}

/// `dbsweep gpus`: the GPUs this machine offers (after `CUDA_VISIBLE_DEVICES`).
pub fn gpus(env: &[(String, String)], as_json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let found = gpus::discover(env).map_err(Error::Usage)?;
    if as_json {
        return print_json(out, &found);
    }
    if found.is_empty() {
        writeln!(out, "no GPU found (nvidia-smi is missing or lists none): runs use CPU slots")?;
        return Ok(());
    }
    let headers: Vec<String> = ["INDEX", "NAME", "MEMORY (MiB)", "USED (MiB)", "UTIL %"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|g| {
            vec![
                g.index.to_string(),
                g.name.clone(),
                g.memory_total_mib.to_string(),
                g.memory_used_mib.to_string(),
                g.utilization_percent.to_string(),
            ]
        })
        .collect();
    write!(out, "{}", table::render(&headers, &rows))?;
    Ok(())
}
