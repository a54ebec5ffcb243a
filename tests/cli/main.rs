//! End-to-end tests of the `dbsweep` binary: one module per command, each asserting output
//! and exit codes. Every test gets its own output root in a temporary folder and runs from
//! the repository root, so the shipped `sweeps/` files are what is tested.

mod bayes;
mod docs;
mod errors;
mod lora;
mod ls;
mod plan;
mod report;
mod run;
mod sample;
mod show;
mod submit;
mod train;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A test's output root and a way to run dbsweep against it.
pub struct Env {
    root: tempfile::TempDir,
}

/// What a dbsweep invocation returned.
pub struct Run {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        Self { root: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn db(&self) -> PathBuf {
        self.root().join("dbsweep.sqlite")
    }

    /// Runs `dbsweep --root ROOT ARGS...` from the repository root.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// Like [`Env::run`], with extra environment variables.
    pub fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbsweep"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("--root").arg(self.root()).args(args);
        cmd.env_remove("DBSWEEP_ROOT");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let Output { status, stdout, stderr } = cmd.output().expect("dbsweep runs");
        // A process killed by a signal reports 128 + the signal number, as shells do.
        let code =
            status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
        let run = Run { code, stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() };
        assert!(!run.stderr.contains("panicked"), "dbsweep panicked:\n{}", run.stderr);
        run
    }

    /// Runs and asserts exit code 0, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "dbsweep {args:?} failed:\n{}", run.stderr);
        run.stdout
    }

    /// Runs and parses stdout as JSON (exit code 0 asserted).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Writes a file under the output root's sibling scratch folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.root().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// A folder holding a fake `nvidia-smi` that lists `n` GPUs (this machine has none; the
/// scheduler only reads `nvidia-smi`'s list), and the `PATH` that puts it first.
pub fn fake_nvidia_smi(env: &Env, n: usize) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = env.root().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lines: Vec<String> = (0..n).map(|i| format!("echo '{i}, Fake GPU, 81559, 1, 0'")).collect();
    let script = bin.join("nvidia-smi");
    std::fs::write(&script, format!("#!/bin/sh\n{}\n", lines.join("\n"))).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// Starts `dbsweep --root ROOT ARGS...` from the repository root with extra environment
/// variables, its output piped.
pub fn spawn(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbsweep"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("--root").arg(env.root()).args(args);
    cmd.env_remove("DBSWEEP_ROOT").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The first column of `sql`'s rows in the test's store.
pub fn query<T: rusqlite::types::FromSql>(env: &Env, sql: &str) -> Vec<T> {
    try_query(env, sql).unwrap()
}

/// `sql`'s rows, or an error while the store is being created.
pub fn try_query<T: rusqlite::types::FromSql>(env: &Env, sql: &str) -> rusqlite::Result<Vec<T>> {
    let conn = rusqlite::Connection::open(env.db())?;
    let mut stmt = conn.prepare(sql)?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Waits (bounded) until no run is `running`.
pub fn settle(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if query::<i64>(env, "SELECT COUNT(*) FROM runs WHERE status = 'running'")[0] == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("runs still running after 60 s");
}
