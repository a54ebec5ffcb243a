//! The W&B sink and `sync` against a local server that enforces the contract wandb-core 0.31
//! exercises (captured in the reference request log of the real SDK):
//!
//! - GraphQL: the exact query texts and operation names, the variables' names, Basic auth.
//! - file_stream: Basic auth, history offsets contiguous and never repeated, rows with `_step`,
//!   `_runtime` and `_timestamp`, the summary at offset 0, `uploaded` naming only files that
//!   arrived, `complete` and `exitcode` at the end.
//! - Uploads: `PUT` to the URL `CreateRunFiles` gave, with its headers and no credentials.
//!
//! Faults are injected per route (statuses, `Retry-After`, dropped connections, delays). Every
//! wait in this file is bounded; the server's threads end when its guard drops.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbsweep::config::{WandbConfig, WandbMode};
use dbsweep::tracking::wandb::{RetryPolicy, SyncOptions, WandbOptions, WandbSink, pending, sync};
use dbsweep::tracking::{EndStatus, Record, Sink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// What the real SDK sends

/// `UpsertBucket` as wandb 0.31.0 sent it (reference request log, requests 1 and 2).
const UPSERT_BUCKET: &str = "\nmutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {\n\tupsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,entityName:$entity,description:$description,displayName:$displayName,notes:$notes,config:$config,commit:$commit,host:$host,debug:$debug,jobProgram:$program,jobRepo:$repo,jobType:$jobType,state:$state,sweep:$sweep,tags:$tags,summaryMetrics:$summaryMetrics}) {\n\t\tbucket {\n\t\t\tid\n\t\t\tname\n\t\t\tdisplayName\n\t\t\tdescription\n\t\t\tconfig\n\t\t\tsweepName\n\t\t\tproject {\n\t\t\t\tid\n\t\t\t\tname\n\t\t\t\tentity {\n\t\t\t\t\tid\n\t\t\t\t\tname\n\t\t\t\t}\n\t\t\t}\n\t\t\thistoryLineCount\n\t\t}\n\t\tinserted\n\t}\n}\n";

/// `CreateRunFiles` as wandb 0.31.0 sent it (reference request log, request 4).
const CREATE_RUN_FILES: &str = "\nmutation CreateRunFiles ($entity: String!, $project: String!, $run: String!, $files: [String!]!) {\n\tcreateRunFiles(input: {entityName:$entity,projectName:$project,runName:$run,files:$files}) {\n\t\trunID\n\t\tuploadHeaders\n\t\tfiles {\n\t\t\tname\n\t\t\tuploadUrl\n\t\t}\n\t}\n}\n";

/// `RunResumeStatus` as wandb-core's genqlient code sends it (`core/internal/gql/gql_gen.go`;
/// the captured session did not resume).
const RUN_RESUME_STATUS: &str = "\nquery RunResumeStatus ($project: String, $entity: String, $name: String!) {\n\tmodel(name: $project, entityName: $entity) {\n\t\tid\n\t\tname\n\t\tentity {\n\t\t\tid\n\t\t\tname\n\t\t}\n\t\tbucket(name: $name, missingOk: true) {\n\t\t\tid\n\t\t\tname\n\t\t\tsummaryMetrics\n\t\t\tdisplayName\n\t\t\tlogLineCount\n\t\t\thistoryLineCount\n\t\t\teventsLineCount\n\t\t\thistoryTail\n\t\t\teventsTail\n\t\t\tconfig\n\t\t\ttags\n\t\t\tnotes\n\t\t\twandbConfig(keys: [\"t\"])\n\t\t}\n\t}\n}\n";

/// `UpsertBucket`'s variables, in the SDK's order.
const UPSERT_VARIABLES: [&str; 19] = [
    "id",
    "name",
    "project",
    "entity",
    "groupName",
    "description",
    "displayName",
    "notes",
    "commit",
    "config",
    "host",
    "debug",
    "program",
    "repo",
    "jobType",
    "state",
    "sweep",
    "tags",
    "summaryMetrics",
];

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";
const RUN: &str = "r-000001";
const ENTITY: &str = "test-entity";

// ---------------------------------------------------------------------------------------------
// The server

/// A fault to inject into the next request on a route.
#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status.
    Status(u16),
    /// Answer 429 with this `Retry-After`.
    TooMany(&'static str),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Graphql(&'static str),
    FileStream,
    Upload,
}

/// One request as received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    route: Route,
    /// `None` when a fault answered it.
    handled: bool,
    json: Option<Value>,
}

