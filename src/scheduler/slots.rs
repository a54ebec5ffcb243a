//! Execution slots: which GPUs (or CPU cores) each concurrently trained run gets.

use std::fmt;

/// Which GPUs runs may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSelection {
    /// No GPU: CPU slots.
    None,
    /// Every visible GPU.
    All,
    /// These GPU indices.
    List(Vec<u32>),
}

impl std::str::FromStr for GpuSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(GpuSelection::None),
            "all" => Ok(GpuSelection::All),
            list => list
                .split(',')
                .map(|g| {
                    g.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("`{list}`: expected all, none or a list of GPU indices like 0,2"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(GpuSelection::List),
        }
    }
}

/// One place a run can train.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// GPU indices given to the run (`CUDA_VISIBLE_DEVICES`); empty for a CPU slot.
    pub gpus: Vec<u32>,
    /// CPU threads for the run (`RAYON_NUM_THREADS`).
    pub threads: usize,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gpus.is_empty() {
            write!(f, "cpu x{}", self.threads)
        } else {
            let gpus: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
            write!(f, "gpu {}", gpus.join(","))
        }
    }
}

/// The slots for `gpus` (already resolved to indices; empty means CPU), `gpus_per_run` GPUs
/// per run and `runs_per_gpu` runs sharing a GPU, at most `max_parallel` slots. CPU slots
/// split `cores` between them.
pub fn plan(
    gpus: &[u32],
    gpus_per_run: usize,
    runs_per_gpu: usize,
    max_parallel: Option<usize>,
    cores: usize,
) -> Result<Vec<Slot>, String> {
    if gpus.is_empty() {
        let n = max_parallel.unwrap_or(1).clamp(1, cores.max(1));
        return Ok((0..n)
            .map(|i| Slot { gpus: Vec::new(), threads: cores / n + usize::from(i < cores % n) })
            .collect());
    }
    if gpus_per_run == 0 || runs_per_gpu == 0 {
        return Err("gpus_per_run and runs_per_gpu must be at least 1".into());
    }
    if gpus_per_run > gpus.len() {
        return Err(format!("gpus_per_run {gpus_per_run} exceeds the {} GPUs selected", gpus.len()));
    }
    let groups: Vec<Vec<u32>> = gpus.chunks_exact(gpus_per_run).map(<[u32]>::to_vec).collect();
    let mut slots: Vec<Slot> =
        (0..runs_per_gpu).flat_map(|_| groups.iter().map(|g| Slot { gpus: g.clone(), threads: 1 })).collect();
    slots.truncate(max_parallel.unwrap_or(usize::MAX).max(1));
    let per = (cores / slots.len()).max(1);
    slots.iter_mut().for_each(|s| s.threads = per);
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_slots_split_the_cores() {
        let slots = plan(&[], 1, 1, Some(3), 8).unwrap();
        assert_eq!(slots.iter().map(|s| s.threads).collect::<Vec<_>>(), [3, 3, 2]);
        assert_eq!(plan(&[], 1, 1, None, 8).unwrap().len(), 1);
        assert_eq!(plan(&[], 1, 1, Some(16), 2).unwrap().len(), 2, "no more CPU slots than cores");
    }

    #[test]
    fn gpu_slots_group_and_share() {
        let slots = plan(&[0, 1, 2, 3], 2, 1, None, 16).unwrap();
        assert_eq!(slots.iter().map(|s| s.gpus.clone()).collect::<Vec<_>>(), [vec![0, 1], vec![2, 3]]);
        let shared = plan(&[0, 1], 1, 2, None, 16).unwrap();
        assert_eq!(shared.iter().map(|s| s.gpus[0]).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert_eq!(plan(&[0, 1, 2, 3], 1, 1, Some(2), 16).unwrap().len(), 2);
        assert!(plan(&[0], 2, 1, None, 4).is_err());
        assert_eq!("0,2".parse::<GpuSelection>().unwrap(), GpuSelection::List(vec![0, 2]));
        assert!("zero".parse::<GpuSelection>().is_err());
    }
}
