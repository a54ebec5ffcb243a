//! 2-D convolution that trains fast on the CPU: im2col and one matrix multiply.
//!
//! candle 0.11's CPU convolution reaches about 7 GFLOP/s on the tiny model's 3x3 layers, and
//! its backward pass goes through a direct transposed convolution that is slower still. Here a
//! convolution unfolds its input into columns (`Unfold`, whose backward pass folds gradients
//! back, `Fold`) and multiplies them with the kernel as a matrix, so both passes run in the
//! gemm kernels candle's matmul uses. On other devices and dtypes the same unfold is composed of
//! candle ops (padding, narrowing, stacking; their backward passes are candle's), so a GPU
//! build also convolves as one matrix multiply (cuBLAS) each way and never uses candle's
//! direct transposed convolution for the backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::channel::add_bias;
use super::handover::{Handover, hand_over};
use super::kernels::{self, f32_slice};

/// A square-kernel convolution with bias, stride and zero padding on every side.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    geometry: Geometry,
}

/// Kernel size, stride and padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    /// Output height and width for an input of `h` x `w`.
    fn output(&self, h: usize, w: usize) -> (usize, usize) {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (out(h), out(w))
    }

    /// The output positions `lo..hi` (of `out`) at which kernel offset `k` reads inside an input
    /// of `size` (the others read the zero padding); empty as `(lo, lo)`.
    fn inside(&self, out: usize, size: usize, k: usize) -> (usize, usize) {
        let lo = self.padding.saturating_sub(k).div_ceil(self.stride);
        let hi = (size + self.padding).saturating_sub(k).div_ceil(self.stride).min(out);
        (lo, hi.max(lo))
    }
}

impl Conv2d {
    /// `weight` \[out, in, k, k\] and `bias` \[out\] under `vb`, initialised as candle-nn's
    /// `conv2d` initialises new ones.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight =
            vb.get_with_hints((out_ch, in_ch, kernel, kernel), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bound = 1.0 / ((in_ch * kernel * kernel) as f64).sqrt();
        let bias = vb.get_with_hints(out_ch, "bias", Init::Uniform { lo: -bound, up: bound })?;
        Ok(Self { weight, bias, geometry: Geometry { kernel, stride, padding } })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let fused = kernels::fused_cpu(&[xs]);
        self.convolve(xs, fused)
    }
}

impl Conv2d {
    /// The convolution by im2col and one matrix multiply, unfolding with the fused CPU op
    /// (`fused`) or with candle ops (any device and dtype).
    fn convolve(&self, xs: &Tensor, fused: bool) -> Result<Tensor> {
        let g = self.geometry;
        let (b, c, h, w) = xs.dims4()?;
        if h.min(w) + 2 * g.padding < g.kernel {
            let (k, p) = (g.kernel, g.padding);
            candle_core::bail!("conv2d: a {h}x{w} input with padding {p} is smaller than the {k}x{k} kernel");
        }
        let (oh, ow) = g.output(h, w);
        let columns = if g == (Geometry { kernel: 1, stride: 1, padding: 0 }) {
            xs.reshape((b, c, h * w))?
        } else if fused {
            xs.contiguous()?.apply_op1(Unfold(g))?
        } else {
            unfold_with_ops(xs, g)?
        };
        let kernel = self.weight.reshape((self.weight.dim(0)?, ()))?;
        add_bias(&kernel_product(&kernel, &columns)?.reshape((b, (), oh, ow))?, &self.bias, 1)
    }
}

/// `kernel` [out, c·k·k] times each image's `columns` [b, c·k·k, oh·ow], differentiable.
///
/// candle's `broadcast_matmul` differentiates the kernel through a gradient per image summed
/// over the batch by its strided reduction (two integer divisions per value); the backward
/// pass here adds one matrix product per image instead.
fn kernel_product(kernel: &Tensor, columns: &Tensor) -> Result<Tensor> {
    let out = Handover::new(per_image(&kernel.detach(), &columns.detach())?);
    kernel.apply_op2(columns, KernelProduct { out })
}

/// `matrix` [m, k] times each of `images` [b, k, n]: the matrix is viewed with a zero batch
/// stride, which candle's matmul takes as it is (its `broadcast_matmul` first copies the
/// matrix once per image).
fn per_image(matrix: &Tensor, images: &Tensor) -> Result<Tensor> {
    let (m, k) = matrix.dims2()?;
    matrix.broadcast_as((images.dim(0)?, m, k))?.matmul(images)
}

/// The backward pass of [`kernel_product`]; its result is computed outside ([`Handover`]).
struct KernelProduct {
    out: Handover,
}

