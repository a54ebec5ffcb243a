//! `dbsweep dashboard SWEEP [--out FILE]`: one self-contained HTML page for a sweep.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Error, read_store};
use crate::report::dashboard;

/// Writes the dashboard of sweep `sweep` (id or name) from the store under `root` to `out_file`
/// (default `ROOT/dashboards/<sweep-id>.html`, created if needed) and prints the absolute path
/// written.
pub fn dashboard(root: &Path, sweep: &str, out_file: Option<&Path>, out: &mut dyn Write) -> Result<(), Error> {
    let store = read_store(root, "dashboard")?;
    let data = dashboard::collect(&store, root, sweep)?;
    let path: PathBuf = match out_file {
        Some(p) => p.to_path_buf(),
        None => root.join("dashboards").join(format!("{}.html", data.sweep.id)),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::atomic_file::write(&path, dashboard::render(&data).as_bytes())?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let missing = data.runs.iter().filter(|r| r.sample.as_ref().is_none_or(|s| s.data_uri.is_none())).count();
    writeln!(
        out,
        "wrote {} ({} runs{}{})",
        path.display(),
        data.runs.len(),
        data.best.map(|b| format!(", best {}", data.runs[b].row.id)).unwrap_or_default(),
        if missing > 0 { format!(", {missing} without a validation image") } else { String::new() }
    )?;
    Ok(())
}
