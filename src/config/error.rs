//! Configuration errors: every problem names where it was written, the key, and what was
//! expected. A [`ConfigError`] holds all problems found in one pass, so a user fixes a file in
//! one go rather than one error per run of the tool.

use std::fmt;
use std::path::PathBuf;

use super::location::Origin;

/// What is wrong with one value or key.
#[derive(Clone, Debug, PartialEq)]
pub enum ProblemKind {
    /// The file could not be read.
    Read(String),
    /// The YAML itself is malformed.
    Syntax(String),
    /// A key that dbsweep does not know, with the closest known key when one is close.
    UnknownKey {
        /// The nearest known key, if any is close enough to be a likely typo.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or outside its allowed range.
    Invalid {
        /// What the key accepts, in words ("a number > 0").
        expected: String,
        /// The offending value as written.
        found: String,
    },
    /// A required key is absent.
    Missing {
        /// What the key must hold.
        expected: String,
    },
    /// Two settings that cannot both hold.
    Conflict(String),
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Where the offending text came from.
    pub origin: Origin,
    /// The dotted key concerned (`train.learning_rate`), when the problem has one.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem at `origin` about `key`.
    pub fn new(origin: Origin, key: Option<String>, kind: ProblemKind) -> Self {
        Self { origin, key, kind }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, &self.kind) {
            (Origin::File(loc), ProblemKind::Read(_)) => write!(f, "{}: ", loc.file.display())?,
            (origin, _) => write!(f, "{origin}: ")?,
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        match &self.kind {
            ProblemKind::Read(msg) => write!(f, "cannot read file: {msg}"),
            ProblemKind::Syntax(msg) => write!(f, "invalid YAML: {msg}"),
            ProblemKind::UnknownKey { suggestion: Some(s) } => {
                write!(f, "unknown key (did you mean `{s}`?)")
            }
            ProblemKind::UnknownKey { suggestion: None } => {
                write!(f, "unknown key (see the sweep-file reference in README.md)")
            }
            ProblemKind::Invalid { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ProblemKind::Missing { expected } => write!(f, "missing: expected {expected}"),
            ProblemKind::Conflict(msg) => f.write_str(msg),
        }
    }
}

/// All problems found while loading and validating a configuration or sweep file.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps a non-empty list of problems.
    pub fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        Self { problems }
    }

    /// The problems, in the order they were found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `Ok(value)` when `problems` is empty, else the error.
    pub fn check<T>(problems: Vec<Problem>, value: T) -> Result<T, ConfigError> {
        if problems.is_empty() { Ok(value) } else { Err(ConfigError::new(problems)) }
    }

    /// An error about a file that could not be read.
    pub fn read(path: PathBuf, err: &std::io::Error) -> Self {
        let origin = Origin::File(super::Location { file: path, line: 1, column: 1 });
        Self::new(vec![Problem::new(origin, None, ProblemKind::Read(err.to_string()))])
    }
}

impl From<Problem> for ConfigError {
    fn from(problem: Problem) -> Self {
        Self::new(vec![problem])
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
