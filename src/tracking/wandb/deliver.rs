//! [`Deliverer`]: sends a run's spool files to W&B, oldest first, and records what the server
//! acknowledged. The sink's delivery thread runs it on the live file (waiting for more
//! entries, batching on an interval); [`sync`](super::sync()) runs it on finished files.
//!
//! Per spool file: replay the acknowledged entries (to rebuild the summary), then
//! `RunResumeStatus` (resumed attempts only) and `UpsertBucket`, choose the attempt's history
//! offset once, and post batches: uploads first (`CreateRunFiles`, then `PUT`s), then one
//! file_stream request with the rows, the summary, the uploaded names and, at the end,
//! `complete` and `exitcode`. After every acknowledged request the state file moves forward.
//! A file that cannot be uploaded for good (missing on disk, rejected by the server) is
//! reported and skipped; an unreachable server stops the pass and leaves the rest for later.

use std::fs::File;
use std::fs::TryLockError;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::WandbError;
use super::api::Api;
use super::error::io;
use super::history::Summary;
use super::signal::Signal;
use super::spool::{self, DeliveryState, Entry, RunInfo, SpoolReader};

/// How delivery is going.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryStatus {
    /// History rows the server acknowledged (this sink's delivery thread).
    pub rows_delivered: u64,
    /// Files uploaded.
    pub files_uploaded: u64,
    /// The last delivery error (never holds the key).
    pub last_error: Option<String>,
    /// Delivery failed at least once (retries exhausted or rejected); the spool keeps the rest
    /// for a reconnect or `dbsweep sync`.
    pub gave_up: bool,
    /// The delivery thread has ended.
    pub finished: bool,
}

/// The live spool file of a running sink, and how to pace it.
pub(crate) struct Live<'a> {
    /// Number of the live spool file (older ones are delivered first, later ones ignored).
    pub number: u32,
    /// Wake-ups from the sink.
    pub signal: &'a Signal,
    /// Rows wait at most this long before being posted.
    pub batch_interval: Duration,
    /// A `{}` request after this long without one.
    pub heartbeat_interval: Duration,
    /// Set when a reply says `"stopped": true`.
    pub stop: &'a AtomicBool,
    /// Progress for the sink's owner.
    pub status: &'a Mutex<DeliveryStatus>,
}

/// What a delivery pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Progress {
    /// History rows the server acknowledged.
    pub rows_sent: u64,
    /// Files uploaded.
    pub files_uploaded: u64,
    /// Attempts whose `complete` the server accepted.
    pub completed: u32,
    /// Files that could not be uploaded, with why.
    pub skipped: Vec<String>,
}

/// Entries read but not yet acknowledged.
#[derive(Default)]
struct Batch {
    entries: u64,
    rows: Vec<String>,
    files: Vec<(String, PathBuf)>,
    end: Option<i32>,
}

/// Holds `RUN/wandb-spool/lock` while alive.
pub(crate) struct Lock {
    _file: File,
}

/// Takes the delivery lock of the spool folder `dir` (creating it), or [`WandbError::Busy`].
pub(crate) fn lock(dir: &Path) -> Result<Lock, WandbError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(spool::LOCK);
    let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(WandbError::Busy { path }),
        Err(TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// Appends a line to `RUN/wandb-spool/delivery.log` (best effort; messages hold no secrets).
pub(crate) fn log(dir: &Path, message: &str) {
    let path = dir.join("delivery.log");
    if let Ok(mut file) = File::options().create(true).append(true).open(path) {
        let _ = writeln!(file, "{:.3} {message}", crate::tracking::now());
    }
}

/// Sends one run's spool.
pub(crate) struct Deliverer<'a> {
    api: &'a mut Api,
    run_dir: &'a Path,
    max_rows: usize,
    summary: Summary,
    next_offset: u64,
    progress: Progress,
}

impl<'a> Deliverer<'a> {
    /// A deliverer for the run folder `run_dir`, posting at most `max_rows` rows per request.
    pub(crate) fn new(api: &'a mut Api, run_dir: &'a Path, max_rows: usize) -> Self {
        Deliverer {
            api,
            run_dir,
            max_rows: max_rows.max(1),
            summary: Summary::default(),
            next_offset: 0,
            progress: Progress::default(),
        }
    }

