//! One self-contained HTML dashboard per sweep: the parameter table (sortable), loss and
//! validation curves as inline SVG, the grid of each run's latest validation image, the best run
//! marked and links to the run folders. Nothing is fetched when the page is viewed: styles and
//! script are inline, images are `data:` URIs, charts are drawn here as SVG.
//!
//! Layout choices:
//!
//! - The swept keys are ordered as in the sweep file. The store keeps them by name, so the order
//!   is recovered from the runs' expansion order: in a grid the first parameter changes least
//!   often from one run to the next, the last one most often. Keys with a single value are not
//!   axes.
//! - The image grid has the first swept key down and the second across. With a third (and
//!   further) swept key, there is one grid per combination of the other keys' values, so every
//!   run's image is shown (for `sweeps/lr_grid.yaml`: one learning rate x prior-loss weight grid
//!   per `train.epochs`).
//! - A run's "best" value is the smallest (goal `minimize`) or largest (`maximize`) value the
//!   sweep metric reached in that run; the best run is the one whose best value wins. Runs
//!   without the metric are not eligible, and a sweep that declares no metric has no best run
//!   (its table then shows `val/loss`).
//! - The table is sorted by clicking a header (again: descending). The page also honours
//!   `?sort=KEY&dir=asc|desc` at load, where KEY is a header's `data-key` (`run`, `status`,
//!   `final`, `best`, `steps`, or a swept key), and exposes `window.dbsweepSort(key, dir)`.
//!   When its script has run, `<body>` carries `data-ready="1"`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::store::{RunRow, RunStatus, Store, StoreError, SweepSummary};

/// The curves drawn, one chart each.
pub const CURVES: [&str; 3] = ["train/loss", "val/loss", "val/prior_drift"];

/// The metric ranked when a sweep declares none (no best run is marked then).
const DEFAULT_METRIC: &str = "val/loss";

/// A run's latest validation image.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Path relative to the run folder, e.g. `samples/step-00000016/prompt0-0.png`.
    pub path: String,
    /// Training step it was sampled at, when the path names one.
    pub step: Option<i64>,
    /// The PNG as a `data:` URI; `None` when the file could not be read.
    pub data_uri: Option<String>,
}

/// One run as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct RunView {
    /// Id, position, status and swept values.
    pub row: RunRow,
    /// Last value of the sweep metric.
    pub final_value: Option<f64>,
    /// Best value of the sweep metric over the run (by the goal).
    pub best_value: Option<f64>,
    /// Last training step recorded.
    pub steps: Option<i64>,
    /// Each of [`CURVES`] the run has, by key: (step, value) points.
    pub curves: BTreeMap<String, Vec<(i64, f64)>>,
    /// Latest validation image.
    pub sample: Option<Sample>,
    /// The run folder (absolute): ROOT/runs/RUN_ID.
    pub folder: PathBuf,
}

/// Everything one dashboard page shows.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// The sweep.
    pub sweep: SweepSummary,
    /// The metric in the table: the sweep's, or `val/loss` when it declares none.
    pub metric: String,
    /// Whether larger metric values are better.
    pub maximize: bool,
    /// Swept keys with more than one value, in sweep-file order (inferred, see the module doc).
    pub keys: Vec<String>,
    /// Runs in expansion order.
    pub runs: Vec<RunView>,
    /// Index into `runs` of the best run.
    pub best: Option<usize>,
}