impl CustomOp2 for KernelProduct {
    fn name(&self) -> &'static str {
        "dbsweep-kernel-product"
    }

    hand_over!(two);

    fn bwd(
        &self,
        kernel: &Tensor,
        columns: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dcolumns = columns.track_op().then(|| per_image(&kernel.detach().t()?, &grad.detach())).transpose()?;
        if !kernel.track_op() {
            return Ok((None, dcolumns));
        }
        let columns = columns.detach();
        let mut dkernel: Option<Tensor> = None;
        for image in 0..grad.dim(0)? {
            let part = grad.get(image)?.detach().matmul(&columns.get(image)?.t()?)?;
            dkernel = Some(match dkernel {
                Some(sum) => (sum + part)?,
                None => part,
            });
        }
        Ok((dkernel, dcolumns))
    }
}

/// im2col composed of candle ops: [b, c, h, w] to [b, c·k·k, oh·ow] (the rows ordered as the
/// kernel's [c][ky][kx], as [`Unfold`] orders them).
fn unfold_with_ops(xs: &Tensor, g: Geometry) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let (oh, ow) = g.output(h, w);
    // Padding on every side, and up to stride - 1 more at the end so that every kernel offset
    // can take `stride · out` rows and keep every stride-th.
    let extra = g.stride - 1;
    let padded = xs.pad_with_zeros(2, g.padding, g.padding + extra)?.pad_with_zeros(3, g.padding, g.padding + extra)?;
    let take = |t: &Tensor, dim: usize, offset: usize, out: usize| -> Result<Tensor> {
        let window = t.narrow(dim, offset, g.stride * out)?;
        if g.stride == 1 {
            return Ok(window);
        }
        let mut dims = window.dims().to_vec();
        dims[dim] = out;
        dims.insert(dim + 1, g.stride);
        window.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
    };
    let mut patches = Vec::with_capacity(g.kernel * g.kernel);
    for ky in 0..g.kernel {
        let rows = take(&padded, 2, ky, oh)?;
        for kx in 0..g.kernel {
            patches.push(take(&rows, 3, kx, ow)?);
        }
    }
    Tensor::stack(&patches, 2)?.reshape((b, c * g.kernel * g.kernel, oh * ow))
}

/// im2col: [b, c, h, w] to [b, c·k·k, oh·ow], zeros where the kernel reaches the padding.
struct Unfold(Geometry);

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "dbsweep-unfold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (b, c, h, w) = layout.shape().dims4()?;
        let x = f32_slice(storage, layout, "unfold's input")?;
        let (oh, ow) = g.output(h, w);
        let (rows, len) = (c * g.kernel * g.kernel, oh * ow);
        // Written row by row in parallel, zeros included (a zeroed allocation would be one
        // serial pass more).
        let mut out: Vec<f32> = Vec::with_capacity(b * rows * len);
        let spare = &mut out.spare_capacity_mut()[..b * rows * len];
        for (image, cols) in x.chunks_exact(c * h * w).zip(spare.chunks_exact_mut(rows * len)) {
            cols.par_chunks_exact_mut(len).enumerate().for_each(|(row, col)| {
                col.iter_mut().for_each(|o| {
                    o.write(0.0);
                });
                let (ci, ky, kx) = (row / (g.kernel * g.kernel), row / g.kernel % g.kernel, row % g.kernel);
                let plane = &image[ci * h * w..(ci + 1) * h * w];
                let ((y0, y1), (x0, x1)) = (g.inside(oh, h, ky), g.inside(ow, w, kx));
                for oy in (y0..y1).filter(|_| x0 < x1) {
                    let (out, src) = (&mut col[oy * ow..][x0..x1], &plane[(oy * g.stride + ky - g.padding) * w..]);
                    let first = x0 * g.stride + kx - g.padding;
                    if g.stride == 1 {
                        let span = out.len();
                        out.iter_mut().zip(&src[first..first + span]).for_each(|(o, v)| {
                            o.write(*v);
                        });
                    } else {
                        out.iter_mut().zip(src[first..].iter().step_by(g.stride)).for_each(|(o, v)| {
                            o.write(*v);
                        });
                    }
                }
            });
        }
        // SAFETY: every value of every row was written above (zeros, then the spans inside).
        unsafe { out.set_len(b * rows * len) };
        Ok((CpuStorage::F32(out), Shape::from((b, rows, len))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Fold(self.0, h, w))?))
    }
}

