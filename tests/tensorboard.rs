//! The TensorBoard sink checked by the real TensorBoard.
//!
//! The first run creates a virtual environment at `<target>/tensorboard-venv` with `python3 -m
//! venv` and installs the pinned `tensorboard` from PyPI into it (later runs reuse it; a marker
//! file names the pin, so changing the pin rebuilds it). Without python3, its venv module or
//! PyPI the tests fail with a message saying so: they do not skip.
//!
//! Python helpers live in `tests/tensorboard/*.py`. Every subprocess runs under a timeout, and
//! the server is killed by a guard's `Drop`, also when an assertion fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dbsweep::tracking::tensorboard::{ExperimentSummary, Layout, TensorBoardSink, write_experiment, write_layout};
use dbsweep::tracking::{EndStatus, Record, Sink};
use serde_json::{Value, json};

/// The TensorBoard release the files are checked against (latest 2.x on PyPI, 2026-11).
const TENSORBOARD_VERSION: &str = "2.21.0";

/// Bound on creating the virtual environment and installing TensorBoard.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound on one helper script.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on the server coming up and loading the sweep root.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The checks

/// Check 1: `EventAccumulator` sees every scalar, the image with its size, and the text.
#[test]
fn event_accumulator_reads_scalars_image_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    write_png(&run.join("samples/step-20.png"), 7, 5);

    let mut sink = TensorBoardSink::new(run).unwrap();
    sink.write(&start("run-1", None)).unwrap();
    for step in 1..=20u64 {
        sink.write(&scalar("train/loss", step, 1.0 / step as f64)).unwrap();
        sink.write(&scalar("train/lr", step, 1e-6 * step as f64)).unwrap();
    }
    sink.write(&scalar("val/loss", 20, 0.125)).unwrap();
    let image = Record::Image {
        key: "validation/a photo of sks dog/0".into(),
        step: 20,
        path: "samples/step-20.png".into(),
        width: 7,
        height: 5,
        wall_time: 100.0,
    };
    sink.write(&image).unwrap();
    let text = "**prompt**: a photo of sks dog";
    sink.write(&Record::Text { key: "prompts".into(), step: 0, text: text.into(), wall_time: 100.0 }).unwrap();
    sink.write(&Record::End { status: EndStatus::Success, wall_time: 101.0 }).unwrap();
    drop(sink);

    let got = python("accumulate.py", &[run]);
    let loss: Vec<(i64, f32)> = (1..=20).map(|s| (s, (1.0 / s as f64) as f32)).collect();
    let lr: Vec<(i64, f32)> = (1..=20).map(|s| (s, (1e-6 * s as f64) as f32)).collect();
    assert_eq!(points(&got["scalars"]["train/loss"]), loss, "train/loss in {got}");
    assert_eq!(points(&got["scalars"]["train/lr"]), lr, "train/lr in {got}");
    assert_eq!(points(&got["scalars"]["val/loss"]), [(20, 0.125)], "val/loss in {got}");
    assert_eq!(got["scalars"].as_object().unwrap().len(), 3, "scalar tags in {got}");

    let png_len = std::fs::metadata(run.join("samples/step-20.png")).unwrap().len();
    assert_eq!(got["images"], json!({ "validation/a photo of sks dog/0": [[20, 7, 5, png_len]] }), "{got}");
    assert_eq!(got["texts"], json!({ "prompts": [[0, text]] }), "{got}");
}

