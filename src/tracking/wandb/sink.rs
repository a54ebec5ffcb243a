//! [`WandbSink`]: records of one attempt, spooled on the training thread and delivered to W&B
//! by a background thread.
//!
//! | record   | spooled                                                                      |
//! |----------|------------------------------------------------------------------------------|
//! | `Start`  | the run entry (`UpsertBucket`'s variables; config `{"key": {"value": v}}`)   |
//! | `Scalar` | the value in the row of its step                                             |
//! | `Image`  | a file entry (upload `media/images/{key}_{step}_{sha256[:20]}.png`) and the  |
//! |          | `image-file` value in the row of its step                                    |
//! | `Text`   | the string in the row of its step                                            |
//! | `End`    | the open row, then the end entry (`exitcode` 0 for success, else 1); `fsync` |
//!
//! `write` never waits for the network: it appends one line to the spool and rings the
//! delivery thread. `flush` closes the open row, `fsync`s the spool and asks the thread to
//! send now (without waiting for it). [`WandbSink::finish`] (or dropping the sink) gives the
//! thread [`WandbOptions::finish_timeout`] to deliver the rest; what is left stays in the
//! spool for [`sync`](super::sync()).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::api::Api;
use super::deliver::{self, Deliverer, DeliveryStatus, Live};
use super::endpoint::Endpoint;
use super::history::{RowBuilder, image_value, media_path, number};
use super::signal::Signal;
use super::spool::{self, Entry, RunInfo, SpoolReader, SpoolWriter};
use super::{ApiKey, RetryPolicy, WandbError};
use crate::config::{WandbConfig, WandbMode};
use crate::tracking::{EndStatus, Record, Sink, TrackingError};

/// The server and API key that `cfg` (online) will deliver to, from the environment `env`
/// (`WANDB_BASE_URL`, `WANDB_API_KEY` or `~/.netrc`); `None` offline. Checked before a run is
/// launched, so a missing key fails at once rather than inside every run.
pub fn credentials(cfg: &WandbConfig, env: &[(String, String)]) -> Result<Option<(Endpoint, ApiKey)>, WandbError> {
    match cfg.mode {
        WandbMode::Offline => Ok(None),
        WandbMode::Online => {
            let endpoint = Endpoint::from_env(env)?;
            let key =
                endpoint.api_key(env).ok_or_else(|| WandbError::NoApiKey { host: endpoint.host().to_string() })?;
            Ok(Some((endpoint, key)))
        }
    }
}

/// Tuning and identity settings of a [`WandbSink`]; the defaults are W&B's where it has one.
#[derive(Clone, Debug)]
pub struct WandbOptions {
    /// Rows wait at most this long before being posted (W&B: 15 s).
    pub batch_interval: Duration,
    /// A `{}` file_stream request after this long without one (W&B: 30 s).
    pub heartbeat_interval: Duration,
    /// Retries of every request.
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
    /// How long the end of a run waits for the delivery thread (the rest stays spooled for
    /// `dbsweep sync`); not at all once delivery has given up (the server is unreachable).
    pub finish_timeout: Duration,
    /// After giving up on an unreachable server, try again this much later (`None`: only
    /// `dbsweep sync` will).
    pub reconnect_interval: Option<Duration>,
    /// Most rows in one file_stream request.
    pub max_rows_per_request: usize,
    /// W&B display name (default: the run id).
    pub display_name: Option<String>,
    /// W&B tags.
    pub tags: Vec<String>,
    /// Host name shown by W&B.
    pub host: Option<String>,
    /// Set when W&B asks the run to stop (a reply with `"stopped": true`); pass the trainer's
    /// stop flag to stop after the current step, as on Ctrl-C.
    pub stop: Arc<AtomicBool>,
}