/// col2im, the adjoint of [`Unfold`]: sums every column entry back into the input position
/// it was taken from. `.1`, `.2`: the input's height and width.
struct Fold(Geometry, usize, usize);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "dbsweep-fold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, h, w) = (self.0, self.1, self.2);
        let (b, rows, len) = layout.shape().dims3()?;
        let cols = f32_slice(storage, layout, "fold's input")?;
        let c = rows / (g.kernel * g.kernel);
        let (oh, ow) = g.output(h, w);
        debug_assert_eq!(len, oh * ow);
        let mut out = vec![0f32; b * c * h * w];
        let per_channel = g.kernel * g.kernel;
        for (columns, image) in cols.chunks_exact(rows * len).zip(out.chunks_exact_mut(c * h * w)) {
            // Channels in parallel: each sums its own k·k rows into its own plane.
            let planes = image.par_chunks_exact_mut(h * w).zip(columns.par_chunks_exact(per_channel * len));
            planes.for_each(|(plane, channel_rows)| {
                for (row, col) in channel_rows.chunks_exact(len).enumerate() {
                    let (ky, kx) = (row / g.kernel, row % g.kernel);
                    let ((y0, y1), (x0, x1)) = (g.inside(oh, h, ky), g.inside(ow, w, kx));
                    for oy in (y0..y1).filter(|_| x0 < x1) {
                        let (src, dst) = (&col[oy * ow..][x0..x1], &mut plane[(oy * g.stride + ky - g.padding) * w..]);
                        let first = x0 * g.stride + kx - g.padding;
                        dst[first..].iter_mut().step_by(g.stride).zip(src).for_each(|(d, v)| *d += *v);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::attention::max_abs_diff;
    use crate::rng::Rng;

    fn random(shape: &[usize], seed: u64) -> Var {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn outputs_and_gradients_match_candles_convolution() {
        for (kernel, stride, padding, h, w) in
            [(3, 1, 1, 7, 6), (3, 2, 1, 8, 8), (3, 2, 0, 9, 7), (1, 1, 0, 5, 4), (1, 2, 0, 6, 6), (3, 1, 2, 2, 3)]
        {
            let (x, weight, bias) = (random(&[2, 3, h, w], 1), random(&[5, 3, kernel, kernel], 2), random(&[5], 3));
            let geometry = Geometry { kernel, stride, padding };
            let ours = Conv2d { weight: weight.as_tensor().clone(), bias: bias.as_tensor().clone(), geometry };
            let y = ours.forward(x.as_tensor()).unwrap();
            let reference = x
                .as_tensor()
                .conv2d(weight.as_tensor(), padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.as_tensor().reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(y.dims(), reference.dims());
            assert!(max_abs_diff(&y, &reference) < 1e-5, "{kernel} {stride} {padding}: outputs differ");
            let r = random(y.dims(), 4);
            let grads = |out: &Tensor| (out * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let (g, gr) = (grads(&y), grads(&reference));
            for var in [&x, &weight, &bias] {
                let (a, b) = (g.get(var.as_tensor()).unwrap(), gr.get(var.as_tensor()).unwrap());
                assert!(max_abs_diff(a, b) < 1e-5, "{kernel} {stride} {padding}: gradients differ {a} {b}");
            }
        }
    }

    /// The unfold other devices use (candle ops) against the fused CPU one: the same outputs
    /// and gradients, so a GPU convolves as the CPU does.
    #[test]
    fn the_unfold_of_other_devices_matches_the_fused_one() {
        for (kernel, stride, padding, h, w) in [(3, 1, 1, 7, 6), (3, 2, 1, 8, 8), (3, 2, 0, 9, 7), (3, 2, 1, 7, 9)] {
            let (x, weight, bias) = (random(&[2, 3, h, w], 5), random(&[4, 3, kernel, kernel], 6), random(&[4], 7));
            let geometry = Geometry { kernel, stride, padding };
            let conv = Conv2d { weight: weight.as_tensor().clone(), bias: bias.as_tensor().clone(), geometry };
            let (fused, composed) =
                (conv.convolve(x.as_tensor(), true).unwrap(), conv.convolve(x.as_tensor(), false).unwrap());
            assert_eq!(fused.dims(), composed.dims());
            assert!(max_abs_diff(&fused, &composed) < 1e-6, "{kernel} {stride} {padding} {h}x{w}: outputs differ");
            let r = random(fused.dims(), 8);
            let grads = |out: &Tensor| (out * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (grads(&fused), grads(&composed));
            for var in [&x, &weight, &bias] {
                let d = max_abs_diff(a.get(var.as_tensor()).unwrap(), b.get(var.as_tensor()).unwrap());
                assert!(d < 1e-5, "{kernel} {stride} {padding} {h}x{w}: gradients differ by {d}");
            }
        }
    }

    #[test]
    fn an_input_smaller_than_the_kernel_is_an_error_not_a_panic() {
        let conv = Conv2d {
            weight: random(&[2, 1, 3, 3], 1).as_tensor().clone(),
            bias: random(&[2], 2).as_tensor().clone(),
            geometry: Geometry { kernel: 3, stride: 2, padding: 0 },
        };
        let err = conv.forward(random(&[1, 1, 2, 5], 3).as_tensor()).unwrap_err().to_string();
        assert!(err.contains("a 2x5 input with padding 0 is smaller than the 3x3 kernel"), "{err}");
    }
}
