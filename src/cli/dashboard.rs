//! `dbsweep dashboard SWEEP [--out FILE]`: one self-contained HTML page for a sweep.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Error;
use crate::report::dashboard;
use crate::store::{DB_FILE, Store, StoreError};

/// Writes the dashboard of sweep `sweep` (id or name) from the store under `root` to `out_file`
/// (default `dashboards/<sweep-id>.html` in the current folder, created if needed) and prints
/// the path written.
pub fn dashboard(root: &Path, sweep: &str, out_file: Option<&Path>, out: &mut dyn Write) -> Result<(), Error> {
    let Some(store) = Store::open_existing(&root.join(DB_FILE))? else {
        return Err(StoreError::NotFound { what: "sweep", id: sweep.into(), hint: None }.into());
    };
    let data = dashboard::collect(&store, root, sweep)?;
    let path: PathBuf = match out_file {
        Some(p) => p.to_path_buf(),
        None => Path::new("dashboards").join(format!("{}.html", data.sweep.id)),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::atomic_file::write(&path, dashboard::render(&data).as_bytes())?;
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