#[derive(Default)]
struct State {
    key: String,
    /// The run name the server expects (empty: adopt the first UpsertBucket's).
    run: String,
    port: u16,
    seen: Vec<Seen>,
    violations: Vec<String>,
    history: Vec<String>,
    summary: Option<String>,
    uploads: BTreeMap<String, Vec<u8>>,
    uploaded: Vec<String>,
    exitcodes: Vec<i64>,
    faults: VecDeque<(Route, Fault)>,
    delay: Duration,
    stopped: bool,
    /// Hand out upload URLs as the server names the files, spaces and all (as some servers
    /// and proxies do), instead of percent-encoded.
    raw_upload_urls: bool,
}

/// A local W&B server; stops when dropped.
struct Server {
    base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("api:{key}")))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl Server {
    fn start() -> Server {
        Self::with_key(KEY)
    }

    fn with_key(key: &str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { key: key.into(), run: RUN.into(), port, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = Arc::clone(&st);
                        std::thread::spawn(move || handle(stream, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server { base: format!("http://127.0.0.1:{port}"), state, stop, accept: Some(accept) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn fault(&self, route: Route, fault: Fault) {
        self.state().faults.push_back((route, fault));
    }

    /// Requests the server handled on `route` (faults not counted).
    fn handled(&self, route: Route) -> Vec<Seen> {
        self.state().seen.iter().filter(|s| s.route == route && s.handled).cloned().collect()
    }

    fn assert_no_violations(&self) {
        let v = self.state().violations.clone();
        assert!(v.is_empty(), "contract violations:\n{}", v.join("\n"));
    }

    /// History steps in offset order.
    fn steps(&self) -> Vec<u64> {
        self.state()
            .history
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["_step"].as_u64().unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, extra: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
}

/// One request as read: method, path, headers (lowercase names), body.
type Incoming = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one request.
fn read_request(stream: &mut TcpStream) -> Option<Incoming> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, headers, body))
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let Some((method, path, headers, body)) = read_request(&mut stream) else { return };
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let route = if path == "/graphql" {
        let op = json.as_ref().and_then(|j| j["operationName"].as_str()).unwrap_or("?");
        Route::Graphql(match op {
            "UpsertBucket" => "UpsertBucket",
            "RunResumeStatus" => "RunResumeStatus",
            "CreateRunFiles" => "CreateRunFiles",
            _ => "?",
        })
    } else if path.starts_with("/upload/") {
        Route::Upload
    } else {
        Route::FileStream
    };
    let (delay, fault) = {
        let mut s = state.lock().unwrap();
        let fault = s.faults.iter().position(|(r, _)| *r == route).and_then(|i| s.faults.remove(i)).map(|(_, f)| f);
        s.seen.push(Seen { at: Instant::now(), route, handled: fault.is_none(), json: json.clone() });
        (s.delay, fault)
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    match fault {
        Some(Fault::Status(code)) => return respond(&mut stream, code, "", "{\"error\":\"injected\"}"),
        Some(Fault::TooMany(after)) => {
            return respond(&mut stream, 429, &format!("Retry-After: {after}\r\n"), "{\"error\":\"slow down\"}");
        }
        Some(Fault::Drop) => {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        None => {}
    }
    let mut s = state.lock().unwrap();
    let violation = |s: &mut State, msg: String| s.violations.push(format!("{method} {path}: {msg}"));
    let auth = header("authorization");
    if route == Route::Upload {
        if auth.is_some() {
            violation(&mut s, "an upload carried credentials".into());
        }
        if header("x-fake-header").as_deref() != Some("abc") {
            violation(&mut s, "the upload lacks CreateRunFiles' uploadHeaders".into());
        }
        if method != "PUT" {
            violation(&mut s, "uploads are PUT".into());
        }
        let name = percent_decode(&path["/upload/".len()..]);
        s.uploads.insert(name, body);
        return respond(&mut stream, 200, "", "");
    }
    if auth.as_deref() != Some(basic(&s.key).as_str()) {
        let echo = format!("{{\"error\":\"bad credentials {} for key {}\"}}", auth.unwrap_or_default(), s.key);
        return respond(&mut stream, 401, "", &echo);
    }
    if method != "POST" || header("content-type").as_deref() != Some("application/json") {
        violation(&mut s, "API calls are POST application/json".into());
    }
    let Some(json) = json else {
        violation(&mut s, "body is not JSON".into());
        return respond(&mut stream, 400, "", "{}");
    };
    match route {
        Route::Graphql(op) => {
            let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
            if keys != ["query", "variables", "operationName"] {
                violation(&mut s, format!("body keys {keys:?}"));
            }
            let expected = match op {
                "UpsertBucket" => UPSERT_BUCKET,
                "RunResumeStatus" => RUN_RESUME_STATUS,
                "CreateRunFiles" => CREATE_RUN_FILES,
                _ => "",
            };
            if json["query"].as_str() != Some(expected) {
                violation(&mut s, format!("query text of {op} differs from the SDK's"));
            }
            let vars = &json["variables"];
            let names: Vec<&str> = vars.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            let count = s.history.len();
            if s.run.is_empty() && op == "UpsertBucket" {
                s.run = json["variables"]["name"].as_str().unwrap_or_default().to_string();
            }
            let run = s.run.clone();
            let bucket = json!({"id": "b1", "name": run, "historyLineCount": count,
                "project": {"id": "p1", "name": "proj", "entity": {"id": "e1", "name": ENTITY}}});
            let reply = match op {
                "UpsertBucket" => {
                    if names != UPSERT_VARIABLES {
                        violation(&mut s, format!("UpsertBucket variables {names:?}"));
                    }
                    if vars["name"] != run.as_str() || vars["project"] != "proj" || vars["jobType"] != "train" {
                        violation(&mut s, format!("UpsertBucket variables {vars}"));
                    }
                    let config: Value = serde_json::from_str(vars["config"].as_str().unwrap_or("")).unwrap_or_default();
                    if !config.as_object().is_some_and(|o| o.values().all(|v| v.get("value").is_some())) {
                        violation(&mut s, format!("config is not {{key: {{value}}}}: {config}"));
                    }
                    json!({"data": {"upsertBucket": {"bucket": bucket, "inserted": count == 0}}})
                }
                "RunResumeStatus" => {
                    if names != ["project", "entity", "name"] || vars["name"] != run.as_str() {
                        violation(&mut s, format!("RunResumeStatus variables {vars}"));
                    }
                    json!({"data": {"model": {"id": "p1", "name": "proj", "entity": {"id": "e1", "name": ENTITY},
                        "bucket": if count == 0 { Value::Null } else { bucket }}}})
                }
                "CreateRunFiles" => {
                    if names != ["entity", "project", "run", "files"]
                        || vars["entity"] != ENTITY
                        || vars["run"] != run.as_str()
                    {
                        violation(&mut s, format!("CreateRunFiles variables {vars}"));
                    }
                    let (port, raw) = (s.port, s.raw_upload_urls);
                    let url = |n: &str| {
                        let name = if raw { n.to_string() } else { n.replace(' ', "%20") };
                        format!("http://127.0.0.1:{port}/upload/{name}")
                    };
                    let files: Vec<Value> = vars["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|n| json!({"name": n, "uploadUrl": url(n)}))
                        .collect();
                    json!({"data": {"createRunFiles": {"runID": "b1", "uploadHeaders": ["X-Fake-Header:abc"], "files": files}}})
                }
                _ => {
                    violation(&mut s, format!("unknown operation {}", json["operationName"]));
                    json!({"errors": [{"message": "unknown operation"}]})
                }
            };
            respond(&mut stream, 200, "", &reply.to_string());
        }
        Route::FileStream => {
            if path != format!("/files/{ENTITY}/proj/{}/file_stream", s.run) {
                violation(&mut s, "wrong file_stream path".into());
            }
            if let Some(h) = json.get("files").and_then(|f| f.get("wandb-history.jsonl")) {
                let offset = h["offset"].as_u64().unwrap_or(u64::MAX) as usize;
                let expected = s.history.len();
                if offset != expected {
                    violation(&mut s, format!("history offset {offset}, expected {expected}"));
                }
                for line in h["content"].as_array().into_iter().flatten() {
                    let row: Value = serde_json::from_str(line.as_str().unwrap_or("")).unwrap_or_default();
                    if ["_step", "_runtime", "_timestamp"].iter().any(|k| !row[k].is_number()) {
                        violation(&mut s, format!("row without _step/_runtime/_timestamp: {line}"));
                    }
                    if offset == expected {
                        s.history.push(line.as_str().unwrap_or("").to_string());
                    }
                }
            }
            if let Some(summary) = json.get("files").and_then(|f| f.get("wandb-summary.json")) {
                let content = summary["content"].as_array().cloned().unwrap_or_default();
                if summary["offset"] != 0 || content.len() != 1 {
                    violation(&mut s, format!("summary {summary}"));
                }
                s.summary = content.first().and_then(Value::as_str).map(str::to_string);
            }
            for name in json["uploaded"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !s.uploads.contains_key(name) {
                    violation(&mut s, format!("`{name}` listed as uploaded before it arrived"));
                }
                s.uploaded.push(name.to_string());
            }
            match (json.get("complete"), json.get("exitcode")) {
                (Some(Value::Bool(true)), Some(code)) => s.exitcodes.push(code.as_i64().unwrap_or(-1)),
                (None, None) => {}
                other => violation(&mut s, format!("complete/exitcode {other:?}")),
            }
            let reply = if s.stopped {
                json!({"exitcode": null, "limits": {}, "stopped": true})
            } else {
                json!({"exitcode": null, "limits": {}})
            };
            respond(&mut stream, 200, "", &reply.to_string());
        }
        Route::Upload => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn env(base: &str, key: &str) -> Vec<(String, String)> {
    vec![("WANDB_BASE_URL".into(), base.into()), ("WANDB_API_KEY".into(), key.into())]
}

fn config(mode: WandbMode) -> WandbConfig {
    WandbConfig { project: "proj".into(), entity: Some(ENTITY.into()), mode }
}

fn fast() -> WandbOptions {
    WandbOptions {
        batch_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_secs(30),
        retry: RetryPolicy {
            wait_min: Duration::from_millis(10),
            wait_max: Duration::from_millis(200),
            max_retries: 5,
        },
        request_timeout: Duration::from_secs(10),
        finish_timeout: Duration::from_secs(15),
        reconnect_interval: None,
        tags: vec!["t1".into()],
        ..WandbOptions::default()
    }
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        retry: RetryPolicy {
            wait_min: Duration::from_millis(10),
            wait_max: Duration::from_millis(100),
            max_retries: 3,
        },
        request_timeout: Duration::from_secs(10),
        max_rows_per_request: 4,
    }
}

fn start(attempt: u32, resume_step: Option<u64>) -> Record {
    let hparams =
        [("train.learning_rate".to_string(), json!(1e-4)), ("seed".to_string(), json!(7))].into_iter().collect();
    Record::Start {
        run_id: RUN.into(),
        attempt,
        hparams,
        metrics: vec!["train/loss".into()],
        resume_step,
        wall_time: 1_700_000_000.0,
    }
}

fn scalar(key: &str, step: u64) -> Record {
    Record::Scalar { key: key.into(), step, value: 1.0 / (step as f64 + 1.0), wall_time: 1_700_000_000.0 + step as f64 }
}

/// Writes a fake PNG into the run folder and returns the image record and its bytes.
fn image(run_dir: &Path, key: &str, step: u64) -> (Record, Vec<u8>) {
    let rel = PathBuf::from(format!("samples/step-{step}.png"));
    std::fs::create_dir_all(run_dir.join("samples")).unwrap();
    let bytes: Vec<u8> =
        b"\x89PNG\r\n\x1a\n".iter().copied().chain((0..200u32).map(|i| (i * step as u32) as u8)).collect();
    std::fs::write(run_dir.join(&rel), &bytes).unwrap();
    (
        Record::Image {
            key: key.into(),
            step,
            path: rel,
            width: 6,
            height: 4,
            wall_time: 1_700_000_000.0 + step as f64,
        },
        bytes,
    )
}

/// Writes steps `steps` (two scalars each, a flush every 3 steps).
fn log_steps(sink: &mut WandbSink, steps: std::ops::Range<u64>) {
    for step in steps {
        sink.write(&scalar("train/loss", step)).unwrap();
        sink.write(&scalar("train/lr", step)).unwrap();
        if step % 3 == 2 {
            sink.flush().unwrap();
        }
    }
}

fn end(status: EndStatus) -> Record {
    Record::End { status, wall_time: 1_700_000_100.0 }
}

/// Polls `f` every 10 ms for at most `limit`.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checks

/// A whole online run: the requests are the SDK's, rows arrive once and in order, the image is
/// uploaded without credentials and listed, and the run is completed with exit code 0.
#[test]
fn online_run_follows_the_sdk_contract() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = WandbSink::with_options(
        &config(WandbMode::Online),
        RUN,
        Some("sweep-1"),
        dir.path(),
        &env(&server.base, KEY),
        fast(),
    )
    .unwrap();
    sink.write(&start(1, None)).unwrap();
    sink.write(&Record::Text { key: "prompt".into(), step: 0, text: "a photo of sks dog".into(), wall_time: 1.7e9 })
        .unwrap();
    log_steps(&mut sink, 0..4);
    let (img, bytes) = image(dir.path(), "validation/a photo of sks dog/0", 3);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 4..8);
    sink.write(&end(EndStatus::Success)).unwrap();
    sink.flush().unwrap();
    let status = sink.finish();
    assert!(status.finished && !status.gave_up, "{status:?}");
    assert_eq!(status.rows_delivered, 8);

    server.assert_no_violations();
    assert_eq!(server.steps(), (0..8).collect::<Vec<_>>());
    let upserts = server.handled(Route::Graphql("UpsertBucket"));
    assert_eq!(upserts.len(), 1);
    let vars = &upserts[0].json.as_ref().unwrap()["variables"];
    assert_eq!(vars["groupName"], "sweep-1");
    assert_eq!(vars["displayName"], RUN);
    assert_eq!(vars["tags"], json!(["t1"]));
    assert_eq!(vars["entity"], ENTITY);
    let config: Value = serde_json::from_str(vars["config"].as_str().unwrap()).unwrap();
    assert_eq!(config, json!({"seed": {"value": 7}, "train.learning_rate": {"value": 1e-4}}));
    assert!(server.handled(Route::Graphql("RunResumeStatus")).is_empty(), "a fresh run needs no resume status");

    let s = server.state();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("media/images/validation/a photo of sks dog/0_3_{}.png", &sha[..20]);
    assert_eq!(s.uploads.get(&name), Some(&bytes), "uploads: {:?}", s.uploads.keys());
    assert_eq!(s.uploaded, vec![name.clone()]);
    let row3: Value = serde_json::from_str(&s.history[3]).unwrap();
    assert_eq!(
        row3["validation/a photo of sks dog/0"],
        json!({"_type": "image-file", "path": name, "sha256": sha, "size": bytes.len(), "format": "png", "width": 6, "height": 4})
    );
    let row0: Value = serde_json::from_str(&s.history[0]).unwrap();
    assert_eq!(row0["prompt"], "a photo of sks dog");
    assert_eq!(row0["train/loss"], 1.0);
    let summary: Value = serde_json::from_str(s.summary.as_deref().unwrap()).unwrap();
    assert_eq!(summary["_step"], 7);
    assert_eq!(summary["train/loss"], 0.125);
    assert_eq!(s.exitcodes, vec![0]);
}

/// 500s, a 429 with `Retry-After`, and dropped connections are retried; `Retry-After` is
/// honoured; nothing is lost or sent twice.
#[test]
fn failures_are_retried_with_wandb_policy() {
    let server = Server::start();
    server.fault(Route::Graphql("UpsertBucket"), Fault::Status(500));
    server.fault(Route::Graphql("UpsertBucket"), Fault::Drop);
    server.fault(Route::FileStream, Fault::TooMany("1"));
    server.fault(Route::FileStream, Fault::Status(503));
    server.fault(Route::Graphql("CreateRunFiles"), Fault::Drop);
    server.fault(Route::Upload, Fault::Status(502));
    let dir = tempfile::tempdir().unwrap();
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), fast())
            .unwrap();
    sink.write(&start(1, None)).unwrap();
    log_steps(&mut sink, 0..4);
    let (img, bytes) = image(dir.path(), "sample", 3);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 4..6);
    sink.write(&end(EndStatus::Failure)).unwrap();
    let status = sink.finish();
    assert!(!status.gave_up, "{status:?}");

    server.assert_no_violations();
    assert_eq!(server.steps(), (0..6).collect::<Vec<_>>());
    let s = server.state();
    assert!(s.faults.is_empty(), "every fault was hit: {:?}", s.faults);
    assert_eq!(s.exitcodes, vec![1]);
    assert_eq!(s.uploads.values().collect::<Vec<_>>(), vec![&bytes]);
    let streams: Vec<&Seen> = s.seen.iter().filter(|r| r.route == Route::FileStream).collect();
    let gap = streams[1].at - streams[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 was not honoured ({gap:?})");
    assert!(streams[2].at - streams[1].at < Duration::from_millis(900), "503 backs off from wait_min");
}

/// A slow server never slows `write` or `flush`: they return in far less than one server
/// round trip, and everything is still delivered at the end.
#[test]
fn slow_server_never_slows_writes() {
    let server = Server::start();
    server.state().delay = Duration::from_millis(800);
    let dir = tempfile::tempdir().unwrap();
    let options = WandbOptions { batch_interval: Duration::from_millis(100), max_rows_per_request: 50, ..fast() };
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), options)
            .unwrap();
    let mut slowest = Duration::ZERO;
    let mut timed = |sink: &mut WandbSink, f: &dyn Fn(&mut WandbSink)| {
        let t = Instant::now();
        f(sink);
        slowest = slowest.max(t.elapsed());
    };
    timed(&mut sink, &|s| s.write(&start(1, None)).unwrap());
    let started = Instant::now();
    for step in 0..150 {
        timed(&mut sink, &|s| s.write(&scalar("train/loss", step)).unwrap());
        timed(&mut sink, &|s| s.write(&scalar("train/lr", step)).unwrap());
        if step % 10 == 9 {
            timed(&mut sink, &|s| s.flush().unwrap());
        }
        if step % 30 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    timed(&mut sink, &|s| s.write(&end(EndStatus::Success)).unwrap());
    let writing = started.elapsed();
    // A write that waited for the server would take its 800 ms; half that leaves room for a
    // loaded machine's scheduling without letting a blocking write pass.
    assert!(slowest < Duration::from_millis(400), "a write took {slowest:?} against an 800 ms server");
    assert!(writing < Duration::from_secs(2), "writing took {writing:?}");
    let status = sink.finish();
    assert!(status.finished && !status.gave_up, "{status:?}");
    server.assert_no_violations();
    assert_eq!(server.steps(), (0..150).collect::<Vec<_>>());
    assert_eq!(server.state().exitcodes, vec![0]);
}

/// The server is down for the whole run: training is not held up, everything is spooled, and
/// `sync` later delivers it to a fresh server, every row once and in order; a second `sync`
/// sends nothing.
#[test]
fn server_down_spools_and_sync_delivers_once() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let options = WandbOptions {
        retry: RetryPolicy { wait_min: Duration::from_millis(5), wait_max: Duration::from_millis(20), max_retries: 2 },
        finish_timeout: Duration::from_secs(5),
        ..fast()
    };
    let t = Instant::now();
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&down, KEY), options).unwrap();
    sink.write(&start(1, None)).unwrap();
    log_steps(&mut sink, 0..5);
    let (img, bytes) = image(dir.path(), "sample", 4);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 5..10);
    sink.write(&end(EndStatus::Success)).unwrap();
    let status = sink.finish();
    assert!(t.elapsed() < Duration::from_secs(5), "a down server held the run up for {:?}", t.elapsed());
    assert!(status.gave_up && status.rows_delivered == 0, "{status:?}");
    assert!(status.last_error.as_deref().unwrap_or("").contains("gave up after 3 attempts"), "{status:?}");
    let left = pending(dir.path()).unwrap();
    assert_eq!((left.attempts, left.entries), (1, 13), "run, 10 rows, the file, the end");

    let server = Server::start();
    let report = sync(dir.path(), &env(&server.base, KEY), &sync_options()).unwrap();
    assert_eq!((report.rows_sent, report.files_uploaded, report.attempts_completed), (10, 1, 1), "{report:?}");
    server.assert_no_violations();
    assert_eq!(server.steps(), (0..10).collect::<Vec<_>>());
    assert!(server.handled(Route::FileStream).len() >= 3, "4 rows per request");
    assert_eq!(server.state().uploads.values().collect::<Vec<_>>(), vec![&bytes]);
    assert_eq!(server.state().exitcodes, vec![0]);
    assert_eq!(pending(dir.path()).unwrap().entries, 0);

    let requests = server.state().seen.len();
    let again = sync(dir.path(), &env(&server.base, KEY), &sync_options()).unwrap();
    assert_eq!(again, Default::default());
    assert_eq!(server.state().seen.len(), requests, "a second sync sends nothing");
}

