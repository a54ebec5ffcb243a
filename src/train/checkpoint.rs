//! Checkpoints: the trained variables in safetensors (a full run's weights with diffusers names,
//! a LoRA run's adapters with PEFT's), optimiser moments in a separate file, a small JSON state, and a manifest of every file's sha256.
//!
//! A checkpoint is written into `step-NNNNNNNN.tmp/`, every file fsynced, then renamed to
//! `step-NNNNNNNN/` and the parent folder fsynced: it exists whole or not at all. On resume the
//! newest checkpoint whose files all match the manifest is used; a corrupt or half-written
//! one is reported and skipped in favour of the previous one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::optimizer::AdamW;
use super::trainable::{TEXT_LORA_FILE, UNET_LORA_FILE};
use crate::image_set::hex;
use crate::model::lora::adapters::AdapterSet;
use crate::model::weights;

/// A checkpoint problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint `{path}`: {message}")]
pub struct CheckpointError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> CheckpointError {
    CheckpointError { path: path.to_path_buf(), message: message.to_string() }
}

/// The training position a checkpoint restores. All randomness derives from the run seed and
/// the step, so the step is the whole position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Whether optimiser moments were saved (weights-only checkpoints cannot resume exactly).
    pub has_optimizer: bool,
    /// Whether the text encoder's weights are included.
    pub has_text_encoder: bool,
    /// Validation metrics at this step, if validated.
    pub metrics: BTreeMap<String, f64>,
    /// The fp16 loss scale after this step (mixed-precision fp16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<super::precision::LossScaler>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, String>,
}

/// A written checkpoint.
#[derive(Clone, Debug)]
pub struct Saved {
    /// Its folder.
    pub path: PathBuf,
    /// sha256 of its manifest (which lists every file's sha256).
    pub sha256: String,
    /// Total bytes.
    pub size: u64,
}

/// The folder of the checkpoint at `step` under `dir`.
pub fn folder(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:08}"))
}

fn sha256_file(path: &Path) -> Result<(String, u64), CheckpointError> {
    let mut file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| err(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    Ok((hex(&hash.finalize()), size))
}

fn sync(path: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| err(path, e))
}

/// Writes a checkpoint at `state.step` under `dir`: each `(file name, variables)` of `files`
/// (the trained variables; see [`super::trainable::Trainable::files`]) and the optimiser's
/// moments (unless weights-only).
pub fn save(
    dir: &Path,
    files: &[(&str, &VarMap)],
    optimizer: Option<&AdamW>,
    state: &TrainState,
) -> Result<Saved, CheckpointError> {
    let final_dir = folder(dir, state.step);
    let tmp = final_dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    for (file, vars) in files {
        weights::save(vars, &tmp.join(file)).map_err(|e| err(&tmp, e))?;
    }
    if let Some(opt) = optimizer {
        let path = tmp.join("optimizer.safetensors");
        let moments = opt.state().map_err(|e| err(&path, e))?;
        candle_core::safetensors::save(&moments, &path).map_err(|e| err(&path, e))?;
    }
    let state_path = tmp.join("state.json");
    std::fs::write(&state_path, serde_json::to_string_pretty(state).expect("state serializes"))
        .map_err(|e| err(&state_path, e))?;
    let mut files = BTreeMap::new();
    let mut size = 0;
    for entry in std::fs::read_dir(&tmp).map_err(|e| err(&tmp, e))? {
        let path = entry.map_err(|e| err(&tmp, e))?.path();
        crate::atomic_file::give_default_mode(&path).map_err(|e| err(&path, e))?;
        sync(&path)?;
        let (sha, n) = sha256_file(&path)?;
        size += n;
        files.insert(path.file_name().expect("file").to_string_lossy().into_owned(), sha);
    }
    let manifest = serde_json::to_string_pretty(&Manifest { files }).expect("manifest serializes");
    let manifest_path = tmp.join("manifest.json");
    std::fs::write(&manifest_path, &manifest).map_err(|e| err(&manifest_path, e))?;
    sync(&manifest_path)?;
    sync(&tmp)?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(|e| err(&final_dir, e))?;
    sync(dir)?;
    Ok(Saved { path: final_dir, sha256: hex(&Sha256::digest(manifest.as_bytes())), size: size + manifest.len() as u64 })
}

/// Checks every file of the checkpoint in `path` against its manifest.
pub fn verify(path: &Path) -> Result<TrainState, CheckpointError> {
    let manifest_path = path.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| err(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| err(&manifest_path, e))?;
    for (name, expected) in &manifest.files {
        let (actual, _) = sha256_file(&path.join(name))?;
        if &actual != expected {
            return Err(err(&path.join(name), format!("sha256 {actual} does not match the manifest's {expected}")));
        }
    }
    let state_path = path.join("state.json");
    let state = std::fs::read_to_string(&state_path).map_err(|e| err(&state_path, e))?;
    serde_json::from_str(&state).map_err(|e| err(&state_path, e))
}