impl Default for WandbOptions {
    fn default() -> Self {
        WandbOptions {
            batch_interval: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            finish_timeout: Duration::from_secs(5),
            reconnect_interval: Some(Duration::from_secs(300)),
            max_rows_per_request: 1000,
            display_name: None,
            tags: Vec::new(),
            host: None,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The delivery thread's handle.
struct Worker {
    handle: JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

/// Spools one attempt's records and, online, delivers them to W&B in the background.
pub struct WandbSink {
    run_dir: PathBuf,
    spool_dir: PathBuf,
    template: RunInfo,
    options: WandbOptions,
    api: Option<Api>,
    writer: Option<SpoolWriter>,
    rows: Option<RowBuilder>,
    ended: bool,
    signal: Arc<Signal>,
    status: Arc<Mutex<DeliveryStatus>>,
    worker: Option<Worker>,
}

impl std::fmt::Debug for WandbSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WandbSink")
            .field("run_id", &self.template.run_id)
            .field("project", &self.template.project)
            .field("online", &(self.api.is_some() || self.worker.is_some()))
            .field("spool", &self.writer.as_ref().map(SpoolWriter::path))
            .finish_non_exhaustive()
    }
}

/// Invalid use of the sink (a record before `Start`, after `End`, a second `Start`).
fn misuse(dir: &Path, message: &str) -> TrackingError {
    TrackingError::Invalid { path: dir.to_path_buf(), message: format!("W&B sink: {message}") }
}

/// Lowercase hex of `bytes`' SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl WandbSink {
    /// A sink for run `run_id` (W&B run name) of sweep `sweep_id` (the W&B group) spooling
    /// into `run_dir/wandb-spool`, with default options. Online mode reads the base URL and
    /// API key from `env` and fails if there is no key; nothing is sent before `Start`.
    pub fn from_config(
        cfg: &WandbConfig,
        run_id: &str,
        sweep_id: Option<&str>,
        run_dir: &Path,
        env: &[(String, String)],
    ) -> Result<WandbSink, TrackingError> {
        Self::with_options(cfg, run_id, sweep_id, run_dir, env, WandbOptions::default())
    }

    /// [`from_config`](Self::from_config) with explicit options.
    pub fn with_options(
        cfg: &WandbConfig,
        run_id: &str,
        sweep_id: Option<&str>,
        run_dir: &Path,
        env: &[(String, String)],
        options: WandbOptions,
    ) -> Result<WandbSink, TrackingError> {
        let signal = Arc::new(Signal::default());
        let api = match credentials(cfg, env)? {
            None => None,
            Some((endpoint, key)) => {
                Some(Api::new(endpoint, key, options.retry.clone(), options.request_timeout, Arc::clone(&signal)))
            }
        };
        let template = RunInfo {
            run_id: run_id.to_string(),
            project: cfg.project.clone(),
            entity: cfg.entity.clone(),
            display_name: Some(options.display_name.clone().unwrap_or_else(|| run_id.to_string())),
            group: sweep_id.map(str::to_string),
            tags: options.tags.clone(),
            config: "{}".into(),
            job_type: "train".into(),
            host: options.host.clone(),
            attempt: 0,
            resume_step: None,
        };
        Ok(WandbSink {
            run_dir: run_dir.to_path_buf(),
            spool_dir: run_dir.join(spool::DIR),
            template,
            options,
            api,
            writer: None,
            rows: None,
            ended: false,
            signal,
            status: Arc::new(Mutex::new(DeliveryStatus::default())),
            worker: None,
        })
    }

    /// The spool folder.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Whether W&B asked the run to stop.
    pub fn stop_requested(&self) -> bool {
        self.options.stop.load(Ordering::SeqCst)
    }

    /// The flag set when W&B asks the run to stop ([`WandbOptions::stop`]).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.options.stop)
    }

    /// How delivery is going.
    pub fn status(&self) -> DeliveryStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the spool and waits up to [`WandbOptions::finish_timeout`] for delivery; what
    /// is not delivered by then stays spooled. Dropping the sink does the same.
    pub fn finish(mut self) -> DeliveryStatus {
        self.finish_inner();
        self.status()
    }