/// Reads what the dashboard of sweep `key` (id or name) shows from `store`; run folders are
/// under `root`/runs.
pub fn collect(store: &Store, root: &Path, key: &str) -> Result<Dashboard, StoreError> {
    let sweep = store.sweep(key)?;
    let metric = sweep.metric.clone().unwrap_or_else(|| DEFAULT_METRIC.to_string());
    let maximize = sweep.goal.as_deref() == Some("maximize");
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let rows = store.sweep_runs(&sweep.id)?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        let rec = store.run(&row.id)?;
        let folder = root.join("runs").join(&row.id);
        let summary = rec.metrics.iter().find(|m| m.key == metric);
        let final_value = summary.map(|m| m.last).filter(|v| v.is_finite());
        let best_value = summary.map(|m| if maximize { m.max } else { m.min }).filter(|v| v.is_finite());
        let steps = rec
            .metrics
            .iter()
            .find(|m| m.key == "train/loss")
            .map(|m| m.last_step)
            .or_else(|| rec.metrics.iter().map(|m| m.last_step).max());
        let mut curves = BTreeMap::new();
        for curve in CURVES {
            let points: Vec<(i64, f64)> =
                store.metric_series(&row.id, curve)?.into_iter().filter(|(_, v)| v.is_finite()).collect();
            if !points.is_empty() {
                curves.insert(curve.to_string(), points);
            }
        }
        let sample = latest_sample(&rec.artifacts).map(|path| {
            let data_uri = std::fs::read(folder.join(&path)).ok().map(|bytes| {
                format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
            });
            Sample { step: step_of(&path), path, data_uri }
        });
        runs.push(RunView { row, final_value, best_value, steps, curves, sample, folder });
    }
    let keys = axis_keys(&runs);
    let best = if sweep.metric.is_some() { best_run(&runs, maximize) } else { None };
    Ok(Dashboard { sweep, metric, maximize, keys, runs, best })
}

/// The newest validation sample among `artifacts`, preferring the first prompt's first image.
fn latest_sample(artifacts: &[String]) -> Option<String> {
    let samples = artifacts.iter().filter(|p| p.starts_with("samples/") && p.ends_with(".png"));
    let first = samples.clone().filter(|p| p.ends_with("/prompt0-0.png")).max_by_key(|p| (step_of(p), p.as_str()));
    first.or_else(|| samples.max_by_key(|p| (step_of(p), p.as_str()))).cloned()
}

/// The step of a path with a `step-NNNNNNNN` component.
fn step_of(path: &str) -> Option<i64> {
    path.split('/').find_map(|c| c.strip_prefix("step-")).and_then(|s| s.parse().ok())
}

/// Swept keys with more than one value, the least often changing (in expansion order) first.
fn axis_keys(runs: &[RunView]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for run in runs {
        for key in run.row.swept.keys() {
            if !all.contains(key) {
                all.push(key.clone());
            }
        }
    }
    let value = |run: &RunView, key: &str| run.row.swept.get(key).cloned().unwrap_or(Value::Null);
    let mut keyed: Vec<(usize, String)> = all
        .into_iter()
        .filter(|k| runs.iter().any(|r| value(r, k) != value(&runs[0], k)))
        .map(|k| (runs.windows(2).filter(|w| value(&w[0], &k) != value(&w[1], &k)).count(), k))
        .collect();
    keyed.sort_by_key(|k| k.0);
    keyed.into_iter().map(|(_, k)| k).collect()
}

fn best_run(runs: &[RunView], maximize: bool) -> Option<usize> {
    let eligible = runs.iter().enumerate().filter_map(|(i, r)| r.best_value.map(|v| (i, v)));
    let best = if maximize {
        eligible.max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    } else {
        eligible.min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
    };
    best.map(|(i, _)| i)
}

/// Orders values: numbers numerically, then everything else by its text.
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => show_value(a).cmp(&show_value(b)),
    }
}

/// A value as text: strings without quotes, `-` for none.
fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A metric value, short.
fn show_number(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.5}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A `file://` URL of an absolute path, percent-encoding everything but unreserved characters
/// and `/`.
pub fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(b as char);
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url
}

