//! [`TensorBoardSink`]: records of one attempt of a run, as one event file in the run folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hparams::{session_end, session_start};
use super::proto::{Event, SessionLog, SessionStatus, event};
use super::summary::{image, scalar, step_i64, summary_event, text};
use super::writer::{DEFAULT_FLUSH_INTERVAL, EventFileWriter};
use crate::tracking::{Record, Sink, TrackingError};

/// Writes one attempt's records into a new event file in the run folder.
///
/// | record   | written                                                                   |
/// |----------|---------------------------------------------------------------------------|
/// | `Start`  | the purge marker, then `_hparams_/session_start_info`                     |
/// | `Scalar` | `simple_value` (32-bit float)                                             |
/// | `Image`  | `Summary.Image` with the PNG read from the run folder, colorspace RGB     |
/// | `Text`   | the text plugin's string tensor (Markdown)                                |
/// | `End`    | `_hparams_/session_end_info` (not for `Interrupted`), then a durable sync |
///
/// Purge marker: every attempt starts with an event carrying `session_log { status: START }`,
/// at step `s + 1` for an attempt resumed after step `s`, at step 0 for one that starts from
/// scratch. TensorBoard (reading `brain.Event:2` files) treats every START after the first one
/// it reads in a run folder as a restart and drops every point of the folder already read whose
/// step is not below the marker's step, all tags. So the earlier attempts' points after `s`
/// disappear and the curve does not double back; a restart from scratch supersedes them all.
/// The first attempt's marker is needed too: the server's loader
/// (`plugin_event_accumulator.py`) ignores the first START of a run. Events are read in
/// file-name order, which the writer keeps in creation order.
#[derive(Debug)]
pub struct TensorBoardSink {
    run_dir: PathBuf,
    writer: EventFileWriter,
}

impl TensorBoardSink {
    /// A sink writing into `run_dir`, flushing buffered events at least every 2 seconds.
    pub fn new(run_dir: &Path) -> Result<Self, TrackingError> {
        Self::with_flush_interval(run_dir, DEFAULT_FLUSH_INTERVAL)
    }

    /// A sink writing into `run_dir` that flushes buffered events when a write finds
    /// `flush_interval` has passed since the last flush.
    pub fn with_flush_interval(run_dir: &Path, flush_interval: Duration) -> Result<Self, TrackingError> {
        let writer = EventFileWriter::create(run_dir, flush_interval)?;
        Ok(TensorBoardSink { run_dir: run_dir.to_owned(), writer })
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        self.writer.path()
    }
}

impl Sink for TensorBoardSink {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { run_id, hparams, resume_step, wall_time, .. } => {
                let marker = Event {
                    wall_time: *wall_time,
                    step: resume_step.map_or(0, |after| step_i64(after.saturating_add(1))),
                    what: Some(event::What::SessionLog(SessionLog { status: SessionStatus::Start as i32 })),
                };
                self.writer.write_event(&marker)?;
                self.writer.write_event(&summary_event(*wall_time, 0, session_start(run_id, hparams, *wall_time)))
            }
            Record::Scalar { key, step, value, wall_time } => {
                self.writer.write_event(&summary_event(*wall_time, *step, scalar(key, *value)))
            }
            Record::Image { key, step, path, width, height, wall_time } => {
                let file = self.run_dir.join(path);
                let png = std::fs::read(&file).map_err(|source| TrackingError::Io { path: file, source })?;
                self.writer.write_event(&summary_event(*wall_time, *step, image(key, *width, *height, png)))
            }
            Record::Text { key, step, text: body, wall_time } => {
                self.writer.write_event(&summary_event(*wall_time, *step, text(key, body)))
            }
            Record::End { status, wall_time } => {
                if let Some(value) = session_end(*status, *wall_time) {
                    self.writer.write_event(&summary_event(*wall_time, 0, value))?;
                }
                self.writer.sync()
            }
        }
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        self.writer.sync()
    }
}
