//! Unit tests of the Slurm backend's parsing and naming (the backend itself is tested end to
//! end against a real one-node cluster in `tests/slurm.rs`).

use std::path::Path;

use super::command::parse_squeue;
use super::job::{output_pattern, parse_comment, sbatch_args, wrap_script};
use super::state::{ExitCode, base_state, verdict};
use super::{SlurmOptions, TrainCommand};
use crate::scheduler::dispatch::Verdict;
use crate::store::RunStatus;

#[test]
fn exit_codes_parse_in_both_forms() {
    assert_eq!(ExitCode::parse("0:0"), Some(ExitCode { code: 0, signal: 0 }));
    assert_eq!(ExitCode::parse("3:0"), Some(ExitCode { code: 3, signal: 0 }));
    assert_eq!(ExitCode::parse("0:6").map(ExitCode::value), Some(134));
    assert_eq!(ExitCode::parse("33280").map(ExitCode::value), Some(130), "raw wait status of exit 130");
    assert_eq!(ExitCode::parse("6").map(ExitCode::value), Some(134), "raw wait status of SIGABRT");
    assert_eq!(ExitCode::parse("n/a"), None);
}

#[test]
fn squeue_lines_parse_and_odd_lines_are_skipped() {
    let text = "12|RUNNING|None|0|dbsweep-a-b-1|dbsweep orchestrator h pid 7 attempt 2|/r/runs/x/slurm-%j.log\n\
                garbage\n13|CANCELLED+|None|33280|wrap|(null)|/tmp/a|b.log\n";
    let jobs = parse_squeue(text);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].state, "RUNNING");
    assert_eq!(parse_comment(&jobs[0].comment), Some(("h".into(), 7, 2)));
    assert_eq!(jobs[1].state, "CANCELLED");
    assert_eq!(jobs[1].stdout, "/tmp/a|b.log");
    assert_eq!(parse_comment("(null)"), None);
    assert_eq!(base_state("CANCELLED by 0"), "CANCELLED");
}

#[test]
fn states_map_to_outcomes() {
    let ok = ExitCode::default();
    let code = |c| ExitCode { code: c, signal: 0 };
    let abort = ExitCode { code: 0, signal: 6 };
    use RunStatus::{Failed, Finished, Interrupted, Running};
    assert_eq!(verdict("1", "COMPLETED", ok, Finished, None, false), Verdict::Finished);
    assert_eq!(verdict("1", "COMPLETED", ok, Interrupted, None, false), Verdict::Interrupted);
    assert!(matches!(verdict("1", "COMPLETED", ok, Running, None, false), Verdict::Failed(_)));
    assert_eq!(verdict("1", "CANCELLED", code(130), Interrupted, None, false), Verdict::Interrupted);
    assert_eq!(verdict("1", "CANCELLED", ok, Running, None, false), Verdict::Interrupted);
    assert_eq!(verdict("1", "FAILED", code(130), Interrupted, None, true), Verdict::Interrupted);
    assert_eq!(verdict("1", "FAILED", abort, Running, None, true), Verdict::Interrupted, "stopped by us");
    let Verdict::Failed(why) = verdict("9", "FAILED", abort, Running, None, false) else { panic!() };
    assert!(why.contains("job 9") && why.contains("signal 6"), "{why}");
    let Verdict::Failed(why) = verdict("9", "FAILED", code(3), Failed, Some("bad data"), false) else { panic!() };
    assert!(why.starts_with("bad data") && why.contains("exit code 3"), "{why}");
    for (state, word) in [("TIMEOUT", "time limit"), ("OUT_OF_MEMORY", "memory"), ("NODE_FAIL", "node failed")] {
        let Verdict::Failed(why) = verdict("9", state, ok, Interrupted, None, false) else { panic!("{state}") };
        assert!(why.contains(word), "{why}");
    }
    assert_eq!(verdict("9", "TIMEOUT", ok, Finished, None, false), Verdict::Finished);
    assert_eq!(verdict("9", "PREEMPTED", ok, Interrupted, None, false), Verdict::Interrupted);
}

#[test]
fn the_batch_script_quotes_paths() {
    let script = wrap_script(Path::new("/opt/my bin/dbsweep"), Path::new("/data/it's"), "witty-ember-1b75a4");
    assert_eq!(
        script,
        "export RAYON_NUM_THREADS=\"${SLURM_CPUS_ON_NODE:-1}\"; exec '/opt/my bin/dbsweep' --root '/data/it'\\''s' train --run witty-ember-1b75a4 --claimed"
    );
    assert_eq!(output_pattern(Path::new("/r/100%"), "x"), "/r/100%%/runs/x/slurm-%j.log");
}

#[test]
fn sbatch_arguments_put_extra_ones_after_dbsweeps() {
    let command = TrainCommand { exe: "/bin/dbsweep".into(), root: "/r".into() };
    let mut opts = SlurmOptions::new(command, "h".into());
    opts.partition = Some("gpu".into());
    opts.time = Some("1:00:00".into());
    opts.extra_args = vec!["--account=lab".into()];
    let args = sbatch_args(&opts, "x", 2);
    let pos = |a: &str| args.iter().position(|x| x == a).unwrap_or_else(|| panic!("{a} in {args:?}"));
    assert!(pos("--gres=gpu:1") < pos("--account=lab"));
    assert!(pos("--partition=gpu") < pos("--account=lab") && pos("--time=1:00:00") > 0);
    assert!(args.contains(&format!("--comment=dbsweep orchestrator h pid {} attempt 2", std::process::id())));
    assert!(args.last().is_some_and(|a| a.starts_with("--wrap=export RAYON")));
    opts.gres = None;
    assert!(!sbatch_args(&opts, "x", 1).iter().any(|a| a.starts_with("--gres")));
}
