//! What the benchmarks share: running the release `dbsweep` binary in a scratch output root.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs `dbsweep --root ROOT ARGS...` from the repository root; returns its wall time in
/// seconds and its standard output. Panics with its standard error when it fails.
pub fn dbsweep(root: &Path, args: &[&str]) -> (f64, String) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dbsweep"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DBSWEEP_ROOT")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("dbsweep runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (start.elapsed().as_secs_f64(), String::from_utf8_lossy(&out.stdout).into_owned())
}
