//! Layers every model here is built from, each made of candle ops whose backward pass is
//! correct.
//!
//! candle-nn 0.11's fused `softmax_last_dim` and `layer_norm` (which `candle_nn::LayerNorm`
//! uses on contiguous input) are built with `apply_op*_no_bwd`: gradients silently stop there
//! (huggingface/candle#3569). Trained modules therefore use [`LayerNorm`] below, composed from
//! differentiable primitives, and attention with its own backward ([`super::attention`]); the
//! parity tests against PyTorch guard both.
//! Convolutions, group norm and SiLU are the project's own for speed ([`super::conv`],
//! [`super::group_norm`], [`super::activation`]), as are per-channel biases and scales
//! ([`super::channel`]). Linear (wrapped in [`Linear`] to carry a name and an adapter; a
//! matrix product and [`add_bias`]), embedding, gelu and sigmoid backpropagate correctly and
//! are computed by candle.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::channel::{add_bias, mul_scale};
use super::lora::Adapter;

/// Layer normalisation over the last dimension with learned scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// `weight` and `bias` of size `dim` under `vb`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps: eps as f32 })
    }
}

impl Module for LayerNorm {
    /// candle-nn's `layer_norm_slow` (statistics in f32), with the scale and shift as
    /// per-channel ops.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let x = match dtype {
            DType::F16 | DType::BF16 => xs.to_dtype(DType::F32)?,
            _ => xs.clone(),
        };
        let hidden = x.dim(D::Minus1)? as f64;
        let x = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / hidden)?)?;
        let variance = (x.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
        let normed = x.broadcast_div(&(variance + self.eps as f64)?.sqrt()?)?.to_dtype(dtype)?;
        let last = xs.rank() - 1;
        add_bias(&mul_scale(&normed, &self.weight, last)?, &self.bias, last)
    }
}

/// A linear layer (`x Wᵀ + b`, computed by candle-nn's) that knows its full name (as the
/// model's weights name it, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`)
/// and may carry a low-rank adapter whose output is added to its own (see [`super::lora`]).
#[derive(Clone, Debug)]
pub struct Linear {
    inner: candle_nn::Linear,
    name: String,
    adapter: Option<Adapter>,
}

impl Linear {
    /// The layer `name` with `weight` \[out, in\] and `bias` \[out\].
    pub fn new(weight: Tensor, bias: Option<Tensor>, name: impl Into<String>) -> Self {
        Self { inner: candle_nn::Linear::new(weight, bias), name: name.into(), adapter: None }
    }

    /// The layer's name (its weights are `NAME.weight` and `NAME.bias`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Input and output features.
    pub fn features(&self) -> (usize, usize) {
        let (out, inp) = self.inner.weight().dims2().unwrap_or((0, 0));
        (inp, out)
    }

    /// Attaches `adapter` (replacing any other), or removes the adapter with `None`.
    pub fn set_adapter(&mut self, adapter: Option<Adapter>) {
        self.adapter = adapter;
    }
}

impl Module for Linear {
    /// `x Wᵀ + b` over the last dimension, the leading ones flattened into one matrix product
    /// (candle-nn's broadcasts `W` over the batch, whose backward is a slow sum).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let weight = self.inner.weight();
        let (rows, features) = (xs.elem_count() / xs.dim(D::Minus1)?, weight.dim(0)?);
        let mut dims = xs.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = features;
        let product = xs.reshape((rows, ()))?.matmul(&weight.t()?)?;
        let base = match self.inner.bias() {
            Some(bias) => add_bias(&product, bias, 1)?,
            None => product,
        }
        .reshape(dims)?;
        match &self.adapter {
            None => Ok(base),
            Some(adapter) => base + adapter.forward(xs, &self.name)?,
        }
    }
}

/// Modules that can hand out each of their linear layers, e.g. to attach adapters or to list
/// which layers an adapter could target.
pub trait VisitLinears {
    /// Calls `f` with every linear layer, in a fixed order.
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear));
}

impl VisitLinears for Linear {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        f(self)
    }
}

impl<T: VisitLinears> VisitLinears for Option<T> {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        if let Some(inner) = self {
            inner.visit_linears(f)
        }
    }
}

impl<T: VisitLinears> VisitLinears for Vec<T> {
    fn visit_linears(&mut self, f: &mut dyn FnMut(&mut Linear)) {
        for item in self {
            item.visit_linears(f)
        }
    }
}

/// A linear layer, with or without bias, named by `vb`'s prefix.
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let name = vb.prefix();
    let inner =
        if bias { candle_nn::linear(in_dim, out_dim, vb) } else { candle_nn::linear_no_bias(in_dim, out_dim, vb) }?;
    Ok(Linear { inner, name, adapter: None })
}

/// `x * sigmoid(1.702 x)`: CLIP's original GELU approximation.
pub fn quick_gelu(xs: &Tensor) -> Result<Tensor> {
    xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Module, Tensor, Var};

    /// Why [`super::LayerNorm`] exists: candle-nn's fused layer norm silently drops gradients.
    #[test]
    fn composed_layer_norm_backpropagates_where_the_fused_one_does_not() {
        let x = Var::from_tensor(&Tensor::new(&[[0.3f32, -1.2, 2.0, 0.5]], &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let (ones, zeros) =
            (Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap());
        let ln = super::LayerNorm { weight: ones.clone(), bias: zeros.clone(), eps: 1e-5 };
        let grads = ln.forward(&x).unwrap().broadcast_mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(&x).expect("gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().any(|v| v.abs() > 1e-3), "{g:?}");
        let fused = candle_nn::ops::layer_norm(&x, &ones, &zeros, 1e-5).unwrap();
        let grads = fused.broadcast_mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none(), "candle-nn fixed its fused layer norm backward: revisit LayerNorm");
    }
}