    /// What has been delivered so far.
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Delivers every spool file, oldest first; with `live`, stops after the live file, which
    /// it follows until the sink closes it (or the finish deadline passes).
    pub(crate) fn deliver_all(&mut self, live: Option<&Live<'_>>) -> Result<(), WandbError> {
        let dir = self.run_dir.join(spool::DIR);
        for (number, path) in spool::files(&dir)? {
            match live {
                Some(l) if number > l.number => break,
                Some(l) if number == l.number => self.deliver_file(&path, Some(l))?,
                _ => self.deliver_file(&path, None)?,
            }
        }
        Ok(())
    }

    fn deliver_file(&mut self, path: &Path, live: Option<&Live<'_>>) -> Result<(), WandbError> {
        let state_path = spool::state_path(path);
        let mut state = DeliveryState::load(&state_path)?;
        let mut reader = SpoolReader::open(path)?;
        let mut info: Option<RunInfo> = None;
        for _ in 0..state.entries_done {
            match reader.next()? {
                Some(Entry::Run(run)) => info = Some(run),
                Some(Entry::Row(row)) => self.summary.fold(&row),
                Some(_) => {}
                None => {
                    return Err(WandbError::Corrupt {
                        path: state_path,
                        message: format!("counts {} delivered entries but the spool has fewer", state.entries_done),
                    });
                }
            }
        }
        if let Some(base) = state.base_offset {
            self.next_offset = self.next_offset.max(base + state.rows_done);
        }
        let mut session = false;
        let mut batch = Batch::default();
        let mut last_request = Instant::now();
        loop {
            // Read `closed` before reading entries: whatever was appended before closing is seen.
            let closed = live.is_none_or(|l| l.signal.is_closed());
            let mut exhausted = false;
            while batch.rows.len() < self.max_rows && batch.end.is_none() {
                let Some(entry) = reader.next()? else {
                    exhausted = true;
                    break;
                };
                batch.entries += 1;
                match entry {
                    Entry::Run(run) => info = Some(run),
                    Entry::Row(row) => {
                        self.summary.fold(&row);
                        batch.rows.push(row.render());
                    }
                    Entry::File { name, source } => batch.files.push((name, source)),
                    Entry::End { exit_code } => batch.end = Some(exit_code),
                }
            }
            let source_done = exhausted && closed;
            let Some(run) = info.clone() else {
                if source_done || batch.entries > 0 {
                    // No run entry: nothing this file holds can be delivered.
                    return Ok(());
                }
                Self::wait(live, None);
                continue;
            };
            if batch.entries == 0 && (source_done || state.complete) {
                return Ok(());
            }
            // The session opens with the first entry to send (at once for a new attempt, whose
            // run entry is one), so files with nothing left cost no request.
            if !session && batch.entries > 0 {
                self.open_session(&run, &mut state, &state_path)?;
                session = true;
                last_request = Instant::now();
            }
            let flush = live.is_some_and(|l| l.signal.take_flush());
            let due = batch.entries > 0
                && match live {
                    None => true,
                    Some(l) => {
                        flush
                            || batch.rows.len() >= self.max_rows
                            || batch.end.is_some()
                            || source_done
                            || l.signal.deadline().is_some()
                            || last_request.elapsed() >= l.batch_interval
                    }
                };
            if due {
                self.post(&run, &mut state, &state_path, std::mem::take(&mut batch), live)?;
                last_request = Instant::now();
                continue;
            }
            let Some(l) = live else { continue };
            if session && last_request.elapsed() >= l.heartbeat_interval {
                let entity = state.entity.clone().unwrap_or_default();
                if self.api.file_stream(&entity, &run.project, &run.run_id, &json!({}))? {
                    l.stop.store(true, Ordering::SeqCst);
                }
                last_request = Instant::now();
                continue;
            }
            if l.signal.deadline().is_some_and(|d| Instant::now() >= d) {
                return Err(WandbError::Cancelled { operation: "delivery".into() });
            }
            let interval = if batch.entries > 0 { l.batch_interval } else { l.heartbeat_interval };
            Self::wait(live, Some(last_request + interval));
        }
    }

