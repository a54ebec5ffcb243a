//! The version of dbsweep itself, recorded with every sweep and run.

use serde::Serialize;

/// Which code planned or ran something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeVersion {
    /// The crate version.
    pub version: String,
    /// The git commit it was built from; empty when not built from a checkout.
    pub git_commit: String,
    /// Whether tracked files had uncommitted changes at build time.
    pub git_dirty: bool,
}

impl CodeVersion {
    /// This binary's version, as embedded at build time.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: env!("BUILD_GIT_COMMIT").to_string(),
            git_dirty: env!("BUILD_GIT_DIRTY") == "1",
        }
    }
}

impl std::fmt::Display for CodeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dbsweep {}", self.version)?;
        if !self.git_commit.is_empty() {
            let short = &self.git_commit[..self.git_commit.len().min(12)];
            write!(f, " ({short}{})", if self.git_dirty { ", dirty" } else { "" })?;
        }
        Ok(())
    }
}
