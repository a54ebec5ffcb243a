//! GPU discovery with `nvidia-smi`, honouring `CUDA_VISIBLE_DEVICES`.

use std::process::Command;

use serde::Serialize;

/// A GPU as `nvidia-smi` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gpu {
    /// Index (as CUDA_VISIBLE_DEVICES counts them).
    pub index: u32,
    /// Model name.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// Used memory, MiB.
    pub memory_used_mib: u64,
    /// Utilisation, percent.
    pub utilization_percent: u32,
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu
/// --format=csv,noheader,nounits` output.
pub fn parse(csv: &str) -> Result<Vec<Gpu>, String> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let bad = || format!("unexpected nvidia-smi line `{line}`");
            if f.len() != 5 {
                return Err(bad());
            }
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
            Ok(Gpu {
                index: num(f[0])? as u32,
                name: f[1].to_string(),
                memory_total_mib: num(f[2])?,
                memory_used_mib: num(f[3])?,
                utilization_percent: num(f[4]).unwrap_or(0) as u32,
            })
        })
        .collect()
}

/// The GPUs of this machine that `CUDA_VISIBLE_DEVICES` (from `env`) allows; none when
/// `nvidia-smi` is absent.
pub fn discover(env: &[(String, String)]) -> Result<Vec<Gpu>, String> {
    let out = match Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total,memory.used,utilization.gpu", "--format=csv,noheader,nounits"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => return Err(format!("nvidia-smi failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(_) => return Ok(Vec::new()),
    };
    let gpus = parse(&String::from_utf8_lossy(&out.stdout))?;
    Ok(match env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES") {
        Some((_, visible)) => {
            let allowed: Vec<u32> = visible.split(',').filter_map(|v| v.trim().parse().ok()).collect();
            gpus.into_iter().filter(|g| allowed.contains(&g.index)).collect()
        }
        None => gpus,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_nvidia_smi_csv() {
        let gpus = super::parse("0, NVIDIA H100 80GB HBM3, 81559, 1, 0\n1, NVIDIA H100 80GB HBM3, 81559, 40000, 97\n")
            .unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[1].index, gpus[1].memory_used_mib, gpus[1].utilization_percent), (1, 40000, 97));
        assert!(super::parse("garbage").is_err());
    }
}
