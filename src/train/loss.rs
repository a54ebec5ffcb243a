//! The DreamBooth objective with prior preservation (Ruiz et al. 2022; diffusers'
//! `train_dreambooth.py`).

use candle_core::{Result, Tensor};

/// `mse(instance half) + prior_loss_weight * mse(class half)`, each a mean over its elements.
///
/// `pred` and `target` are [2b, ...]: the first `b` rows are instance examples, the last `b`
/// their paired class (prior) examples, as diffusers concatenates them.
pub fn dreambooth_loss(pred: &Tensor, target: &Tensor, prior_loss_weight: f64) -> Result<Tensor> {
    let (instance, prior) = loss_terms(pred, target, None, true)?;
    instance + (prior * prior_loss_weight)?
}

/// The instance and prior terms separately, each the mean over its half of the per-example
/// MSEs, optionally weighted per example (min-SNR weighting). Without prior preservation
/// (`with_prior` false: every row is an instance example) the prior term is zero.
pub fn loss_terms(
    pred: &Tensor,
    target: &Tensor,
    weights: Option<&Tensor>,
    with_prior: bool,
) -> Result<(Tensor, Tensor)> {
    let n = pred.dim(0)?;
    let per_example = (pred - target)?.sqr()?.flatten_from(1)?.mean(1)?;
    let per_example = match weights {
        Some(w) => (per_example * w)?,
        None => per_example,
    };
    let half = n / 2;
    if !with_prior {
        return Ok((per_example.mean_all()?, Tensor::zeros((), pred.dtype(), pred.device())?));
    }
    Ok((per_example.narrow(0, 0, half)?.mean_all()?, per_example.narrow(0, half, half)?.mean_all()?))
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
