//! `dbsweep plan` and `dbsweep submit`: expand a sweep file; show it, or register it. A bayes
//! sweep shows its random phase and says that its later runs depend on results.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::{Error, SweepArgs, table};
use crate::store::{CodeVersion, Store};
use crate::sweep::{self, Method, Plan, bayes};
use crate::train::preflight;

/// The sweep file's plan, checked as far as it can be before anything trains.
fn build(args: &SweepArgs, env: &[(String, String)]) -> Result<Plan, Error> {
    let spec = sweep::load(&args.sweep)?;
    let plan = Plan::build(spec, env.iter().cloned(), &args.set)?;
    preflight::check_plan(&plan, env)?;
    Ok(plan)
}

fn header(plan: &Plan) -> String {
    let metric = plan.spec.metric.as_ref().map(|m| format!(", {} {}", m.goal.as_str(), m.name)).unwrap_or_default();
    let runs = match (plan.spec.method, plan.spec.run_cap) {
        (Method::Bayes, Some(cap)) => format!("up to {cap} runs"),
        _ => format!("{} runs", plan.runs.len()),
    };
    format!(
        "sweep {} ({}, {runs}{metric}) from {}\n",
        plan.sweep_id,
        plan.spec.method.as_str(),
        plan.spec.file.display()
    )
}

/// What `plan` says of a bayes sweep's runs after its random phase, or `None` for a sweep
/// whose plan lists every run.
fn later_runs(plan: &Plan) -> Option<String> {
    let (Method::Bayes, Some(cap)) = (plan.spec.method, plan.spec.run_cap) else { return None };
    let known = plan.runs.len() as u64;
    let phase = format!(
        "runs #0-#{} are the random phase ({known} random draws, the same whatever the results)",
        known.saturating_sub(1)
    );
    if cap <= known {
        return Some(format!("{phase}.\n"));
    }
    Some(format!(
        "{phase}; runs #{known}-#{} depend on results: each is proposed by TPE from the runs that have one when a \
         slot frees up (with several slots, a proposal made before {} runs have results is a random draw too).\n",
        cap - 1,
        bayes::N_STARTUP
    ))
}

fn swept_cells(plan: &Plan, run: &sweep::PlannedRun) -> Vec<String> {
    plan.values(run).map(table::cell).collect()
}

/// `dbsweep plan`: prints the runs, and for each whether the store already has it.
pub fn plan(
    args: &SweepArgs,
    env: &[(String, String)],
    db: &Path,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let plan = build(args, env)?;
    let hashes: Vec<_> = plan.runs.iter().map(|r| r.config_hash).collect();
    let known = match Store::open_read_only(db)? {
        Some(store) => store.runs_by_hash(&hashes)?,
        None => HashMap::new(),
    };
    let in_store = |run: &sweep::PlannedRun| known.get(&run.config_hash);
    if as_json {
        let runs: Vec<Value> = plan
            .runs
            .iter()
            .map(|r| {
                let values: serde_json::Map<String, Value> = plan.keys.iter().cloned().zip(plan.values(r).cloned()).collect();
                let stored = in_store(r).map(|(id, status)| json!({"run_id": id, "status": status}));
                json!({"position": r.position, "run_id": r.run_id, "config_hash": r.config_hash.to_string(), "values": values, "in_store": stored})
            })
            .collect();
        let mut doc = json!({
            "sweep_id": plan.sweep_id, "name": plan.spec.name, "method": plan.spec.method.as_str(),
            "metric": plan.spec.metric.as_ref().map(|m| json!({"name": m.name, "goal": m.goal.as_str()})),
            "keys": plan.keys, "runs": runs,
        });
        if let Some(note) = later_runs(&plan) {
            doc["run_cap"] = json!(plan.spec.run_cap);
            doc["note"] = json!(note.trim_end());
        }
        super::print_json(out, &doc)?;
        return Ok(());
    }
    let mut headers = vec!["#".to_string(), "RUN ID".to_string()];
    headers.extend(plan.keys.iter().cloned());
    headers.push("IN STORE".into());
    let rows: Vec<Vec<String>> = plan
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![r.position.to_string(), r.run_id.clone()];
            row.extend(swept_cells(&plan, r));
            row.push(match in_store(r) {
                Some((id, status)) if *id == r.run_id => status.to_string(),
                Some((id, status)) => format!("{status} as {id}"),
                None => "-".into(),
            });
            row
        })
        .collect();
    write!(out, "{}{}", header(&plan), table::render(&headers, &rows))?;
    if let Some(note) = later_runs(&plan) {
        write!(out, "{note}")?;
    }
    Ok(())
}

/// `dbsweep submit`: registers the sweep and its runs.
pub fn submit(
    args: &SweepArgs,
    env: &[(String, String)],
    db: &Path,
    rerun: bool,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let plan = build(args, env)?;
    let mut store = Store::open(db)?;
    let reg = store.register(&plan, &CodeVersion::current(), rerun)?;
    if as_json {
        super::print_json(out, &reg)?;
        return Ok(());
    }
    let new = reg.runs.iter().filter(|r| r.outcome != crate::store::Outcome::Existing).count();
    let verb = if reg.sweep_created { "registered" } else { "already registered" };
    write!(out, "{}", header(&plan))?;
    if plan.spec.method == Method::Bayes {
        let path = store.path().display();
        writeln!(out, "{verb} in {path}: its runs are proposed one by one as `dbsweep run` or `resume` frees slots")?;
        return Ok(());
    }
    writeln!(out, "{verb} in {}: {new} new runs, {} reused", store.path().display(), reg.runs.len() - new)?;
    let mut headers = vec!["#".to_string(), "RUN ID".to_string()];
    headers.extend(plan.keys.iter().cloned());
    headers.extend(["STATUS".to_string(), "REGISTERED".to_string()]);
    let rows: Vec<Vec<String>> = plan
        .runs
        .iter()
        .zip(&reg.runs)
        .map(|(planned, r)| {
            let mut row = vec![r.position.to_string(), r.run_id.clone()];
            row.extend(swept_cells(&plan, planned));
            row.push(r.status.to_string());
            row.push(match &r.outcome {
                crate::store::Outcome::New => "new".into(),
                crate::store::Outcome::Rerun(of) => format!("rerun of {of}"),
                crate::store::Outcome::Existing => "existing".into(),
            });
            row
        })
        .collect();
    write!(out, "{}", table::render(&headers, &rows))?;
    Ok(())
}