/// A real training run's event file: every logged scalar, the validation image and the config
/// text reach TensorBoard.
#[test]
fn a_training_run_is_readable_by_tensorboard() {
    let root = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .arg("--root")
        .arg(root.path())
        .args([
            "train",
            "sweeps/base/tiny.yaml",
            "--set",
            "train.max_train_steps=4",
            "--set",
            "validation.every_steps=2",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let run = std::fs::read_dir(root.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    let got = python("accumulate.py", &[&run]);
    let loss = points(&got["scalars"]["train/loss"]);
    assert_eq!(loss.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4], "{got}");
    for tag in ["train/lr", "train/grad_norm", "train/loss_instance", "train/loss_prior"] {
        assert_eq!(points(&got["scalars"][tag]).len(), 4, "{tag} in {got}");
    }
    assert_eq!(points(&got["scalars"]["val/loss"]).iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4], "{got}");
    let image = &got["images"]["validation/a photo of sks dog/0"];
    assert_eq!((image[0][1].as_u64(), image[0][2].as_u64()), (Some(32), Some(32)), "{got}");
    assert!(got["texts"]["config"][0][1].as_str().unwrap().contains("\"pretrained\": \"builtin:tiny\""), "{got}");
}

/// Check 2: a resumed attempt supersedes the earlier attempt's points after the resume step.
#[test]
fn resumed_run_continues_from_the_resume_step() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();

    let mut first = TensorBoardSink::new(run).unwrap();
    first.write(&start("run-1", None)).unwrap();
    for step in 1..=10u64 {
        first.write(&scalar("train/loss", step, step as f64)).unwrap();
    }
    first.write(&Record::End { status: EndStatus::Interrupted, wall_time: 200.0 }).unwrap();
    let first_path = first.path().to_owned();
    drop(first);

    let mut second = TensorBoardSink::new(run).unwrap();
    second.write(&start("run-1", Some(5))).unwrap();
    for step in 6..=8u64 {
        second.write(&scalar("train/loss", step, 100.0 + step as f64)).unwrap();
    }
    second.write(&Record::End { status: EndStatus::Success, wall_time: 300.0 }).unwrap();
    assert!(first_path.as_path() < second.path(), "the second attempt's file must sort after the first's");
    drop(second);

    let got = python("accumulate.py", &[run]);
    let expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 106.0), (7, 107.0), (8, 108.0)];
    assert_eq!(points(&got["scalars"]["train/loss"]), expected, "{got}");
    let log = got["log"].as_array().unwrap();
    assert!(
        log.iter().any(|line| line.as_str().unwrap().contains("Purging expired events")
            && line.as_str().unwrap().contains("Removing 5 scalars")),
        "TensorBoard should log that it purged steps 6..10: {log:?}"
    );
}

/// Check 4: a flipped byte inside a record's payload fails TensorBoard's CRC check.
#[test]
fn flipped_payload_byte_fails_tensorboards_crc_check() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let mut sink = TensorBoardSink::new(run).unwrap();
    sink.write(&start("run-1", None)).unwrap();
    for step in 1..=4u64 {
        sink.write(&scalar("train/loss", step, step as f64)).unwrap();
    }
    sink.flush().unwrap();
    let path = sink.path().to_owned();
    drop(sink);

    // Records: file version, purge marker, session start, then steps 1..4. Corrupt step 3's
    // record (index 5).
    let mut bytes = std::fs::read(&path).unwrap();
    let clean = python("read_records.py", &[&path]);
    assert_eq!(clean, json!({ "records": 7, "error": null }));
    let (payload_start, payload_len) = record_payload(&bytes, 5);
    bytes[payload_start + payload_len / 2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let got = python("read_records.py", &[&path]);
    assert_eq!(got["records"], 5, "the reader stops at the corrupted record: {got}");
    assert_eq!(got["error"]["type"], "DataLossError", "{got}");
    assert!(got["error"]["message"].as_str().unwrap().ends_with("failed event crc32 check"), "{got}");

    // The loader behind EventAccumulator logs the same error and keeps what came before it.
    let got = python("accumulate.py", &[run]);
    assert_eq!(points(&got["scalars"]["train/loss"]), [(1, 1.0), (2, 2.0)], "{got}");
    let log = got["log"].as_array().unwrap();
    assert!(log.iter().any(|line| line.as_str().unwrap().contains("failed event crc32 check")), "{log:?}");
}

