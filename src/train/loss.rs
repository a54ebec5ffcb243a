//! The DreamBooth objective with prior preservation (Ruiz et al. 2022; diffusers'
//! `train_dreambooth.py`).

use candle_core::{Result, Tensor};

/// `mse(instance half) + prior_loss_weight * mse(class half)`, each a mean over its elements.
///
/// `pred` and `target` are [2b, ...]: the first `b` rows are instance examples, the last `b`
/// their paired class (prior) examples, as diffusers concatenates them.
pub fn dreambooth_loss(pred: &Tensor, target: &Tensor, prior_loss_weight: f64) -> Result<Tensor> {
    let half = pred.dim(0)? / 2;
    let mse = |a: Tensor, b: Tensor| (a - b)?.sqr()?.mean_all();
    let instance = mse(pred.narrow(0, 0, half)?, target.narrow(0, 0, half)?)?;
    let prior = mse(pred.narrow(0, half, half)?, target.narrow(0, half, half)?)?;
    instance + (prior * prior_loss_weight)?
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn halves_are_weighted_separately() {
        let pred = Tensor::new(&[[1f32, 1.0], [2.0, 2.0]], &Device::Cpu).unwrap();
        let target = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let loss = super::dreambooth_loss(&pred, &target, 0.5).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(loss, 1.0 + 0.5 * 4.0);
    }
}