    /// Waits for the sink (live) until `until` or a ring.
    fn wait(live: Option<&Live<'_>>, until: Option<Instant>) {
        if let Some(l) = live {
            l.signal.wait_until(until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
        }
    }

    fn open_session(&mut self, run: &RunInfo, state: &mut DeliveryState, state_path: &Path) -> Result<(), WandbError> {
        let resumed = match run.resume_step {
            Some(_) => self.api.run_resume_status(
                &run.project,
                run.entity.as_deref().or(state.entity.as_deref()),
                &run.run_id,
            )?,
            None => 0,
        };
        let upserted = self.api.upsert_bucket(run)?;
        state.entity = Some(upserted.entity);
        if state.base_offset.is_none() {
            state.base_offset = Some(resumed.max(upserted.history_line_count).max(self.next_offset));
        }
        state.store(state_path)
    }

    fn upload(&mut self, run: &RunInfo, entity: &str, files: &[(String, PathBuf)]) -> Result<Vec<String>, WandbError> {
        let names: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
        let targets = match self.api.create_run_files(entity, &run.project, &run.run_id, &names) {
            Ok(targets) => targets,
            Err(e) if e.is_permanent() => {
                self.progress.skipped.extend(names.iter().map(|n| format!("{n}: {e}")));
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut uploaded = Vec::new();
        for (name, source) in files {
            let Some((_, url)) = targets.urls.iter().find(|(n, _)| n == name) else {
                self.progress.skipped.push(format!("{name}: the server gave no upload URL"));
                continue;
            };
            let file = self.run_dir.join(source);
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.progress.skipped.push(format!("{name}: `{}`: {e}", file.display()));
                    continue;
                }
            };
            match self.api.upload(name, url, &targets.headers, &bytes) {
                Ok(()) => uploaded.push(name.clone()),
                Err(e) if e.is_permanent() => self.progress.skipped.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(uploaded)
    }

    fn post(
        &mut self,
        run: &RunInfo,
        state: &mut DeliveryState,
        state_path: &Path,
        batch: Batch,
        live: Option<&Live<'_>>,
    ) -> Result<(), WandbError> {
        let entity = state.entity.clone().unwrap_or_default();
        let base = state.base_offset.unwrap_or(self.next_offset);
        let uploaded = if batch.files.is_empty() { Vec::new() } else { self.upload(run, &entity, &batch.files)? };
        let rows = batch.rows.len() as u64;
        if rows > 0 || !uploaded.is_empty() || batch.end.is_some() {
            let mut files = Map::new();
            if rows > 0 {
                files.insert(
                    "wandb-history.jsonl".into(),
                    json!({"offset": base + state.rows_done, "content": batch.rows}),
                );
            }
            if let Some(summary) = self.summary.render() {
                files.insert("wandb-summary.json".into(), json!({"offset": 0, "content": [summary]}));
            }
            let mut body = Map::new();
            if !files.is_empty() {
                body.insert("files".into(), Value::Object(files));
            }
            if !uploaded.is_empty() {
                body.insert("uploaded".into(), json!(uploaded));
            }
            if let Some(code) = batch.end {
                body.insert("complete".into(), json!(true));
                body.insert("exitcode".into(), json!(code));
            }
            let stopped = self.api.file_stream(&entity, &run.project, &run.run_id, &Value::Object(body))?;
            if let (true, Some(l)) = (stopped, live) {
                l.stop.store(true, Ordering::SeqCst);
            }
        }
        state.entries_done += batch.entries;
        state.rows_done += rows;
        state.complete |= batch.end.is_some();
        state.store(state_path)?;
        self.next_offset = base + state.rows_done;
        self.progress.rows_sent += rows;
        self.progress.files_uploaded += uploaded.len() as u64;
        self.progress.completed += u32::from(batch.end.is_some());
        if let Some(l) = live {
            let mut status = l.status.lock().unwrap_or_else(|p| p.into_inner());
            status.rows_delivered += rows;
            status.files_uploaded += uploaded.len() as u64;
        }
        Ok(())
    }
}