/// Offline attempts, the first killed mid-run and the second resumed after its last
/// checkpoint: `sync` sends both in order with contiguous offsets, asks `RunResumeStatus` for
/// the resumed attempt, and re-sends the resumed steps after the dead attempt's rows.
#[test]
fn offline_attempts_with_a_crash_and_a_resume_sync_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = WandbSink::from_config(&config(WandbMode::Offline), RUN, None, dir.path(), &[]).unwrap();
    first.write(&start(1, None)).unwrap();
    log_steps(&mut first, 0..7); // steps 0..=5 closed; step 6's row is still open
    std::mem::forget(first); // killed: no End, no flush, no cleanup
    let mut second = WandbSink::from_config(&config(WandbMode::Offline), RUN, None, dir.path(), &[]).unwrap();
    second.write(&start(2, Some(3))).unwrap();
    log_steps(&mut second, 4..9);
    second.write(&end(EndStatus::Success)).unwrap();
    drop(second);
    assert_eq!(pending(dir.path()).unwrap().attempts, 2);

    let server = Server::start();
    let report = sync(dir.path(), &env(&server.base, KEY), &sync_options()).unwrap();
    assert_eq!((report.rows_sent, report.attempts_completed), (11, 1), "{report:?}");
    server.assert_no_violations();
    assert_eq!(server.steps(), vec![0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8]);
    assert_eq!(server.handled(Route::Graphql("RunResumeStatus")).len(), 1);
    assert_eq!(server.handled(Route::Graphql("UpsertBucket")).len(), 2);
    let rows: Vec<Value> = server.state().history.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows[6]["_runtime"].as_f64() >= rows[5]["_runtime"].as_f64(), "runtime continues across attempts");
    let requests = server.state().seen.len();
    assert_eq!(sync(dir.path(), &env(&server.base, KEY), &sync_options()).unwrap(), Default::default());
    assert_eq!(server.state().seen.len(), requests);
}

