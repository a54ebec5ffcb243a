//! `dbsweep reproduce RUN_ID [--verify] [--allow-data-change]`.

use std::io::Write;
use std::path::Path;

use super::{Error, open_store, train_attempt};
use crate::exit::Kind;
use crate::report::reproduce::{self, Verdict};
use crate::train::attempt::AttemptOptions;

/// Retrains run `run` from its stored configuration as a new, linked run; with `verify`,
/// compares every metric step by step (a difference ends with runs-failed).
pub fn reproduce(
    root: &Path,
    run: &str,
    verify: bool,
    allow_data_change: bool,
    env: &[(String, String)],
    out: &mut dyn Write,
) -> Result<Kind, Error> {
    let mut store = open_store(root, "reproduce")?;
    let r = reproduce::register(&mut store, run, allow_data_change)?;
    if let Some(warning) = &r.code_warning {
        writeln!(out, "warning: {warning}")?;
    }
    writeln!(out, "reproducing {run} as {}", r.run_id)?;
    let kind = train_attempt(&mut store, &r.run_id, r.config, &AttemptOptions::default(), env, root, out)?;
    if kind != Kind::Ok || !verify {
        return Ok(kind);
    }
    let v = reproduce::verify(&store, run, &r.run_id)?;
    if v.class_images_differ {
        writeln!(out, "verify: the class images differ from the original run's")?;
    }
    Ok(match v.verdict {
        Verdict::Identical { points } => {
            writeln!(out, "verify: identical ({points} metric points, every step)")?;
            Kind::Ok
        }
        Verdict::Misaligned { key, original, reproduced } => {
            writeln!(out, "verify: {key} has {original} points in {run} and {reproduced} in {}", r.run_id)?;
            Kind::Failed
        }
        Verdict::Differs { deviation, key, step, points } => {
            writeln!(
                out,
                "verify: differs; largest deviation {deviation:e} in {key} at step {step} ({points} points compared)"
            )?;
            Kind::Failed
        }
    })
}
