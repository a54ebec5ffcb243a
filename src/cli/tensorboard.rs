//! `dbsweep tensorboard SWEEP`: build the sweep's TensorBoard folder and print the command.

use std::io::Write;
use std::path::Path;

use super::{Error, open_store};
use crate::report::tensorboard::{SweepBoardError, build};

/// Builds the sweep's TensorBoard folder (runs under readable names, the HParams experiment
/// summary, the custom-scalars layout) and prints the `tensorboard` command that shows it.
pub fn tensorboard(root: &Path, sweep: &str, out: &mut dyn Write) -> Result<(), Error> {
    let store = open_store(root, "tensorboard")?;
    let layout = Path::new("dashboards/tensorboard-layout.json");
    let dir = build(&store, root, sweep, layout).map_err(|e| match e {
        SweepBoardError::Store(e) => Error::Store(e),
        other => Error::Usage(other.to_string()),
    })?;
    writeln!(out, "tensorboard --logdir {}", dir.display())?;
    Ok(())
}