/// A resumed online attempt asks `RunResumeStatus` before `UpsertBucket` and appends after
/// the lines the server already has.
#[test]
fn resumed_attempt_continues_after_the_servers_lines() {
    let server = Server::start();
    server.state().history = (0..7).map(|s| format!("{{\"_step\":{s},\"_runtime\":1,\"_timestamp\":1}}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), fast())
            .unwrap();
    sink.write(&start(2, Some(4))).unwrap();
    log_steps(&mut sink, 5..9);
    sink.write(&end(EndStatus::Success)).unwrap();
    assert!(sink.finish().finished);
    server.assert_no_violations();
    assert_eq!(server.steps(), vec![0, 1, 2, 3, 4, 5, 6, 5, 6, 7, 8]);
    let s = server.state();
    let graphql: Vec<&str> = s
        .seen
        .iter()
        .filter_map(|r| match r.route {
            Route::Graphql(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(graphql, ["RunResumeStatus", "UpsertBucket"]);
    let first_stream = s.seen.iter().find(|r| r.route == Route::FileStream).unwrap();
    assert_eq!(first_stream.json.as_ref().unwrap()["files"]["wandb-history.jsonl"]["offset"], 7);
}

/// A reply with `"stopped": true` sets the stop flag the caller passed in.
#[test]
fn stopped_reply_sets_the_stop_flag() {
    let server = Server::start();
    server.state().stopped = true;
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = WandbOptions { stop: Arc::clone(&stop), ..fast() };
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), options)
            .unwrap();
    sink.write(&start(1, None)).unwrap();
    log_steps(&mut sink, 0..3);
    assert!(wait_for(Duration::from_secs(10), || stop.load(Ordering::SeqCst)), "no stop after a stopped reply");
    assert!(sink.stop_requested());
    sink.write(&end(EndStatus::Interrupted)).unwrap();
    drop(sink);
    assert_eq!(server.state().exitcodes, vec![1]);
}

/// A distinctive key appears nowhere: not in the run folder (spool, state, log), not in error
/// messages (even when the server echoes it back), not in `Debug` output. A 401 is not
/// retried.
#[test]
fn api_key_never_leaks() {
    let secret = "dbsweep-SECRET-9f8e7d6c5b4a39281706f5e4d3c2b1a0ffee";
    let token = basic(secret)["Basic ".len()..].to_string();
    let server = Server::with_key(KEY); // accepts a different key: every API call gets a 401
    let dir = tempfile::tempdir().unwrap();
    let options = fast();
    let e = env(&server.base, secret);
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &e, options.clone()).unwrap();
    sink.write(&start(1, None)).unwrap();
    log_steps(&mut sink, 0..4);
    sink.write(&end(EndStatus::Success)).unwrap();
    let debug_sink = format!("{sink:?} {options:?}");
    let status = sink.finish();
    assert!(status.gave_up, "{status:?}");
    let error = status.last_error.clone().unwrap();
    assert!(error.contains("HTTP 401"), "{error}");
    assert_eq!(server.state().seen.len(), 1, "401 is never retried");
    let sync_error = sync(dir.path(), &e, &sync_options()).unwrap_err();
    let texts = [debug_sink, format!("{status:?}"), error, sync_error.to_string(), format!("{sync_error:?}")];
    for text in &texts {
        assert!(!text.contains(secret) && !text.contains(&token), "key leaked: {text}");
    }
    assert!(texts[3].contains("***"), "the echoed key is redacted: {}", texts[3]);
    let files = files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("0001.jsonl")) && files.iter().any(|f| f.ends_with("delivery.log")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret) && !text.contains(&token), "key in {}", file.display());
    }
    let no_key =
        WandbSink::from_config(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, "")).unwrap_err();
    assert!(no_key.to_string().contains("no W&B API key for `127.0.0.1`"), "{no_key}");
}

