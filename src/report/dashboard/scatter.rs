//! The dashboard's trade-off chart: every run's checkpoints in two evaluation metrics (subject
//! against prompt fidelity), the Pareto front joined and ringed, the base model's point
//! marked.

use std::fmt::Write as _;

use super::Dashboard;
use super::chart::{Frame, color};
use super::html::{escape, show_number};
use crate::report::pareto::Front;

/// Writes the trade-off chart of `front` (run colours as in `d`'s other charts).
pub(super) fn scatter(h: &mut String, d: &Dashboard, front: &Front) {
    let [ax, ay] = &front.axes;
    let _ = write!(
        h,
        "<figure class=\"chart scatter\" id=\"tradeoff\" data-x=\"{x}\" data-y=\"{y}\"><figcaption>{y} against {x} \
         (each point a run at a step; the Pareto front ringed and joined; &#9670; the base model)</figcaption>",
        x = escape(&ax.metric),
        y = escape(&ay.metric)
    );
    let all = front.points.iter().chain(&front.base);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in all {
        (x0, x1, y0, y1) = (x0.min(p.x), x1.max(p.x), y0.min(p.y), y1.max(p.y));
    }
    let frame = Frame::new((x0, x1), (y0, y1));
    frame.open(h, &format!("{} against {}", ay.metric, ax.metric), &ax.metric, false);
    let on_front = &front.points[..front.front];
    let line: Vec<String> = on_front.iter().map(|p| format!("{:.1},{:.1}", frame.px(p.x), frame.py(p.y))).collect();
    let _ = write!(
        h,
        "<polyline class=\"front\" points=\"{}\" fill=\"none\" stroke=\"#e0a800\" stroke-width=\"2\"/>",
        line.join(" ")
    );
    for (k, p) in front.points.iter().enumerate() {
        let run = d.runs.iter().position(|r| r.row.id == p.run_id).unwrap_or(0);
        let title = format!(
            "{} step {}: {} {}, {} {}",
            p.run_id,
            p.step,
            ax.metric,
            show_number(p.x),
            ay.metric,
            show_number(p.y)
        );
        let ring = if k < front.front { " stroke=\"#e0a800\" stroke-width=\"2.5\"" } else { "" };
        let _ = write!(
            h,
            "<circle class=\"{}\" data-run=\"{}\" data-step=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"{ring}><title>{}</title></circle>",
            if k < front.front { "point on-front" } else { "point" },
            escape(&p.run_id),
            p.step,
            frame.px(p.x),
            frame.py(p.y),
            color(run),
            escape(&title)
        );
    }
    if let Some(b) = &front.base {
        let (x, y) = (frame.px(b.x), frame.py(b.y));
        let _ = write!(
            h,
            "<path class=\"base\" d=\"M{x:.1},{:.1} L{:.1},{y:.1} L{x:.1},{:.1} L{:.1},{y:.1} Z\" fill=\"#222\">\
             <title>base model: {} {}, {} {}</title></path>",
            y - 6.0,
            x + 6.0,
            y + 6.0,
            x - 6.0,
            ax.metric,
            show_number(b.x),
            ay.metric,
            show_number(b.y)
        );
    }
    let _ = writeln!(h, "</svg><p class=\"meta\">Pareto front: {}.</p></figure>", escape(&front.rule));
}
