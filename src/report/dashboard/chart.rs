//! The dashboard's charts: one inline SVG per curve, every run a line, the best run bold.

use std::fmt::Write as _;

use super::Dashboard;
use super::html::{escape, show_number};

/// Line colours, one per run (cycling).
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

pub(super) fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
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

pub(super) fn chart(h: &mut String, d: &Dashboard, key: &str) {
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
