//! Errors of the model layer: unreadable or inconsistent model folders, and compute errors.

use std::path::PathBuf;

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model folder could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON config file is malformed or holds a value dbsweep cannot use.
    #[error("{path}:{line}:{column}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A weights file is not a readable safetensors file (truncated, damaged, or another
    /// format).
    #[error("`{path}` is not a readable safetensors file ({message}): the file is damaged or incomplete")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// A file the model needs is not there.
    #[error("`{path}` is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The weights do not match the architecture the config describes.
    #[error("`{path}` does not match its config:\n{}", problems.join("\n"))]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// One line per missing or mis-shaped tensor.
        problems: Vec<String>,
    },
    /// A model folder lacks a required file.
    #[error("`{folder}` is not a diffusers model folder: {what} is missing (expected {expected})")]
    Layout {
        /// The folder.
        folder: PathBuf,
        /// What is missing.
        what: String,
        /// What should be there.
        expected: String,
    },
    /// The tokenizer could not be built or used.
    #[error("tokenizer `{path}`: {message}")]
    Tokenizer {
        /// The tokenizer folder or file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// An image file cannot be decoded or does not fit the preprocessing.
    #[error("image `{path}`: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// LoRA adapters that do not fit the model (a target naming no layer, a file for another
    /// model) or an adapter file that is not one.
    #[error("{what}: {message}")]
    Adapter {
        /// The setting (`lora.target_modules`) or the file.
        what: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A tensor computation failed.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The GPU a scheduler assigned cannot be used.
    #[error("cannot use the assigned GPU (CUDA_VISIBLE_DEVICES={visible}): {message}")]
    Device {
        /// The value of `CUDA_VISIBLE_DEVICES`.
        visible: String,
        /// Why.
        message: String,
    },
    /// Writing an output failed.
    #[error("cannot write `{path}`: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

impl ModelError {
    /// Whether the error is the user's input (a bad folder, config, weights or tokenizer).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ModelError::Candle(_) | ModelError::Write { .. } | ModelError::Device { .. })
    }

    /// A config error at the position serde_json reported.
    pub fn config(path: &std::path::Path, err: &serde_json::Error) -> Self {
        ModelError::Config {
            path: path.to_path_buf(),
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }

    /// A config error about one key.
    pub fn config_key(path: &std::path::Path, key: &str, message: impl std::fmt::Display) -> Self {
        ModelError::Config { path: path.to_path_buf(), line: 0, column: 0, message: format!("key `{key}`: {message}") }
    }
}

/// Result alias of the model layer.
pub type Result<T> = std::result::Result<T, ModelError>;
