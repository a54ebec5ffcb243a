//! `dbsweep compare` and `dbsweep best`: a sweep's runs side by side, and the best one.

use std::io::Write;
use std::path::Path;

use super::{Error, print_json, read_store, table};
use crate::report::compare::{self, Comparison, Row};
use crate::report::pareto::{self, Axis};
use crate::sweep::Goal;

/// Output format of `compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON.
    Json,
    /// CSV (numbers at full precision).
    Csv,
}

/// `dbsweep compare SWEEP`.
pub fn compare(
    root: &Path,
    sweep: &str,
    metric: Option<&str>,
    sort: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let store = read_store(root, "compare")?;
    let c: Comparison = compare::compare(&store, sweep, metric, None)?;
    let rows: Vec<&Row> = if sort { c.sorted() } else { c.rows.iter().collect() };
    if format == Format::Json {
        let doc = serde_json::json!({"sweep_id": c.sweep_id, "metric": c.metric, "goal": c.goal, "rows": rows});
        return print_json(out, &doc);
    }
    // A table rounds for reading; CSV keeps every digit (the shortest text that reads back
    // as the same number).
    let number = |v: Option<f64>| match (v, format) {
        (None, _) => "-".to_string(),
        (Some(x), Format::Csv) => x.to_string(),
        (Some(x), _) => format!("{x:.6}"),
    };
    let mut headers = vec!["RUN ID".to_string()];
    headers.extend(c.keys.iter().cloned());
    headers.extend(["STATUS", "FINAL", "BEST", "BEST STEP", "STEPS", "WALL S", "GPU H"].map(String::from));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.run_id.clone()];
            row.extend(c.keys.iter().map(|k| r.swept.get(k).map(table::cell).unwrap_or_default()));
            row.extend([
                r.status.to_string(),
                number(r.final_value),
                number(r.best_value),
                r.best_step.map_or("-".into(), |s| s.to_string()),
                r.steps.to_string(),
                format!("{:.1}", r.wall_seconds),
                format!("{:.3}", r.gpu_hours),
            ]);
            row
        })
        .collect();
    if format == Format::Csv {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
        };
        for line in std::iter::once(&headers).chain(&cells) {
            writeln!(out, "{}", line.iter().map(|s| quote(s)).collect::<Vec<_>>().join(","))?;
        }
        return Ok(());
    }
    writeln!(out, "sweep {}: {} ({})", c.sweep_id, c.metric, c.goal)?;
    write!(out, "{}", table::render(&headers, &cells))?;
    Ok(())
}

/// `dbsweep best SWEEP`.
pub fn best(
    root: &Path,
    sweep: &str,
    metric: Option<&str>,
    goal: Option<Goal>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let store = read_store(root, "best")?;
    let c = compare::compare(&store, sweep, metric, goal)?;
    let best = compare::best(&store, &c)?.ok_or_else(|| {
        Error::Usage(format!("no run of sweep `{}` has both `{}` and a checkpoint", c.sweep_id, c.metric))
    })?;
    if json {
        return print_json(out, &best);
    }
    writeln!(out, "best run   {} ({} = {:.6} at step {})", best.run_id, c.metric, best.value, best.step)?;
    writeln!(
        out,
        "checkpoint step {}: {}",
        best.checkpoint_step,
        root.join("runs").join(&best.run_id).join(&best.checkpoint_path).display()
    )?;
    writeln!(out, "rule       {}", best.rule)?;
    Ok(())
}

/// `dbsweep best SWEEP --pareto X,Y`: the points on the front of two metrics, best first by X.
pub fn pareto(root: &Path, sweep: &str, axes: &str, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let parsed: Vec<Axis> =
        axes.split(',').map(|a| a.trim().parse().map_err(Error::Usage)).collect::<Result<_, _>>()?;
    let [x, y] = <[Axis; 2]>::try_from(parsed)
        .map_err(|_| Error::Usage(format!("--pareto {axes}: expected two metrics, e.g. eval/dino,eval/clip_t")))?;
    let store = read_store(root, "best --pareto")?;
    let front = pareto::front(&store, sweep, [x, y])?;
    if json {
        return print_json(out, &front);
    }
    let [x, y] = &front.axes;
    let headers = ["RUN ID", "STEP", x.metric.as_str(), y.metric.as_str(), "CHECKPOINT"].map(String::from).to_vec();
    let cells: Vec<Vec<String>> = front.points[..front.front]
        .iter()
        .map(|p| {
            let checkpoint = if p.checkpoint { "yes" } else { "-" };
            vec![p.run_id.clone(), p.step.to_string(), format!("{:.6}", p.x), format!("{:.6}", p.y), checkpoint.into()]
        })
        .collect();
    write!(out, "{}", table::render(&headers, &cells))?;
    if let Some(b) = &front.base {
        writeln!(out, "base model (step 0): {} {:.6}, {} {:.6}", x.metric, b.x, y.metric, b.y)?;
    }
    writeln!(out, "rule: {}", front.rule)?;
    Ok(())
}