/// After giving up on an unreachable server, the sink tries again later in the run and
/// delivers everything from where it stopped.
#[test]
fn reconnects_after_giving_up() {
    let server = Server::start();
    server.fault(Route::Graphql("UpsertBucket"), Fault::Status(503));
    server.fault(Route::Graphql("UpsertBucket"), Fault::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let options = WandbOptions {
        retry: RetryPolicy { wait_min: Duration::from_millis(5), wait_max: Duration::from_millis(10), max_retries: 1 },
        reconnect_interval: Some(Duration::from_millis(100)),
        ..fast()
    };
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), options)
            .unwrap();
    sink.write(&start(1, None)).unwrap();
    log_steps(&mut sink, 0..3);
    assert!(wait_for(Duration::from_secs(10), || sink.status().rows_delivered == 3), "{:?}", sink.status());
    log_steps(&mut sink, 3..6);
    sink.write(&end(EndStatus::Success)).unwrap();
    let status = sink.finish();
    assert!(status.gave_up && status.last_error.as_deref().unwrap_or("").contains("HTTP 503"), "{status:?}");
    assert_eq!(status.rows_delivered, 6);
    server.assert_no_violations();
    assert_eq!(server.steps(), (0..6).collect::<Vec<_>>());
    assert_eq!(server.state().exitcodes, vec![0]);
}

