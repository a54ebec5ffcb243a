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

/// The plotting area of a chart: data ranges mapped onto a fixed SVG box, with its grid,
/// tick labels and frame.
pub(super) struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// SVG width and height.
    pub(super) const W: f64 = 600.0;
    pub(super) const H: f64 = 300.0;
    const L: f64 = 64.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 36.0;

    /// A frame over `x` and `y` (min, max), widened where a range is empty.
    pub(super) fn new(x: (f64, f64), y: (f64, f64)) -> Self {
        let widen = |(lo, hi): (f64, f64)| {
            if hi - lo < 1e-12 * lo.abs().max(1e-12) {
                let pad = (lo.abs() * 0.05).max(1e-6);
                (lo - pad, hi + pad)
            } else {
                (lo, hi)
            }
        };
        Self { x: widen(x), y: widen(y) }
    }

    /// The SVG x of data `x`.
    pub(super) fn px(&self, x: f64) -> f64 {
        Self::L + (x - self.x.0) / (self.x.1 - self.x.0) * (Self::W - Self::L - Self::R)
    }

    /// The SVG y of data `y`.
    pub(super) fn py(&self, y: f64) -> f64 {
        Self::T + (self.y.1 - y) / (self.y.1 - self.y.0) * (Self::H - Self::T - Self::B)
    }

    /// Opens the SVG (labelled `label`) and draws the grid, the ticks (integers on x when
    /// `integer_x`), the frame and the x axis' title.
    pub(super) fn open(&self, h: &mut String, label: &str, x_title: &str, integer_x: bool) {
        let (w, hh, l, r, t, b) = (Self::W, Self::H, Self::L, Self::R, Self::T, Self::B);
        let _ = write!(
            h,
            "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hh}\" viewBox=\"0 0 {w} {hh}\" \
             role=\"img\" aria-label=\"{}\">",
            escape(label)
        );
        let (y0, y1) = self.y;
        let ys = nice_step(y1 - y0, 5.0);
        let mut y = (y0 / ys).ceil() * ys;
        while y <= y1 + ys * 1e-9 {
            let p = self.py(y);
            let _ = write!(
                h,
                "<line x1=\"{l}\" y1=\"{p:.1}\" x2=\"{:.1}\" y2=\"{p:.1}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{}</text>",
                w - r,
                l - 6.0,
                p + 4.0,
                show_number(if y.abs() < ys * 1e-9 { 0.0 } else { y })
            );
            y += ys;
        }
        let (x0, x1) = self.x;
        let mut xs = nice_step(x1 - x0, 6.0);
        if integer_x {
            xs = xs.max(1.0).round();
        }
        let mut x = (x0 / xs).ceil() * xs;
        while x <= x1 + xs * 1e-9 {
            let p = self.px(x);
            let _ = write!(
                h,
                "<line x1=\"{p:.1}\" y1=\"{t}\" x2=\"{p:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
                 <text x=\"{p:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                hh - b,
                hh - b + 14.0,
                show_number(if x.abs() < xs * 1e-9 { 0.0 } else { x })
            );
            x += xs;
        }
        let (pw, ph) = (w - l - r, hh - t - b);
        let _ = write!(
            h,
            "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">{}</text>",
            l + pw / 2.0,
            hh - 4.0,
            escape(x_title)
        );
    }
}

pub(super) fn chart(h: &mut String, d: &Dashboard, key: &str) {
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
    let frame = Frame::new((x0, (x1 as f64).max(x0 + 1.0)), (y0, y1));
    frame.open(h, &format!("{key} by step"), "step", true);
    for (i, curve) in &series {
        let best = d.best == Some(*i);
        let width = if best { 3.0 } else { 1.6 };
        let id = escape(&d.runs[*i].row.id);
        let pts: Vec<String> =
            curve.iter().map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x as f64), frame.py(y))).collect();
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
                    frame.px(x as f64),
                    frame.py(y),
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
