//! The dashboard page: its HTML, styles and script, the sortable run table, the image grids
//! and each run's sample; the curves are drawn by [`super::chart`].

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::chart::{chart, color};
use super::scatter::scatter;
use super::{CURVES, Dashboard, RunView, Sample};
use crate::store::RunStatus;

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
pub(super) fn show_number(v: f64) -> String {
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
    let goal = d.goal.as_str();
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
        // Evaluation curves only where the sweep was evaluated.
        if curve.starts_with("eval/") && !d.runs.iter().any(|r| r.curves.contains_key(curve)) {
            continue;
        }
        chart(&mut h, d, curve);
    }
    h.push_str("</div>\n");
    if let Some(front) = &d.front {
        h.push_str("<h2>Subject against prompt fidelity</h2>\n");
        scatter(&mut h, d, front);
    }
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
    fn numbers_are_short() {
        assert_eq!(show_number(0.5), "0.5");
        assert_eq!(show_number(0.0001), "1.000e-4");
        assert_eq!(show_number(12.345678), "12.34568");
    }
}