/// A media file gone from the run folder before `sync` is reported and skipped; the rows and
/// the end still go out.
#[test]
fn missing_media_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = WandbSink::from_config(&config(WandbMode::Offline), RUN, None, dir.path(), &[]).unwrap();
    sink.write(&start(1, None)).unwrap();
    let (img, _) = image(dir.path(), "sample", 0);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 0..2);
    sink.write(&end(EndStatus::Success)).unwrap();
    drop(sink);
    std::fs::remove_dir_all(dir.path().join("samples")).unwrap();
    let server = Server::start();
    let report = sync(dir.path(), &env(&server.base, KEY), &sync_options()).unwrap();
    assert_eq!((report.rows_sent, report.files_uploaded, report.skipped.len()), (2, 0, 1), "{report:?}");
    assert!(report.skipped[0].contains("samples/step-0.png"), "{report:?}");
    server.assert_no_violations();
    assert_eq!(server.state().exitcodes, vec![0]);
    assert!(server.state().uploaded.is_empty());
}

/// A real training run with `tracking.wandb` set delivers every step to the server, ends with
/// `complete` and exit code 0, and leaves the API key nowhere on disk (run folder, store).
#[test]
fn a_training_run_reaches_wandb() {
    let server = Server::start();
    let root = tempfile::tempdir().unwrap();
    // The run id derives from the config: the server adopts the first run name it is sent.
    server.state().run.clear();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .env("WANDB_BASE_URL", &server.base)
        .env("WANDB_API_KEY", KEY)
        .arg("--root")
        .arg(root.path())
        .args([
            "train",
            "sweeps/base/tiny.yaml",
            "--set",
            "train.max_train_steps=5",
            "--set",
            "validation.every_steps=5",
        ])
        .args(["--set", &format!("tracking.wandb={{project: proj, entity: {ENTITY}}}")])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    server.assert_no_violations();
    let steps = server.steps();
    assert!((1..=5).all(|s| steps.contains(&s)), "steps delivered: {steps:?}");
    assert_eq!(server.state().exitcodes, vec![0]);
    for file in files_under(root.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "the API key is in {}", file.display());
    }
}

