//! `dbsweep export REF --format diffusers OUT`: a checkpoint as a diffusers model folder.

use std::io::Write;
use std::path::Path;

use super::{Error, read_store};
use crate::model::builtin;
use crate::report::{checkpoint_ref, export};

/// Exports the checkpoint `reference` names into the new folder `out_dir`.
pub fn export(root: &Path, reference: &str, out_dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let store = read_store(root, "export")?;
    let r = checkpoint_ref::resolve(&store, root, reference)?;
    let base = builtin::resolve(&r.config.model.pretrained, &root.join("models"))?;
    export::diffusers(&base, &r.folder, out_dir)?;
    writeln!(out, "exported run {} at step {} to {}", r.run_id, r.step, out_dir.display())?;
    Ok(())
}
