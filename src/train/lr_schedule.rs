//! Learning-rate schedules with diffusers' semantics (`diffusers.optimization.get_scheduler`):
//! the multiplier of the peak learning rate at each optimiser step.

use crate::config::LrScheduler;

/// The learning rate at optimiser step `step` (0-based) of `total` steps.
pub fn learning_rate(kind: LrScheduler, peak: f64, step: u64, warmup: u64, total: u64, power: f64) -> f64 {
    let (s, w, n) = (step as f64, warmup as f64, total.max(1) as f64);
    let warming = step < warmup;
    let factor = match kind {
        LrScheduler::Constant => 1.0,
        LrScheduler::ConstantWithWarmup if warming => s / w.max(1.0),
        LrScheduler::ConstantWithWarmup => 1.0,
        _ if warming => s / w.max(1.0),
        LrScheduler::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
        LrScheduler::Cosine => {
            let progress = (s - w) / (n - w).max(1.0);
            (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
        LrScheduler::Polynomial => {
            // diffusers: lr_end = 1e-7, decays from peak to lr_end over the steps after warm-up.
            let end = 1e-7;
            if s > n {
                return end;
            }
            let remaining = 1.0 - (s - w) / (n - w).max(1.0);
            return (peak - end) * remaining.powf(power) + end;
        }
    };
    peak * factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_diffusers() {
        let lr = |k, s| learning_rate(k, 1.0, s, 10, 110, 1.0);
        assert_eq!(lr(LrScheduler::Constant, 0), 1.0);
        assert_eq!(lr(LrScheduler::ConstantWithWarmup, 5), 0.5);
        assert_eq!(lr(LrScheduler::ConstantWithWarmup, 50), 1.0);
        assert_eq!(lr(LrScheduler::Linear, 5), 0.5);
        assert_eq!(lr(LrScheduler::Linear, 60), 0.5);
        assert_eq!(lr(LrScheduler::Linear, 110), 0.0);
        assert!((lr(LrScheduler::Cosine, 60) - 0.5).abs() < 1e-12);
        assert!(lr(LrScheduler::Cosine, 110).abs() < 1e-12);
        assert!((lr(LrScheduler::Polynomial, 60) - (0.5 * (1.0 - 1e-7) + 1e-7)).abs() < 1e-12);
    }
}