/// Upload URLs that hold spaces (the file names do) are sent percent-encoded, and arrive.
#[test]
fn upload_urls_with_spaces_are_encoded() {
    let server = Server::start();
    server.state().raw_upload_urls = true;
    let dir = tempfile::tempdir().unwrap();
    let mut sink =
        WandbSink::with_options(&config(WandbMode::Online), RUN, None, dir.path(), &env(&server.base, KEY), fast())
            .unwrap();
    sink.write(&start(1, None)).unwrap();
    let (img, bytes) = image(dir.path(), "validation/a photo of sks dog/0", 1);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 1..3);
    sink.write(&end(EndStatus::Success)).unwrap();
    let status = sink.finish();
    assert!(status.finished && !status.gave_up, "{status:?}");
    server.assert_no_violations();
    assert_eq!(server.state().uploads.values().collect::<Vec<_>>(), vec![&bytes]);
}

/// `dbsweep sync` that could not deliver a file says so and exits non-zero.
#[test]
fn a_sync_that_cannot_deliver_everything_fails() {
    let server = Server::start();
    let root = tempfile::tempdir().unwrap();
    let run_dir = root.path().join("runs").join(RUN);
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut sink = WandbSink::from_config(&config(WandbMode::Offline), RUN, None, &run_dir, &[]).unwrap();
    sink.write(&start(1, None)).unwrap();
    let (img, _) = image(&run_dir, "sample", 1);
    sink.write(&img).unwrap();
    log_steps(&mut sink, 1..3);
    sink.write(&end(EndStatus::Success)).unwrap();
    sink.finish();
    server.fault(Route::Upload, Fault::Status(400));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .arg("--root")
        .arg(root.path())
        .args(["sync", RUN])
        .env_remove("DBSWEEP_ROOT")
        .env("WANDB_BASE_URL", &server.base)
        .env("WANDB_API_KEY", KEY)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("not uploaded:"), "{stdout}");
    assert!(stderr.contains("could not be delivered to W&B"), "{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the key never shows");
}
