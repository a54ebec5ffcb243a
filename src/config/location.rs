//! Where a value came from: a file position, an environment variable, a flag or a default.
//!
//! Every user-facing configuration error and every recorded parameter carries a [`Origin`], so
//! a user can always find the line that set a value.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a YAML file: 1-based line and column, as editors count them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as the user named it (or as `extends:` resolved it).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// The layer that supplied a resolved value, lowest precedence first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// dbsweep's built-in default.
    Default,
    /// A YAML file (experiment file or a sweep file's `base:`), at this position.
    File(Location),
    /// A swept parameter of the sweep file, declared at this position.
    Sweep(Location),
    /// An environment variable, by name.
    Env(String),
    /// A `--set key=value` flag, as written.
    Flag(String),
}

impl Origin {
    /// A short tag for tables and the lineage store: `default`, `file`, `sweep`, `env`, `flag`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File(_) => "file",
            Origin::Sweep(_) => "sweep",
            Origin::Env(_) => "env",
            Origin::Flag(_) => "flag",
        }
    }

    /// The detail beside [`Origin::kind`]: a `file:line:column`, variable name or flag text.
    pub fn detail(&self) -> String {
        match self {
            Origin::Default => String::new(),
            Origin::File(loc) | Origin::Sweep(loc) => loc.to_string(),
            Origin::Env(name) => name.clone(),
            Origin::Flag(text) => format!("--set {text}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File(loc) => write!(f, "{loc}"),
            Origin::Sweep(loc) => write!(f, "swept at {loc}"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(text) => write!(f, "flag --set {text}"),
        }
    }
}

/// A path into a YAML document: mapping keys and sequence indices.
pub type NodePath = Vec<String>;

/// Positions of every key and value of one YAML document.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    file: PathBuf,
    keys: HashMap<NodePath, (usize, usize)>,
    values: HashMap<NodePath, (usize, usize)>,
}

impl SourceMap {
    /// An empty map for `file`.
    pub fn new(file: &Path) -> Self {
        Self { file: file.to_path_buf(), ..Self::default() }
    }

    /// The file this map describes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Records that the key at `path` starts at `line`/`column` (both 1-based).
    pub(crate) fn add_key(&mut self, path: NodePath, line: usize, column: usize) {
        self.keys.insert(path, (line, column));
    }

    /// Records that the value at `path` starts at `line`/`column` (both 1-based).
    pub(crate) fn add_value(&mut self, path: NodePath, line: usize, column: usize) {
        self.values.insert(path, (line, column));
    }

    /// Where the key at `path` is written, falling back to the nearest enclosing key.
    pub fn key(&self, path: &[String]) -> Location {
        self.nearest(&self.keys, path)
    }

    /// Where the value at `path` is written, falling back to its key, then enclosing keys.
    pub fn value(&self, path: &[String]) -> Location {
        match self.values.get(path) {
            Some(&(line, column)) => self.at(line, column),
            None => self.key(path),
        }
    }

    fn nearest(&self, map: &HashMap<NodePath, (usize, usize)>, path: &[String]) -> Location {
        (0..=path.len())
            .rev()
            .find_map(|n| map.get(&path[..n]).or_else(|| self.values.get(&path[..n])))
            .map(|&(line, column)| self.at(line, column))
            .unwrap_or_else(|| self.at(1, 1))
    }

    fn at(&self, line: usize, column: usize) -> Location {
        Location { file: self.file.clone(), line, column }
    }
}
