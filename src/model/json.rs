//! Reading diffusers/transformers `config.json` files into typed configs.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::{ModelError, Result};

/// Reads and parses the JSON file at `path`; errors carry line and column.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, &e))
}

/// A config value given either once for all blocks or once per block (diffusers accepts both).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per block.
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for block `i` of `n`, or `None` when a list has the wrong length.
    pub fn get(&self, i: usize, n: usize) -> Option<T> {
        match self {
            PerBlock::One(v) => Some(v.clone()),
            PerBlock::Many(vs) if vs.len() == n => vs.get(i).cloned(),
            PerBlock::Many(_) => None,
        }
    }
}
