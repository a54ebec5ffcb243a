//! The device a training or sampling process computes on, from the GPUs its scheduler gave it.
//!
//! Schedulers pin a process to GPUs with `CUDA_VISIBLE_DEVICES` (an empty value: none, a CPU
//! slot). Built with the `cuda` feature, a process that sees a GPU computes on the first one
//! it sees, and one that was assigned a GPU it cannot open fails instead of quietly training
//! on the CPU. Without the feature, everything runs on the CPU.

use candle_core::Device;

use super::error::{ModelError, Result};

/// A chosen device and how runs record it.
#[derive(Debug)]
pub struct Choice {
    /// Where tensors live.
    pub device: Device,
    /// What the lineage store records, e.g. `cuda:0 (CUDA_VISIBLE_DEVICES=2)` or `cpu`.
    pub description: String,
    /// Said on stderr: a GPU was assigned that this build cannot use.
    pub warning: Option<String>,
}

/// Chooses the device given the value of `CUDA_VISIBLE_DEVICES` (`None`: unset).
pub fn choose(visible: Option<&str>) -> Result<Choice> {
    let assigned = visible.map(str::trim).filter(|v| !v.is_empty());
    let label = |name: &str| match assigned {
        Some(v) => format!("{name} (CUDA_VISIBLE_DEVICES={v})"),
        None => name.to_string(),
    };
    if cfg!(feature = "cuda") && visible.is_none_or(|v| !v.trim().is_empty()) {
        match Device::new_cuda(0) {
            Ok(device) => return Ok(Choice { device, description: label("cuda:0"), warning: None }),
            Err(e) if assigned.is_some() => {
                return Err(ModelError::Device {
                    visible: assigned.unwrap_or_default().to_string(),
                    message: e.to_string(),
                });
            }
            // Nothing assigned and no usable GPU: the CPU, as on a build without CUDA.
            Err(_) => {}
        }
    }
    let warning = (!cfg!(feature = "cuda") && assigned.is_some()).then(|| {
        "this dbsweep was built without the `cuda` feature: training on the CPU \
         (build with `cargo build --release --features cuda` to use GPUs)"
            .to_string()
    });
    Ok(Choice { device: Device::Cpu, description: label("cpu"), warning })
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;

    #[test]
    fn without_cuda_every_process_computes_on_the_cpu_and_records_what_it_was_given() {
        let unset = choose(None).unwrap();
        assert!(unset.device.is_cpu());
        assert_eq!((unset.description.as_str(), unset.warning), ("cpu", None));
        let cpu_slot = choose(Some("")).unwrap();
        assert_eq!((cpu_slot.description.as_str(), cpu_slot.warning), ("cpu", None));
        let gpu_slot = choose(Some("2")).unwrap();
        assert!(gpu_slot.device.is_cpu());
        assert_eq!(gpu_slot.description, "cpu (CUDA_VISIBLE_DEVICES=2)");
        assert!(gpu_slot.warning.unwrap().contains("--features cuda"));
    }
}