/// Checks 3 and 5: the server's HParams tab lists every run of a sweep root with its
/// hyperparameters, status and metric, and its CUSTOM SCALARS tab reads the layout.
#[test]
fn server_lists_sessions_and_reads_the_custom_scalars_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs: [(&str, BTreeMap<String, Value>); 3] = [
        ("run-a", hparams(json!({ "lr": 1e-5, "prior": true, "optimizer": "adamw" }))),
        ("run-b", hparams(json!({ "lr": 5e-6, "prior": false, "optimizer": "adamw" }))),
        ("run-c", hparams(json!({ "lr": 2e-6, "prior": true, "optimizer": "sgd" }))),
    ];
    let metrics = vec!["val/loss".to_owned(), "train/loss".to_owned()];
    let experiment = ExperimentSummary::from_runs("sweep-1", runs.iter().map(|(_, h)| h), metrics, 50.0);
    write_experiment(root, &experiment).unwrap();
    let layout = Layout::builtin().unwrap();
    write_layout(root, &layout, 50.0).unwrap();

    // run-a succeeds, run-b fails, run-c is interrupted after step 10 and resumed after step 5.
    let mut expected_loss = BTreeMap::new();
    for (index, (id, hp)) in runs.iter().enumerate() {
        let mut sink = TensorBoardSink::new(&root.join(id)).unwrap();
        sink.write(&Record::Start {
            run_id: (*id).into(),
            attempt: 1,
            hparams: hp.clone(),
            metrics: vec!["val/loss".into()],
            resume_step: None,
            wall_time: 100.0,
        })
        .unwrap();
        for step in 1..=10u64 {
            sink.write(&scalar("train/loss", step, step as f64)).unwrap();
        }
        let val_loss = 0.5 + index as f64 / 4.0;
        sink.write(&scalar("val/loss", 10, val_loss)).unwrap();
        expected_loss.insert(*id, val_loss);
        let status = [EndStatus::Success, EndStatus::Failure, EndStatus::Interrupted][index];
        sink.write(&Record::End { status, wall_time: 200.0 }).unwrap();
    }
    let mut resumed = TensorBoardSink::new(&root.join("run-c")).unwrap();
    resumed
        .write(&Record::Start {
            run_id: "run-c".into(),
            attempt: 2,
            hparams: runs[2].1.clone(),
            metrics: vec!["val/loss".into()],
            resume_step: Some(5),
            wall_time: 300.0,
        })
        .unwrap();
    for step in 6..=8u64 {
        resumed.write(&scalar("train/loss", step, 100.0 + step as f64)).unwrap();
    }
    resumed.write(&scalar("val/loss", 8, 0.25)).unwrap();
    expected_loss.insert("run-c", 0.25);
    resumed.write(&Record::End { status: EndStatus::Success, wall_time: 400.0 }).unwrap();
    drop(resumed);

    let mut server = Server::start(root);
    let request = session_groups_request();
    // The server loads in the background and answers meanwhile: wait for the finished picture
    // (every session ended, which its last record says), then check it exactly.
    let groups = server.poll("session groups with 3 ended runs and their metrics", |s| {
        let body = s.post("/data/plugin/hparams/session_groups", &request)?;
        let complete = body["sessionGroups"].as_array().is_some_and(|groups| {
            groups.len() == 3
                && groups.iter().all(|g| {
                    g["metricValues"].as_array().is_some_and(|m| m.len() == 2)
                        && g["sessions"][0]["status"].as_str().is_some_and(|s| s != "STATUS_UNKNOWN")
                })
        });
        Ok(complete.then_some(body))
    });
    let groups = groups["sessionGroups"].as_array().unwrap();
    let by_name: BTreeMap<&str, &Value> = groups.iter().map(|g| (g["name"].as_str().unwrap(), g)).collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["run-a", "run-b", "run-c"]);
    for ((id, hp), status) in runs.iter().zip(["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_SUCCESS"]) {
        let group = by_name[id];
        assert_eq!(group["hparams"], json!(hp), "hparams of {id}: {group}");
        let sessions = group["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "{group}");
        assert_eq!(sessions[0]["name"], *id, "{group}");
        assert_eq!(sessions[0]["status"], status, "status of {id}: {group}");
        let metric = |tag: &str| {
            let values = group["metricValues"].as_array().unwrap();
            let found = values.iter().find(|m| m["name"]["tag"] == tag);
            found.unwrap_or_else(|| panic!("no {tag} for {id}: {group}")).clone()
        };
        assert_eq!(metric("val/loss")["value"].as_f64(), Some(expected_loss[id]), "{group}");
        let last_train_step = if *id == "run-c" { 8 } else { 10 };
        assert_eq!(metric("train/loss")["trainingStep"], last_train_step, "{group}");
    }

    // The resumed run's curve, as the scalars dashboard serves it.
    let curve = server.poll("run-c's train/loss up to its last point", |s| {
        let curve = s.get("/data/plugin/scalars/scalars?run=run-c&tag=train/loss")?;
        let ends_at_8 = curve.as_array().and_then(|c| c.last()).is_some_and(|p| p[1] == 8 && p[2] == 108.0);
        Ok(ends_at_8.then_some(curve))
    });
    let steps: Vec<(i64, f64)> =
        curve.as_array().unwrap().iter().map(|p| (p[1].as_i64().unwrap(), p[2].as_f64().unwrap())).collect();
    assert_eq!(steps, [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 106.0), (7, 107.0), (8, 108.0)]);

    // Check 5: the custom-scalars layout, exactly as the built-in JSON describes it.
    let served = server.poll("the custom-scalars layout", |s| {
        let layout = s.get("/data/plugin/custom_scalars/layout")?;
        Ok(layout.get("category").is_some().then_some(layout))
    });
    // The served JSON spells out proto3 defaults (`closed`, `version`).
    let chart = |title: &str, tags: &[&str]| json!({ "title": title, "multiline": { "tag": tags } });
    let category = |title: &str, chart: Value| json!({ "title": title, "chart": [chart], "closed": false });
    let expected = json!({ "version": 0, "category": [
        category("loss", chart("training loss", &["^train/loss$", "^train/loss_instance$", "^train/loss_prior$"])),
        category("learning rate", chart("learning rate", &["^train/lr$"])),
        category("validation", chart("validation loss", &["^val/loss$"])),
        category("prior drift", chart("prior drift", &["^val/prior_drift$"])),
    ]});
    assert_eq!(served, expected);
}

