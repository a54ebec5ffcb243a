//! The patch embedding of vision transformers: a convolution whose kernel and stride are the
//! patch size, computed as one matrix product over the flattened patches (the same sums as the
//! convolution, in another order).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Cuts images into `patch`×`patch` squares and projects each to `hidden` values.
#[derive(Clone, Debug)]
pub struct PatchEmbedding {
    projection: Linear,
    patch: usize,
    channels: usize,
}

impl PatchEmbedding {
    /// The convolution `weight` [hidden, channels, patch, patch] (and `bias` of size hidden, if
    /// `bias`) under `vb`.
    pub fn new(vb: VarBuilder, channels: usize, hidden: usize, patch: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((hidden, channels, patch, patch), "weight")?.reshape((hidden, channels * patch * patch))?;
        let bias = if bias { Some(vb.get(hidden, "bias")?) } else { None };
        Ok(Self { projection: Linear::new(weight, bias), patch, channels })
    }

    /// The patch grid `(rows, columns)` of an image of `height`×`width` pixels (a partial
    /// patch at the bottom or right is dropped, as by the convolution).
    pub fn grid(&self, height: usize, width: usize) -> (usize, usize) {
        (height / self.patch, width / self.patch)
    }

    /// Embeds `pixels` [batch, channels, height, width] into [batch, rows · columns, hidden],
    /// patches in row-major order.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = pixels.dims4()?;
        if c != self.channels {
            candle_core::bail!("expected {} channels, got {c}", self.channels);
        }
        let p = self.patch;
        let (rows, cols) = self.grid(h, w);
        let patches = pixels
            .narrow(2, 0, rows * p)?
            .narrow(3, 0, cols * p)?
            .contiguous()?
            .reshape((n, c, rows, p, cols, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, rows * cols, c * p * p))?;
        self.projection.forward(&patches)
    }
}
