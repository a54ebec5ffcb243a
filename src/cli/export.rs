//! `dbsweep export REF [--format diffusers|diffusers-lora|kohya] OUT`: a checkpoint for other
//! tools.

use std::io::Write;
use std::path::Path;

use super::{Error, read_store};
use crate::model::builtin;
use crate::report::{checkpoint_ref, export};

/// Exports the checkpoint `reference` names as `format` into the new folder `out_dir`.
pub fn export(root: &Path, reference: &str, format: &str, out_dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let format: export::Format = format.parse().map_err(Error::Usage)?;
    let store = read_store(root, "export")?;
    let r = checkpoint_ref::resolve(&store, root, reference)?;
    let base = builtin::resolve(&r.config.model.pretrained, &root.join("models"))?;
    let written = export::export(&base, &r, format, out_dir)?;
    writeln!(out, "exported run {} at step {} to {}", r.run_id, r.step, written.display())?;
    Ok(())
}