/// Line colours, one per run (cycling).
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:.9em}.meta code{background:#f3f3f3;padding:0 3px}
table.runs{border-collapse:collapse;font-size:.9em}
table.runs th,table.runs td{border:1px solid #ddd;padding:4px 8px;text-align:left}
table.runs th{background:#f3f5f8;cursor:pointer;user-select:none;white-space:nowrap}
table.runs th[aria-sort=ascending]::after{content:" \25B2"}table.runs th[aria-sort=descending]::after{content:" \25BC"}
table.runs td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff6d5;font-weight:600}.star{color:#c90}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-weight:600;margin-bottom:4px}
ul.legend{list-style:none;padding:0;margin:4px 0 0;font-size:.8em;columns:2}ul.legend li.best{font-weight:700}
svg.chart{background:#fcfcfc;border:1px solid #e5e5e5}
table.grid{border-collapse:collapse;margin-bottom:16px}table.grid th,table.grid td{border:1px solid #ddd;padding:6px;text-align:center;font-size:.85em}
table.grid th{background:#f3f5f8}td.cell.best{outline:3px solid #e0a800;outline-offset:-3px;background:#fff6d5}
td.cell img{width:128px;height:128px;image-rendering:pixelated;display:block;margin:0 auto 4px}
.missing{display:block;width:128px;height:128px;line-height:128px;margin:0 auto 4px;background:#eee;color:#888}
.status-failed{color:#b00}.status-finished{color:#070}
"#;

const SCRIPT: &str = r#"
(function () {
  var table = document.getElementById('runs');
  function val(td) {
    var v = td.getAttribute('data-v');
    if (v === null || v === '') return null;
    var n = Number(v);
    return isNaN(n) ? v : n;
  }
  function sortBy(key, dir) {
    dir = dir === 'desc' ? 'desc' : 'asc';
    var ths = table.tHead.rows[0].cells, idx = -1;
    for (var i = 0; i < ths.length; i++) {
      if (ths[i].getAttribute('data-key') === key) idx = i;
      ths[i].removeAttribute('aria-sort');
    }
    if (idx < 0) return false;
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), sign = dir === 'desc' ? -1 : 1;
    rows.forEach(function (r, i) { r._pos = i; });
    rows.sort(function (a, b) {
      var x = val(a.cells[idx]), y = val(b.cells[idx]), c;
      if (x === null && y === null) c = 0;
      else if (x === null) return 1;
      else if (y === null) return -1;
      else if (typeof x === 'number' && typeof y === 'number') c = sign * (x - y);
      else c = sign * String(x).localeCompare(String(y));
      return c || a._pos - b._pos;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    ths[idx].setAttribute('aria-sort', dir === 'desc' ? 'descending' : 'ascending');
    table.setAttribute('data-sorted', key + ':' + dir);
    return true;
  }
  window.dbsweepSort = sortBy;
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener('click', function () {
      var key = th.getAttribute('data-key');
      sortBy(key, table.getAttribute('data-sorted') === key + ':asc' ? 'desc' : 'asc');
    });
  });
  var q = new URLSearchParams(window.location.search);
  if (q.get('sort')) sortBy(q.get('sort'), q.get('dir'));
  document.body.setAttribute('data-ready', '1');
})();
"#;

/// Renders `d` as one self-contained HTML page.
pub fn render(d: &Dashboard) -> String {
    let mut h = String::new();
    let s = &d.sweep;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>dbsweep: {name} ({id})</title><style>{STYLE}</style></head>\n<body>\n",
        name = escape(&s.name),
        id = escape(&s.id)
    );
    let counts: Vec<String> = s.counts.iter().map(|(st, n)| format!("{n} {st}")).collect();
    let _ = write!(
        h,
        "<h1>Sweep {name}</h1>\n<p class=\"meta\">id <code>{id}</code> &middot; {method} &middot; {total} runs ({counts}) \
         &middot; from <code>{file}</code> &middot; created {created}</p>\n",
        name = escape(&s.name),
        id = escape(&s.id),
        method = escape(&s.method),
        total = s.total,
        counts = escape(&counts.join(", ")),
        file = escape(&s.file),
        created = escape(&s.created_at)
    );
    let goal = if d.maximize { "maximize" } else { "minimize" };
    match (&s.metric, d.best) {
        (Some(_), Some(b)) => {
            let run = &d.runs[b];
            let _ = writeln!(
                h,
                "<p class=\"meta\" id=\"best\">Best run by <code>{metric}</code> ({goal}): <span class=\"star\">&#9733;</span> \
                 <a href=\"{url}\"><strong>{id}</strong></a> with {value}</p>",
                metric = escape(&d.metric),
                url = escape(&file_url(&run.folder)),
                id = escape(&run.row.id),
                value = run.best_value.map(show_number).unwrap_or_default()
            );
        }
        (Some(_), None) => {
            let _ = writeln!(
                h,
                "<p class=\"meta\" id=\"best\">No run has <code>{}</code> yet, so no best run.</p>",
                escape(&d.metric)
            );
        }
        (None, _) => {
            let _ = writeln!(
                h,
                "<p class=\"meta\" id=\"best\">The sweep declares no metric: no best run; the table shows <code>{}</code>.</p>",
                escape(&d.metric)
            );
        }
    }
    table(&mut h, d, goal);
    h.push_str("<h2>Curves</h2>\n<div class=\"charts\">\n");
    for curve in CURVES {
        chart(&mut h, d, curve);
    }
    h.push_str("</div>\n");
    grids(&mut h, d);
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

fn table(h: &mut String, d: &Dashboard, goal: &str) {
    let mut swept: Vec<String> = d.keys.clone();
    for run in &d.runs {
        for key in run.row.swept.keys() {
            if !swept.contains(key) {
                swept.push(key.clone());
            }
        }
    }
    h.push_str("<h2>Runs</h2>\n<p class=\"meta\">Click a column header to sort.</p>\n");
    h.push_str(
        "<table class=\"runs\" id=\"runs\"><thead><tr><th data-key=\"position\">#</th><th data-key=\"run\">run</th>",
    );
    for key in &swept {
        let _ = write!(h, "<th data-key=\"{k}\">{k}</th>", k = escape(key));
    }
    let m = escape(&d.metric);
    let _ = write!(
        h,
        "<th data-key=\"status\">status</th><th data-key=\"final\">{m} final</th>\
         <th data-key=\"best\" title=\"{goal}\">{m} best</th><th data-key=\"steps\">steps</th></tr></thead>\n<tbody>\n"
    );
    let num = |v: Option<f64>| match v {
        Some(v) => format!("<td class=\"num\" data-v=\"{v}\">{}</td>", show_number(v)),
        None => "<td class=\"num\" data-v=\"\">-</td>".to_string(),
    };
    for (i, run) in d.runs.iter().enumerate() {
        let best = d.best == Some(i);
        let r = &run.row;
        let _ = write!(
            h,
            "<tr data-run=\"{id}\"{cls}><td class=\"num\" data-v=\"{pos}\">{pos}</td>\
             <td data-v=\"{id}\"><span class=\"swatch\" style=\"background:{color}\"></span>\
             <a href=\"{url}\" title=\"run folder\">{id}</a>{star}</td>",
            id = escape(&r.id),
            cls = if best { " class=\"best\"" } else { "" },
            pos = r.position,
            color = color(i),
            url = escape(&file_url(&run.folder)),
            star = if best { " <span class=\"star\" title=\"best run\">&#9733;</span>" } else { "" }
        );
        for key in &swept {
            match r.swept.get(key) {
                Some(v) => {
                    let sort = v.as_f64().map(|f| f.to_string()).unwrap_or_else(|| show_value(v));
                    let _ = write!(h, "<td data-v=\"{}\">{}</td>", escape(&sort), escape(&show_value(v)));
                }
                None => h.push_str("<td data-v=\"\">-</td>"),
            }
        }
        let status = r.status.as_str();
        let _ = writeln!(
            h,
            "<td data-v=\"{status}\" class=\"status-{status}\">{status}</td>{}{}{}</tr>",
            num(run.final_value),
            num(run.best_value),
            num(run.steps.map(|s| s as f64))
        );
    }
    h.push_str("</tbody></table>\n");
}

/// Rounds a tick step to 1, 2 or 5 times a power of ten.
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = span / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    (if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }) * mag
}

fn chart(h: &mut String, d: &Dashboard, key: &str) {
    const W: f64 = 600.0;
    const H: f64 = 300.0;
    const L: f64 = 64.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 36.0;
    let series: Vec<(usize, &Vec<(i64, f64)>)> =
        d.runs.iter().enumerate().filter_map(|(i, r)| r.curves.get(key).map(|c| (i, c))).collect();
    let _ = write!(h, "<figure class=\"chart\" data-metric=\"{k}\"><figcaption>{k}</figcaption>", k = escape(key));
    if series.is_empty() {
        let _ = writeln!(h, "<p class=\"meta\">No run has <code>{}</code> yet.</p></figure>", escape(key));
        return;
    }
    let points = series.iter().flat_map(|(_, c)| c.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let x0 = x0.min(0) as f64;
    let x1 = (x1 as f64).max(x0 + 1.0);
    if y1 - y0 < 1e-12 * y0.abs().max(1e-12) {
        let pad = (y0.abs() * 0.05).max(1e-6);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let (pw, ph) = (W - L - R, H - T - B);
    let px = |x: f64| L + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| T + (y1 - y) / (y1 - y0) * ph;
    let _ = write!(
        h,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"{k} by step\">",
        k = escape(key)
    );
    let ys = nice_step(y1 - y0, 5.0);
    let mut y = (y0 / ys).ceil() * ys;
    while y <= y1 + ys * 1e-9 {
        let p = py(y);
        let _ = write!(
            h,
            "<line x1=\"{L}\" y1=\"{p:.1}\" x2=\"{:.1}\" y2=\"{p:.1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            W - R,
            L - 6.0,
            p + 4.0,
            show_number(if y.abs() < ys * 1e-9 { 0.0 } else { y })
        );
        y += ys;
    }
    let xs = nice_step(x1 - x0, 6.0).max(1.0).round();
    let mut x = (x0 / xs).ceil() * xs;
    while x <= x1 + 1e-9 {
        let p = px(x);
        let _ = write!(
            h,
            "<line x1=\"{p:.1}\" y1=\"{T}\" x2=\"{p:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
             <text x=\"{p:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">{x}</text>",
            H - B,
            H - B + 14.0
        );
        x += xs;
    }
    let _ = write!(
        h,
        "<rect x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">step</text>",
        L + pw / 2.0,
        H - 4.0
    );
    for (i, curve) in &series {
        let best = d.best == Some(*i);
        let width = if best { 3.0 } else { 1.6 };
        let id = escape(&d.runs[*i].row.id);
        let pts: Vec<String> = curve.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x as f64), py(y))).collect();
        let _ = write!(h, "<g data-run=\"{id}\"><title>{id}</title>");
        if curve.len() > 1 {
            let _ = write!(
                h,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\" stroke-linejoin=\"round\"/>",
                pts.join(" "),
                color(*i)
            );
        }
        if curve.len() <= 12 {
            for &(x, y) in curve.iter() {
                let _ = write!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{}\"/>",
                    px(x as f64),
                    py(y),
                    if best { 3.5 } else { 2.5 },
                    color(*i)
                );
            }
        }
        h.push_str("</g>");
    }
    h.push_str("</svg><ul class=\"legend\">");
    for (i, _) in &series {
        let best = d.best == Some(*i);
        let _ = write!(
            h,
            "<li{}><span class=\"swatch\" style=\"background:{}\"></span>{}{}</li>",
            if best { " class=\"best\"" } else { "" },
            color(*i),
            escape(&d.runs[*i].row.id),
            if best { " &#9733;" } else { "" }
        );
    }
    h.push_str("</ul></figure>\n");
}

/// Distinct values of `key` over `runs`, ordered.
fn distinct(runs: &[&RunView], key: &str) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    for run in runs {
        let v = run.row.swept.get(key).cloned().unwrap_or(Value::Null);
        if !values.contains(&v) {
            values.push(v);
        }
    }
    values.sort_by(cmp_values);
    values
}

fn grids(h: &mut String, d: &Dashboard) {
    h.push_str("<h2>Validation images</h2>\n");
    let all: Vec<&RunView> = d.runs.iter().collect();
    let get = |run: &RunView, key: &str| run.row.swept.get(key).cloned().unwrap_or(Value::Null);
    let (rows_key, cols_key) = (d.keys.first(), d.keys.get(1));
    let others = if d.keys.len() > 2 { &d.keys[2..] } else { &[][..] };
    let _ = writeln!(
        h,
        "<p class=\"meta\">Each run's latest validation sample (first prompt, first image). {}{}</p>",
        match (rows_key, cols_key) {
            (Some(r), Some(c)) => format!("Rows: <code>{}</code>; columns: <code>{}</code>.", escape(r), escape(c)),
            (Some(r), None) => format!("Columns: <code>{}</code>.", escape(r)),
            _ => String::new(),
        },
        if others.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = others.iter().map(|k| format!("<code>{}</code>", escape(k))).collect();
            format!(" One grid per value of {}.", names.join(", "))
        }
    );
    // Groups by the values of the keys after the first two.
    let mut groups: Vec<Vec<Value>> = Vec::new();
    for run in &all {
        let g: Vec<Value> = others.iter().map(|k| get(run, k)).collect();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
        .sort_by(|a, b| a.iter().zip(b).map(|(x, y)| cmp_values(x, y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal));
    for group in &groups {
        let members: Vec<&RunView> =
            all.iter().copied().filter(|r| others.iter().zip(group).all(|(k, v)| get(r, k) == *v)).collect();
        if !others.is_empty() {
            let title: Vec<String> =
                others.iter().zip(group).map(|(k, v)| format!("{} = {}", escape(k), escape(&show_value(v)))).collect();
            let _ = writeln!(h, "<h3 class=\"meta\">{}</h3>", title.join(", "));
        }
        let (row_values, col_values) = match (rows_key, cols_key) {
            (Some(r), Some(c)) => (distinct(&members, r), distinct(&members, c)),
            (Some(r), None) => (vec![Value::Null], distinct(&members, r)),
            _ => (vec![Value::Null], vec![Value::Null]),
        };
        h.push_str("<table class=\"grid\"><thead><tr>");
        if let (Some(r), Some(c)) = (rows_key, cols_key) {
            let _ = write!(h, "<th>{} \\ {}</th>", escape(r), escape(c));
        } else {
            h.push_str("<th></th>");
        }
        for cv in &col_values {
            let _ = write!(h, "<th>{}</th>", escape(&show_value(cv)));
        }
        h.push_str("</tr></thead><tbody>\n");
        for rv in &row_values {
            let _ =
                write!(h, "<tr><th>{}</th>", if cols_key.is_some() { escape(&show_value(rv)) } else { String::new() });
            for cv in &col_values {
                let in_cell = |run: &&RunView| match (rows_key, cols_key) {
                    (Some(r), Some(c)) => get(run, r) == *rv && get(run, c) == *cv,
                    (Some(r), None) => get(run, r) == *cv,
                    _ => true,
                };
                let cell: Vec<&RunView> = members.iter().copied().filter(in_cell).collect();
                let best = cell.iter().any(|r| d.best.is_some_and(|b| d.runs[b].row.id == r.row.id));
                let _ = write!(h, "<td class=\"cell{}\">", if best { " best" } else { "" });
                for run in cell {
                    image(h, d, run);
                }
                h.push_str("</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }
}

fn image(h: &mut String, d: &Dashboard, run: &RunView) {
    let id = escape(&run.row.id);
    let best = d.best.is_some_and(|b| d.runs[b].row.id == run.row.id);
    let _ = write!(h, "<div class=\"sample\" data-run=\"{id}\">");
    match &run.sample {
        Some(Sample { path, step, data_uri: Some(uri) }) => {
            let _ = write!(
                h,
                "<img src=\"{}\" alt=\"{id} {p}\" title=\"{p}\">",
                escape(uri),
                p = escape(&format!("{}{}", path, step.map(|s| format!(" (step {s})")).unwrap_or_default()))
            );
        }
        Some(Sample { path, .. }) => {
            let _ = write!(h, "<span class=\"missing\" title=\"{}\">missing</span>", escape(path));
        }
        None => h.push_str("<span class=\"missing\">no sample</span>"),
    }
    let status = if run.row.status == RunStatus::Finished { String::new() } else { format!(" ({})", run.row.status) };
    let _ = write!(
        h,
        "<a href=\"{}\">{id}</a>{}{status}<br>{}</div>",
        escape(&file_url(&run.folder)),
        if best { " &#9733;" } else { "" },
        match (&run.sample, run.best_value) {
            (Some(Sample { step: Some(s), .. }), Some(v)) =>
                format!("step {s} &middot; {} {}", escape(&d.metric), show_number(v)),
            (Some(Sample { step: Some(s), .. }), None) => format!("step {s}"),
            (_, Some(v)) => format!("{} {}", escape(&d.metric), show_number(v)),
            _ => String::new(),
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn file_urls_percent_encode() {
        assert_eq!(file_url(Path::new("/tmp/a b/runs/x#1")), "file:///tmp/a%20b/runs/x%231");
    }

    #[test]
    fn latest_sample_prefers_the_newest_first_image() {
        let a: Vec<String> = [
            "samples/step-00000004/prompt0-0.png",
            "samples/step-00000008/prompt0-1.png",
            "samples/step-00000008/prompt0-0.png",
            "class/x.png",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(latest_sample(&a).as_deref(), Some("samples/step-00000008/prompt0-0.png"));
        assert_eq!(step_of("samples/step-00000008/prompt0-0.png"), Some(8));
    }

    fn view(position: i64, swept: &[(&str, Value)], best: Option<f64>) -> RunView {
        let row = RunRow {
            id: format!("run-{position}"),
            position,
            status: RunStatus::Finished,
            attempt: 1,
            swept: swept.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        RunView {
            row,
            final_value: best,
            best_value: best,
            steps: Some(4),
            curves: BTreeMap::from([("train/loss".to_string(), vec![(1, 2.0), (2, 1.5)])]),
            sample: None,
            folder: PathBuf::from(format!("/r/runs/run-{position}")),
        }
    }

    #[test]
    fn three_swept_keys_give_one_grid_per_value_of_the_third_in_file_order() {
        use serde_json::json;
        // File order: lr, prior, epochs (the last varies fastest); the store sorts them by name.
        let mut runs = Vec::new();
        for (i, (lr, w, e)) in [(1, 5, 2), (1, 5, 4), (1, 9, 2), (1, 9, 4), (3, 5, 2), (3, 5, 4), (3, 9, 2), (3, 9, 4)]
            .into_iter()
            .enumerate()
        {
            let swept = [("t.lr", json!(lr)), ("t.prior", json!(w)), ("t.epochs", json!(e)), ("seed", json!(0))];
            runs.push(view(i as i64, &swept, if i == 2 { None } else { Some(i as f64) }));
        }
        assert_eq!(axis_keys(&runs), ["t.lr", "t.prior", "t.epochs"]);
        assert_eq!(best_run(&runs, false), Some(0));
        assert_eq!(best_run(&runs, true), Some(7));
        let sweep = SweepSummary {
            id: "s-1".into(),
            name: "<s>".into(),
            file: "s.yaml".into(),
            method: "grid".into(),
            metric: Some("val/loss".into()),
            goal: Some("minimize".into()),
            created_at: "now".into(),
            counts: BTreeMap::new(),
            total: 8,
        };
        let keys = axis_keys(&runs);
        let d = Dashboard { sweep, metric: "val/loss".into(), maximize: false, keys, runs, best: Some(0) };
        let html = render(&d);
        assert!(html.contains("Sweep &lt;s&gt;") && !html.contains("<s>"));
        assert_eq!(html.matches("<table class=\"grid\">").count(), 2);
        assert!(html.contains("t.epochs = 2") && html.contains("t.epochs = 4"));
        assert_eq!(html.matches("<div class=\"sample\"").count(), 8);
        assert_eq!(html.matches("<td class=\"cell best\">").count(), 1);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(show_number(0.5), "0.5");
        assert_eq!(show_number(0.0001), "1.000e-4");
        assert_eq!(show_number(12.345678), "12.34568");
    }
}
