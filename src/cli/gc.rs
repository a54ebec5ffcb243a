//! `dbsweep gc SWEEP [--keep best,last] [--dry-run]`: delete checkpoints nobody needs.

use std::io::Write;
use std::path::Path;

use super::{Error, open_store};
use crate::report::gc::{Keep, collect_garbage};

/// Deletes (or with `dry_run` lists) the checkpoints of `sweep` that `keep` does not keep.
pub fn gc(root: &Path, sweep: &str, keep: Keep, dry_run: bool, out: &mut dyn Write) -> Result<(), Error> {
    let mut store = open_store(root, "gc")?;
    let removed = collect_garbage(&mut store, root, sweep, keep, dry_run)?;
    let freed: i64 = removed.iter().map(|r| r.size_bytes).sum();
    if dry_run {
        for r in &removed {
            writeln!(out, "would remove {} step {} ({:.1} MB)", r.run_id, r.step, r.size_bytes as f64 / 1e6)?;
        }
        writeln!(out, "would remove {} checkpoints, freeing {:.1} MB (dry run)", removed.len(), freed as f64 / 1e6)?;
    } else {
        writeln!(out, "removed {} checkpoints, freed {:.1} MB", removed.len(), freed as f64 / 1e6)?;
    }
    Ok(())
}
