//! Configuration: YAML files with positions, figment layering, the typed experiment schema and
//! its validation.
//!
//! Invariant: a [`Resolved`] configuration has passed every check (no unknown keys, right
//! types, every range rule), and every value in it has a recorded [`Origin`].

mod error;
pub mod evaluation;
mod layers;
mod location;
pub mod lora;
mod schema;
mod suggest;
pub mod yaml;

pub use error::{ConfigError, Problem, ProblemKind};
pub use layers::{ENV_PREFIX, Layers, PATH_KEYS, ProbeError, Resolved, absolute_path, canonical, leaf_keys, leaf_mut};
pub use location::{Location, NodePath, Origin, SourceMap};
pub use schema::*;
pub use suggest::suggest;

#[cfg(test)]
mod tests;