/// Checks the checkpoint in `path` as [`verify`] does, and its manifest against `recorded`, the
/// sha256 the lineage store holds for it (what [`save`] returned).
pub fn verify_recorded(path: &Path, recorded: &str) -> Result<TrainState, CheckpointError> {
    let manifest_path = path.join("manifest.json");
    let bytes = std::fs::read(&manifest_path).map_err(|e| err(&manifest_path, e))?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual != recorded {
        return Err(err(&manifest_path, format!("sha256 {actual} does not match the {recorded} the store recorded")));
    }
    verify(path)
}

/// Steps of the checkpoints under `dir`, newest first.
pub fn steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    steps
}

/// The newest valid checkpoint at or before `at_most` (any step if `None`), and the problems of
/// newer ones that were skipped.
pub fn latest_valid(dir: &Path, at_most: Option<u64>) -> (Option<(PathBuf, TrainState)>, Vec<CheckpointError>) {
    let mut skipped = Vec::new();
    for step in steps(dir).into_iter().filter(|s| at_most.is_none_or(|m| *s <= m)) {
        let path = folder(dir, step);
        match verify(&path) {
            Ok(state) => return (Some((path, state)), skipped),
            Err(e) => skipped.push(e),
        }
    }
    (None, skipped)
}

/// Restores each `(file name, variables)` of `files` (and optimiser moments when present and
/// `optimizer` is given) from the verified checkpoint at `path`.
pub fn restore(path: &Path, files: &[(&str, &VarMap)], optimizer: Option<&mut AdamW>) -> Result<(), CheckpointError> {
    for (file, vars) in files {
        weights::load_into(vars, &path.join(file)).map_err(|e| err(path, e))?;
    }
    let file = path.join("optimizer.safetensors");
    if let (Some(opt), true) = (optimizer, file.exists()) {
        let moments = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).map_err(|e| err(&file, e))?;
        opt.load_state(&moments).map_err(|e| err(&file, e))?;
    }
    Ok(())
}

/// The adapters of a LoRA run's checkpoint at `path` (the UNet's, and the text encoder's when
/// it was trained), each layer scaled by `alpha / rank`; `None` for a full run's checkpoint.
pub fn adapters(
    path: &Path,
    alpha: f64,
    device: &candle_core::Device,
) -> Result<Option<(AdapterSet, Option<AdapterSet>)>, CheckpointError> {
    let read = |file: &str| -> Result<Option<AdapterSet>, CheckpointError> {
        let file = path.join(file);
        if !file.exists() {
            return Ok(None);
        }
        let tensors = candle_core::safetensors::load(&file, device).map_err(|e| err(&file, e))?;
        let what = format!("`{}`", file.display());
        let set = AdapterSet::from_tensors(tensors.into_iter().collect(), &|_, _| alpha, &what, device)
            .map_err(|e| err(&file, e))?;
        Ok(Some(set))
    };
    match read(UNET_LORA_FILE)? {
        Some(unet) => Ok(Some((unet, read(TEXT_LORA_FILE)?))),
        None => Ok(None),
    }
}

/// Keeps `keep` checkpoints under `dir`: always the newest (to resume from) and the one at
/// `protect` (the best), then the newest others; deletes the rest and returns their steps.
pub fn prune(dir: &Path, keep: usize, protect: Option<u64>) -> Vec<u64> {
    let all = steps(dir);
    let mut kept: Vec<u64> = all.first().into_iter().copied().chain(protect.filter(|p| all.contains(p))).collect();
    kept.dedup();
    for &step in &all {
        if kept.len() >= keep {
            break;
        }
        if !kept.contains(&step) {
            kept.push(step);
        }
    }
    all.into_iter().filter(|s| !kept.contains(s) && std::fs::remove_dir_all(folder(dir, *s)).is_ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_newest_and_best_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for step in [2, 4, 6, 8] {
            std::fs::create_dir(folder(dir.path(), step)).unwrap();
        }
        assert_eq!(prune(dir.path(), 2, Some(2)), vec![6, 4]);
        assert_eq!(steps(dir.path()), vec![8, 2]);
        assert_eq!(prune(dir.path(), 1, Some(2)), Vec::<u64>::new(), "newest and best both stay");
        assert_eq!(prune(dir.path(), 1, None), vec![2]);
    }
}
