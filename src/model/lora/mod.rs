//! Low-rank adaptation (LoRA; Hu et al. 2021, arXiv 2106.09685) as PEFT implements it: a
//! linear layer `y = x Wᵀ + b` gets `y = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ` with
//! `A` [rank, in] ("down"), `B` [out, rank] ("up") and `scale = alpha / rank`; only `A` and `B`
//! are trained, the base weights stay frozen.
//!
//! - [`Adapter`]: the added branch of one layer, attached to a [`super::nn::Linear`];
//! - [`targets`]: which layers a list of target names selects (PEFT's rule), with suggestions
//!   for names that select none;
//! - [`adapters`]: the adapters of one model as named variables, created, loaded and attached;
//! - [`files`]: reading and writing adapter files in the layouts diffusers/PEFT and kohya-ss
//!   (AUTOMATIC1111, ComfyUI) use.
//!
//! The arithmetic follows PEFT's `Linear.forward` (`base(x) + lora_B(lora_A(dropout(x))) *
//! scaling`) so that an adapter exported to diffusers samples the same images there.

pub mod adapters;
pub mod files;
pub mod targets;

use candle_core::{DType, Module, Result, Tensor};

use crate::rng::Rng;

/// The low-rank branch of one linear layer.
#[derive(Clone, Debug)]
pub struct Adapter {
    down: candle_nn::Linear,
    up: candle_nn::Linear,
    scale: f64,
    dropout: Option<Dropout>,
}

/// Dropout on an adapter's input during training, with its mask drawn from the project's
/// generator: the same key gives the same mask (a resumed run and a recomputed forward pass
/// drop the same inputs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// The probability of dropping an input.
    pub p: f32,
    /// Seeds the masks (with the layer's name): one key per micro-batch.
    pub key: u64,
}

impl Adapter {
    /// The branch `scale · x Aᵀ Bᵀ` with `down` = A [rank, in] and `up` = B [out, rank].
    pub fn new(down: Tensor, up: Tensor, scale: f64, dropout: Option<Dropout>) -> Self {
        Self { down: candle_nn::Linear::new(down, None), up: candle_nn::Linear::new(up, None), scale, dropout }
    }

    /// The branch's output for `xs` [..., in] of the layer called `name` (which seeds the
    /// dropout mask).
    pub fn forward(&self, xs: &Tensor, name: &str) -> Result<Tensor> {
        let xs = match self.dropout {
            Some(d) if d.p > 0.0 => (xs * mask(xs, d, name)?)?,
            _ => xs.clone(),
        };
        self.up.forward(&self.down.forward(&xs)?)? * self.scale
    }
}

/// Inverted dropout's mask for `xs`: 0 with probability `p`, else `1 / (1 - p)`.
fn mask(xs: &Tensor, d: Dropout, name: &str) -> Result<Tensor> {
    let key = format!("{}|lora-dropout|{name}", d.key);
    let mut rng = Rng::new(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
    let keep = 1.0 / (1.0 - d.p);
    let values: Vec<f32> =
        (0..xs.elem_count()).map(|_| if (rng.next_f64() as f32) < d.p { 0.0 } else { keep }).collect();
    Tensor::from_vec(values, xs.shape(), xs.device())?.to_dtype(xs.dtype())
}

/// How [`adapters::AdapterSet::attach`] builds each layer's branch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attach {
    /// The dtype the branch computes in (its variables are cast, differentiably).
    pub dtype: DType,
    /// Whether gradients flow to the variables (training) or the branch uses detached copies
    /// of them (sampling, which then keeps no graph).
    pub trainable: bool,
    /// Multiplies every layer's `alpha / rank` (diffusers' LoRA scale, `--lora-scale`).
    pub strength: f64,
    /// Dropout on the branch's input (training only).
    pub dropout: Option<Dropout>,
}

impl Attach {
    /// Branches for sampling: f32, detached, at `strength`, no dropout.
    pub fn inference(strength: f64) -> Self {
        Self { dtype: DType::F32, trainable: false, strength, dropout: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn the_branch_adds_scale_times_b_a_x_and_backpropagates_to_a_and_b() {
        let dev = Device::Cpu;
        let a = Var::new(&[[1f32, 2.0, 0.0], [0.0, -1.0, 1.0]], &dev).unwrap(); // [2, 3]
        let b = Var::new(&[[0.5f32, 1.0]], &dev).unwrap(); // [1, 2]
        let x = Tensor::new(&[[1f32, 1.0, 2.0]], &dev).unwrap();
        let adapter = Adapter::new(a.as_tensor().clone(), b.as_tensor().clone(), 1.5, None);
        let y = adapter.forward(&x, "layer").unwrap();
        // A x = [3, 1]; B A x = 0.5 * 3 + 1 * 1 = 2.5; times 1.5.
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[3.75]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        // d/dB = scale * (A x)ᵀ; d/dA = scale * Bᵀ xᵀ.
        assert_eq!(grads.get(b.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), [[4.5, 1.5]]);
        let da = grads.get(a.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(da, [[0.75, 0.75, 1.5], [1.5, 1.5, 3.0]]);
    }

    #[test]
    fn dropout_masks_repeat_for_a_key_and_drop_about_p() {
        let x = Tensor::ones((4, 1000), DType::F32, &Device::Cpu).unwrap();
        let d = Dropout { p: 0.25, key: 7 };
        let m1 = mask(&x, d, "to_q").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let m2 = mask(&x, d, "to_q").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m1, m2, "same key and layer, same mask");
        let other = mask(&x, Dropout { key: 8, ..d }, "to_q").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(m1, other);
        let dropped = m1.iter().filter(|v| **v == 0.0).count() as f64 / m1.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
        assert!(m1.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    }
}
