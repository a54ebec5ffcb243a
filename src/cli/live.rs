//! Showing scheduler events: JSON lines for scripts, plain lines when not on a terminal, and
//! on a terminal the plain lines plus a live block under them: one line per running run
//! (slot, step/total, loss, ETA) and a bar for the sweep, redrawn in place.

use std::collections::BTreeMap;
use std::io::Write;

use crate::scheduler::Event;

/// How events are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One JSON object per line, every event.
    Json,
    /// Plain lines; progress events are dropped.
    Plain,
    /// Plain lines and a live block redrawn in place.
    Live,
}

/// Renders events for one sweep of `total` runs.
pub struct View {
    mode: Mode,
    total: usize,
    done: usize,
    running: BTreeMap<String, String>,
    drawn: usize,
}

impl View {
    /// A view in `mode` for a sweep of `total` runs, `done` of them already finished.
    pub fn new(mode: Mode, total: usize, done: usize) -> Self {
        Self { mode, total, done, running: BTreeMap::new(), drawn: 0 }
    }

    /// Shows `event`.
    pub fn show(&mut self, event: &Event, out: &mut dyn Write) -> std::io::Result<()> {
        if self.mode == Mode::Json {
            writeln!(out, "{}", serde_json::to_string(event).expect("events serialize"))?;
            return out.flush();
        }
        if matches!(event, Event::Sweep { .. }) {
            // For scripts: people saw the sweep id in the command's first line.
            return Ok(());
        }
        match event {
            Event::Started { run, slot, .. } => {
                self.running.insert(run.clone(), format!("{run:<24} {slot:<10} starting"));
            }
            Event::Ended { run, status, .. } => {
                self.running.remove(run);
                if status == "finished" {
                    self.done += 1;
                }
            }
            Event::Progress { run, .. } => {
                if let Some(line) = self.running.get_mut(run) {
                    *line = event.line();
                }
            }
            _ => {}
        }
        if self.mode == Mode::Plain {
            if !matches!(event, Event::Progress { .. }) {
                writeln!(out, "{}", event.line())?;
            }
            return out.flush();
        }
        // Live: erase the block, print the event (not progress), redraw the block.
        for _ in 0..self.drawn {
            write!(out, "\x1b[1A\x1b[2K")?;
        }
        if !matches!(event, Event::Progress { .. }) {
            writeln!(out, "{}", event.line())?;
        }
        let width = 30;
        let filled = (self.done * width).checked_div(self.total).unwrap_or(width);
        let block: Vec<String> = self
            .running
            .values()
            .cloned()
            .chain([format!(
                "[{}{}] {}/{} runs finished",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.done,
                self.total
            )])
            .collect();
        for line in &block {
            writeln!(out, "{line}")?;
        }
        self.drawn = if matches!(event, Event::Done { .. }) { 0 } else { block.len() };
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run: &str) -> Event {
        Event::Started { run: run.into(), attempt: 1, slot: "gpu 0".into(), pid: 1 }
    }

    #[test]
    fn plain_drops_progress_and_live_redraws_in_place() {
        let progress = Event::Progress {
            run: "a".into(),
            slot: "gpu 0".into(),
            step: 3,
            total: 10,
            loss: 0.5,
            eta_seconds: Some(7.0),
        };
        let mut plain = Vec::new();
        let mut view = View::new(Mode::Plain, 2, 0);
        view.show(&started("a"), &mut plain).unwrap();
        view.show(&progress, &mut plain).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap().lines().count(), 1);

        let mut live = Vec::new();
        let mut view = View::new(Mode::Live, 2, 0);
        view.show(&started("a"), &mut live).unwrap();
        view.show(&progress, &mut live).unwrap();
        let text = String::from_utf8(live).unwrap();
        assert!(text.contains("step      3/10     loss 0.50000   eta 7s"), "{text}");
        assert!(text.contains("\x1b[1A\x1b[2K"), "the block is redrawn in place");
        assert!(text.ends_with(&format!("[{}] 0/2 runs finished\n", ".".repeat(30))), "{text:?}");
    }
}