    fn finish_inner(&mut self) {
        if let (Some(rows), Some(writer)) = (self.rows.as_mut(), self.writer.as_mut()) {
            if let Some(row) = rows.close() {
                let _ = writer.append(&Entry::Row(row));
            }
            let _ = writer.sync();
        }
        // A server that was already unreachable is not waited for: the spool keeps the rest.
        let wait = if self.status().gave_up { Duration::ZERO } else { self.options.finish_timeout };
        self.signal.finish_by(Instant::now() + wait);
        if let Some(worker) = self.worker.take() {
            // A request in flight may outlive the deadline by its own timeout: then the thread
            // is left to end with the process; the spool and its state stay consistent.
            match worker.done.recv_timeout(wait + Duration::from_secs(1)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = worker.handle.join();
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn writer(&mut self) -> Result<&mut SpoolWriter, TrackingError> {
        if self.ended {
            return Err(misuse(&self.spool_dir, "a record after End"));
        }
        self.writer.as_mut().ok_or_else(|| misuse(&self.spool_dir, "a record before Start"))
    }

    fn append(&mut self, entry: &Entry) -> Result<(), TrackingError> {
        self.writer()?.append(entry)?;
        self.signal.ring();
        Ok(())
    }

    fn push(&mut self, step: u64, key: &str, value: String, wall_time: f64) -> Result<(), TrackingError> {
        self.writer()?;
        let closed = self.rows.as_mut().and_then(|rows| rows.push(step, key, value, wall_time));
        match closed {
            Some(row) => self.append(&Entry::Row(row)),
            None => Ok(()),
        }
    }

    /// The runtime earlier attempts reached, from their spool files (as far as they are
    /// readable: a damaged old spool must not stop training).
    fn runtime_before(&self) -> f64 {
        let mut runtime: f64 = 0.0;
        for (_, path) in spool::files(&self.spool_dir).unwrap_or_default() {
            let Ok(mut reader) = SpoolReader::open(&path) else { continue };
            while let Ok(Some(entry)) = reader.next() {
                if let Entry::Row(row) = entry {
                    runtime = runtime.max(row.runtime);
                }
            }
        }
        runtime
    }

    fn start(
        &mut self,
        attempt: u32,
        hparams: &std::collections::BTreeMap<String, serde_json::Value>,
        resume_step: Option<u64>,
        wall_time: f64,
    ) -> Result<(), TrackingError> {
        if self.writer.is_some() {
            return Err(misuse(&self.spool_dir, "a second Start"));
        }
        let config: serde_json::Map<String, serde_json::Value> =
            hparams.iter().map(|(k, v)| (k.clone(), serde_json::json!({ "value": v }))).collect();
        let info = RunInfo {
            config: serde_json::Value::Object(config).to_string(),
            attempt,
            resume_step,
            ..self.template.clone()
        };
        let runtime_before = self.runtime_before();
        let mut writer = SpoolWriter::create(&self.spool_dir)?;
        writer.append(&Entry::Run(info))?;
        writer.sync()?;
        let number = writer.number();
        self.writer = Some(writer);
        self.rows = Some(RowBuilder::new(wall_time, runtime_before));
        if let Some(api) = self.api.take() {
            self.worker = Some(self.spawn(api, number)?);
        }
        Ok(())
    }

    fn spawn(&self, mut api: Api, number: u32) -> Result<Worker, TrackingError> {
        let (tx, done) = mpsc::channel();
        let run_dir = self.run_dir.clone();
        let signal = Arc::clone(&self.signal);
        let status = Arc::clone(&self.status);
        let options = self.options.clone();
        let handle = std::thread::Builder::new()
            .name("wandb-delivery".into())
            .spawn(move || {
                deliver_live(&mut api, &run_dir, number, &signal, &status, &options);
                status.lock().unwrap_or_else(|p| p.into_inner()).finished = true;
                let _ = tx.send(());
            })
            .map_err(|source| TrackingError::Io { path: self.spool_dir.clone(), source })?;
        Ok(Worker { handle, done })
    }
}

/// The delivery thread: takes the run's delivery lock, then delivers until the live spool file
/// is closed and sent, reconnecting after failures while that can help.
fn deliver_live(
    api: &mut Api,
    run_dir: &Path,
    number: u32,
    signal: &Signal,
    status: &Mutex<DeliveryStatus>,
    options: &WandbOptions,
) {
    let dir = run_dir.join(spool::DIR);
    let record = |e: &WandbError| {
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_error = Some(e.to_string());
        s.gave_up = true;
        drop(s);
        deliver::log(&dir, &format!("delivery stopped: {e}"));
    };
    let retry_wait = options.reconnect_interval;
    let _lock = loop {
        match deliver::lock(&dir) {
            Ok(lock) => break lock,
            Err(e @ WandbError::Busy { .. }) => {
                record(&e);
                if !retry_wait.is_some_and(|wait| signal.idle(wait)) {
                    return;
                }
            }
            Err(e) => return record(&e),
        }
    };
    let live = Live {
        number,
        signal,
        batch_interval: options.batch_interval,
        heartbeat_interval: options.heartbeat_interval,
        stop: &options.stop,
        status,
    };
    loop {
        let result = Deliverer::new(api, run_dir, options.max_rows_per_request).deliver_all(Some(&live));
        match result {
            Ok(()) | Err(WandbError::Cancelled { .. }) => return,
            Err(e) => {
                record(&e);
                if e.is_permanent() || !retry_wait.is_some_and(|wait| signal.idle(wait)) {
                    return;
                }
                deliver::log(&dir, "reconnecting");
            }
        }
    }
}

impl Sink for WandbSink {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        match record {
            Record::Start { attempt, hparams, resume_step, wall_time, .. } => {
                self.start(*attempt, hparams, *resume_step, *wall_time)
            }
            Record::Scalar { key, step, value, wall_time } => self.push(*step, key, number(*value), *wall_time),
            Record::Image { key, step, path, width, height, wall_time } => {
                self.writer()?;
                let file = self.run_dir.join(path);
                let png = std::fs::read(&file).map_err(|source| TrackingError::Io { path: file, source })?;
                let sha = sha256_hex(&png);
                let name = media_path(key, *step, &sha);
                let value = image_value(&name, &sha, png.len() as u64, *width, *height);
                self.append(&Entry::File { name, source: path.clone() })?;
                self.push(*step, key, value, *wall_time)
            }
            Record::Text { key, step, text, wall_time } => {
                let value = serde_json::to_string(text).expect("strings serialize");
                self.push(*step, key, value, *wall_time)
            }
            Record::End { status, .. } => {
                self.writer()?;
                if let Some(row) = self.rows.as_mut().and_then(RowBuilder::close) {
                    self.append(&Entry::Row(row))?;
                }
                let exit_code = i32::from(*status != EndStatus::Success);
                self.append(&Entry::End { exit_code })?;
                self.writer()?.sync()?;
                self.ended = true;
                self.signal.close();
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        if let Some(row) = self.rows.as_mut().filter(|_| !self.ended).and_then(RowBuilder::close) {
            writer.append(&Entry::Row(row))?;
        }
        writer.sync()?;
        self.signal.request_flush();
        Ok(())
    }
}

impl Drop for WandbSink {
    fn drop(&mut self) {
        self.finish_inner();
    }
}
