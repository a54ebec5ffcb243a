//! What the parity tests share: the fixtures folder, safetensors metadata and the error measure.

#![allow(dead_code)] // each test crate uses what it needs

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `__metadata__` of the safetensors file at `path`.
pub fn metadata(path: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap_or_default()
}

/// The largest magnitude of `t`.
pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Largest absolute difference divided by the reference's largest magnitude.
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims());
    let diff = max_abs(&(ours.to_dtype(DType::F32).unwrap() - reference.to_dtype(DType::F32).unwrap()).unwrap());
    diff / max_abs(reference).max(1e-12)
}