// ---------------------------------------------------------------------------------------------
// Records and files

fn start(run_id: &str, resume_step: Option<u64>) -> Record {
    Record::Start {
        run_id: run_id.into(),
        attempt: if resume_step.is_some() { 2 } else { 1 },
        hparams: hparams(json!({ "lr": 1e-6, "steps": 20, "prior": true, "model": "builtin:tiny" })),
        metrics: vec!["val/loss".into()],
        resume_step,
        wall_time: 100.0,
    }
}

fn scalar(key: &str, step: u64, value: f64) -> Record {
    Record::Scalar { key: key.into(), step, value, wall_time: 100.0 + step as f64 }
}

fn hparams(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).unwrap()
}

/// `[[step, value], ...]` as pairs; values as the 32-bit floats TensorBoard stores (which also
/// absorbs the last-digit differences of printing and parsing them as decimal).
fn points(series: &Value) -> Vec<(i64, f32)> {
    let Some(series) = series.as_array() else { panic!("not a series: {series}") };
    series.iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32)).collect()
}

/// An RGB PNG of `width` x `height` pixels.
fn write_png(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i * 7 % 256) as u8).collect();
    encoder.write_header().unwrap().write_image_data(&pixels).unwrap();
}

/// Start and length of record `index`'s payload in a TFRecord file's bytes.
fn record_payload(bytes: &[u8], index: usize) -> (usize, usize) {
    let mut at = 0;
    for i in 0.. {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        if i == index {
            return (at + 12, len);
        }
        at += 12 + len + 4;
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------------
// Python and the virtual environment

/// The venv's python, created on first use.
fn venv_python() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(create_venv) {
        Ok(python) => python,
        Err(message) => panic!("cannot set up TensorBoard {TENSORBOARD_VERSION} for these tests: {message}"),
    }
}

fn create_venv() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().ok_or("no target directory")?;
    let venv = target.join("tensorboard-venv");
    let marker = venv.join(format!("dbsweep-tensorboard-{TENSORBOARD_VERSION}"));
    if marker.exists() {
        return Ok(venv.join("bin/python"));
    }
    // Build beside it and rename, so an interrupted install is never mistaken for a venv. The
    // venv is used through `bin/python -m`, which works after the move.
    let partial = target.join(format!("tensorboard-venv.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let started = Instant::now();
    run(Command::new("python3").arg("-m").arg("venv").arg(&partial), INSTALL_TIMEOUT)
        .map_err(|e| format!("`python3 -m venv` failed (python3 with its venv module is required): {e}"))?;
    let python = partial.join("bin/python");
    let spec = format!("tensorboard=={TENSORBOARD_VERSION}");
    let left = INSTALL_TIMEOUT.saturating_sub(started.elapsed());
    run(Command::new(&python).args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", &spec]), left)
        .map_err(|e| format!("`pip install {spec}` failed (PyPI must be reachable): {e}"))?;
    std::fs::write(partial.join(marker.file_name().unwrap_or_default()), b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&venv);
    if let Err(e) = std::fs::rename(&partial, &venv) {
        // Another test process won the race; use its venv if it is complete.
        let _ = std::fs::remove_dir_all(&partial);
        if !marker.exists() {
            return Err(format!("cannot move the venv into place: {e}"));
        }
    }
    eprintln!("created {} in {:.0?}", venv.display(), started.elapsed());
    Ok(venv.join("bin/python"))
}

/// Runs helper `script` from `tests/tensorboard/` and parses its JSON output.
fn python(script: &str, args: &[&Path]) -> Value {
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard").join(script);
    let out = run(Command::new(venv_python()).arg(&script_path).args(args), HELPER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {out}"))
}

/// Runs `command` to completion within `timeout`; its stdout, or why it failed with its output.
fn run(command: &mut Command, timeout: Duration) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{command:?} timed out after {timeout:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    if status.success() { Ok(stdout) } else { Err(format!("{command:?} exited with {status}\n{stdout}\n{stderr}")) }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

// ---------------------------------------------------------------------------------------------
// The TensorBoard server

/// A `tensorboard` server on 127.0.0.1, killed on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Server {
    fn start(logdir: &Path) -> Server {
        let python = venv_python();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("tensorboard.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "tensorboard.main", "--load_fast=false", "--host", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--logdir")
            .arg(logdir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tensorboard: {e}"));
        Server { child, port, log, _log_dir: log_dir }
    }

    /// Calls `attempt` until it returns a value, the server dies, or `SERVER_TIMEOUT` passes.
    fn poll<T>(&mut self, what: &str, mut attempt: impl FnMut(&Server) -> Result<Option<T>, String>) -> T {
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match attempt(self) {
                Ok(Some(value)) => return value,
                Ok(None) => last = "incomplete answer".into(),
                Err(e) => last = e,
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                last = format!("the server exited with {status}");
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("tensorboard gave no {what} within {SERVER_TIMEOUT:?} (last: {last})\nserver log:\n{log}");
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        self.request(&format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.request(&(head + &body))
    }

    /// One HTTP/1.0 exchange (the server closes the connection after the response).
    fn request(&self, raw: &str) -> Result<Value, String> {
        let timeout = Some(Duration::from_secs(10));
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(timeout).and_then(|()| stream.set_write_timeout(timeout)).map_err(|e| e.to_string())?;
        stream.write_all(raw.as_bytes()).map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{}: {body}", head.lines().next().unwrap_or_default()));
        }
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // TensorBoard with --load_fast=false is one process and keeps nothing worth a graceful
        // shutdown, so it is killed outright.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dbsweep tensorboard SWEEP` builds a folder the real server reads as one experiment: every
/// run of the sweep is a session group with its swept hyperparameters and metrics.
#[test]
fn a_sweeps_tensorboard_folder_compares_its_runs_in_the_hparams_tab() {
    let root = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sweep = root.path().join("grid.yaml");
    std::fs::write(
        &sweep,
        format!(
            "name: grid\nextends: {}\nbase:\n  data: {{instance_dir: {}, num_class_images: 2}}\n  train: {{max_train_steps: 4}}\n  validation: {{every_steps: 2}}\nmetric: {{name: val/loss, goal: minimize}}\nparameters:\n  train.learning_rate: {{values: [1.0e-4, 1.0e-3]}}\n  train.prior_loss_weight: {{values: [0.5, 1.0]}}\n",
            repo.join("sweeps/base/tiny.yaml").display(),
            repo.join("examples/instance").display()
        ),
    )
    .unwrap();
    let dbsweep = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dbsweep"))
            .current_dir(repo)
            .env_remove("DBSWEEP_ROOT")
            .arg("--root")
            .arg(root.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    dbsweep(&["run", sweep.to_str().unwrap(), "--gpus", "none"]);
    let printed = dbsweep(&["tensorboard", "grid"]);
    let logdir = PathBuf::from(printed.trim().strip_prefix("tensorboard --logdir ").unwrap());
    let mut server = Server::start(&logdir);
    let request = session_groups_request();
    let body = server.poll("4 session groups with val/loss", |s| {
        let body = s.post("/data/plugin/hparams/session_groups", &request)?;
        let ready = body["sessionGroups"].as_array().is_some_and(|g| {
            g.len() == 4
                && g.iter().all(|g| {
                    g["metricValues"].as_array().is_some_and(|m| m.iter().any(|v| v["name"]["tag"] == "val/loss"))
                })
        });
        Ok(ready.then_some(body))
    });
    let mut pairs: Vec<(f64, f64)> = body["sessionGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["hparams"]["train.learning_rate"].as_f64().unwrap(),
                g["hparams"]["train.prior_loss_weight"].as_f64().unwrap(),
            )
        })
        .collect();
    pairs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(pairs, [(1e-4, 0.5), (1e-4, 1.0), (1e-3, 0.5), (1e-3, 1.0)]);
    let layout = server.poll("the sweep's custom-scalars layout", |s| {
        let layout = s.get("/data/plugin/custom_scalars/layout")?;
        Ok(layout.get("category").is_some().then_some(layout))
    });
    assert!(layout.to_string().contains("train/loss"), "{layout}");
}

/// The hparams plugin's ListSessionGroupsRequest for every session with its metrics.
fn session_groups_request() -> Value {
    json!({
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
        "includeMetrics": true,
    })
}
