//! Block-wise 8-bit quantisation of optimiser moments with bitsandbytes' dynamic maps
//! (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861), as
//! its `AdamW8bit` keeps Adam's first and second moments: each block of 256 values is scaled by
//! its largest magnitude and each scaled value stored as the index of the nearest of 256 codes
//! of a "dynamic" map (an exponent and a fraction, dense near zero). The first moment uses the
//! signed map, the second (never negative) the unsigned one.
//!
//! Quantising is a binary search over the codes' midpoints, dequantising a look-up: on the CPU
//! each is a plain loop over the values (one pass), elsewhere candle ops (gathers and
//! comparisons) so the same code runs on every device; a test holds the two to the same codes
//! and values.

use candle_core::{DType, Device, Result, Tensor};

/// Values per block (bitsandbytes' optimiser block size).
pub const BLOCK: usize = 256;

/// One of bitsandbytes' dynamic quantisation maps: 256 sorted codes in [-1, 1] (signed) or
/// [0, 1] (unsigned).
#[derive(Clone, Debug)]
pub struct DynamicMap {
    codes: Tensor,
    /// Midpoints between neighbouring codes: a value is stored as the number of midpoints
    /// below it (torch's `bucketize`), i.e. its nearest code.
    bounds: Tensor,
    /// The codes, in host memory.
    host_codes: Vec<f32>,
    /// The midpoints, in host memory.
    host_bounds: Vec<f32>,
}

/// A tensor quantised block-wise to 8 bits.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// One code index per value, padded to whole blocks.
    pub codes: Tensor,
    /// Each block's largest magnitude.
    pub absmax: Tensor,
}

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`, sorted.
/// Computed in f64 and rounded once: bitsandbytes builds it with `torch.linspace` in f32, whose
/// vectorised rounding makes some of its codes differ from these in the last bit (at most one
/// unit in the last place; a value lands on another code only if it lies within that of a
/// midpoint).
pub fn dynamic_codes(signed: bool) -> Vec<f32> {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7 {
        let items = if signed { (1usize << i) + 1 } else { (1usize << (i + 1)) + 1 };
        let step = 0.9 / (items - 1) as f64;
        let scale = 10f64.powi(i - 6);
        for j in 0..items - 1 {
            let mean = 0.1 + (j as f64 + 0.5) * step;
            data.push((scale * mean) as f32);
            if signed {
                data.push((-scale * mean) as f32);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.resize(256, 0.0);
    data.sort_by(f32::total_cmp);
    data
}

impl DynamicMap {
    /// The signed (first moment) or unsigned (second moment) map on `device`.
    pub fn new(signed: bool, device: &Device) -> Result<Self> {
        let codes = dynamic_codes(signed);
        let bounds: Vec<f32> = codes.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        Ok(Self {
            codes: Tensor::new(codes.as_slice(), device)?,
            bounds: Tensor::new(bounds.as_slice(), device)?,
            host_codes: codes,
            host_bounds: bounds,
        })
    }

    /// `x` (any shape, f32) quantised block by block.
    pub fn quantize(&self, x: &Tensor) -> Result<Quantized> {
        match x.device() {
            Device::Cpu => self.quantize_on_host(x, false),
            _ => self.quantize_with_ops(x),
        }
    }

    /// The code of `v` in a block of scale `scale` (with `keep_sign`, as
    /// [`DynamicMap::quantize_keeping_sign`] picks it).
    fn code(&self, v: f32, scale: f32, keep_sign: bool) -> u8 {
        let index = self.host_bounds.partition_point(|m| *m < (v / scale).clamp(-1.0, 1.0));
        let value = self.host_codes[index];
        let shifted = match () {
            _ if keep_sign && v > 0.0 && value < 0.0 => index + 1,
            _ if keep_sign && v < 0.0 && value >= 0.0 => index.saturating_sub(1),
            _ => index,
        };
        shifted.min(255) as u8
    }

    /// One block of at most [`BLOCK`] `values` quantised into `codes` (the block's [`BLOCK`]
    /// codes: those past the values get the code of zero, as padding); returns the block's
    /// scale. What [`DynamicMap::quantize`] (with `keep_sign`,
    /// [`DynamicMap::quantize_keeping_sign`]) does to each block, in host memory.
    pub fn quantize_block(&self, values: &[f32], codes: &mut [u8], keep_sign: bool) -> f32 {
        let scale = values.iter().fold(1e-38f32, |m, v| m.max(v.abs()));
        let (used, padding) = codes.split_at_mut(values.len());
        for (v, code) in values.iter().zip(used) {
            *code = self.code(*v, scale, keep_sign);
        }
        if !padding.is_empty() {
            padding.fill(self.code(0.0, 1.0, keep_sign));
        }
        scale
    }

    /// The value code `code` stands for in a block of scale 1.
    pub fn value(&self, code: u8) -> f32 {
        self.host_codes[code as usize]
    }

    /// [`DynamicMap::quantize`] (with `keep_sign`, [`DynamicMap::quantize_keeping_sign`]) as
    /// one loop over the values in host memory.
    fn quantize_on_host(&self, x: &Tensor, keep_sign: bool) -> Result<Quantized> {
        let flat = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let blocks = flat.len().div_ceil(BLOCK).max(1);
        // (An empty tensor still has one block, of padding.)
        let mut codes = vec![self.code(0.0, 1.0, keep_sign); blocks * BLOCK];
        let mut absmax = vec![1e-38f32; blocks];
        for ((block, out), scale) in flat.chunks(BLOCK).zip(codes.chunks_mut(BLOCK)).zip(&mut absmax) {
            *scale = self.quantize_block(block, out, keep_sign);
        }
        Ok(Quantized { codes: Tensor::new(codes, x.device())?, absmax: Tensor::new(absmax, x.device())? })
    }

    /// [`DynamicMap::quantize`] in candle ops, for any device.
    fn quantize_with_ops(&self, x: &Tensor) -> Result<Quantized> {
        let n = x.elem_count();
        let blocks = n.div_ceil(BLOCK).max(1);
        let flat = x.flatten_all()?.to_dtype(DType::F32)?;
        let padded = flat.pad_with_zeros(0, 0, blocks * BLOCK - n)?.reshape((blocks, BLOCK))?;
        let absmax = padded.abs()?.max_keepdim(1)?.clamp(1e-38f32, f32::MAX)?;
        let scaled = padded.broadcast_div(&absmax)?.clamp(-1f32, 1f32)?.flatten_all()?;
        // The number of midpoints below each value, by binary search over the 255 midpoints.
        let device = x.device();
        // (i64: candle's affine cannot subtract from unsigned integers.)
        let mut index = Tensor::zeros(scaled.shape(), DType::I64, device)?;
        for step in [128i64, 64, 32, 16, 8, 4, 2, 1] {
            let candidate = (&index + step as f64)?;
            let inside = candidate.le(255i64)?;
            let probe = (candidate.clamp(1i64, 255i64)? - 1.0)?;
            let below = self.bounds.index_select(&probe, 0)?.lt(&scaled)?;
            index = (below * inside)?.where_cond(&candidate, &index)?;
        }
        Ok(Quantized { codes: index.to_dtype(DType::U8)?, absmax: absmax.flatten_all()? })
    }

    /// `x` quantised as [`DynamicMap::quantize`] does, except that a value whose code has the
    /// other sign bit takes the next code toward its own sign, as bitsandbytes' kernels keep the
    /// first moment's sign: a negative value never rounds to zero or above, a positive one never
    /// below zero (it may round to zero, whose sign bit is its own).
    pub fn quantize_keeping_sign(&self, x: &Tensor) -> Result<Quantized> {
        match x.device() {
            Device::Cpu => self.quantize_on_host(x, true),
            _ => self.keep_sign_with_ops(x),
        }
    }

    /// [`DynamicMap::quantize_keeping_sign`] in candle ops, for any device.
    fn keep_sign_with_ops(&self, x: &Tensor) -> Result<Quantized> {
        let q = self.quantize_with_ops(x)?;
        let n = x.elem_count();
        let flat = x.flatten_all()?.to_dtype(DType::F32)?;
        let flat = flat.pad_with_zeros(0, 0, q.codes.elem_count() - n)?;
        let index = q.codes.to_dtype(DType::I64)?;
        let value = self.codes.index_select(&index, 0)?;
        // Positive values on a negative code move up one; negative ones on a code >= 0 down one.
        let up = (flat.gt(0f32)? * value.lt(0f32)?)?;
        let down = (flat.lt(0f32)? * value.ge(0f32)?)?;
        let shifted = ((&index + up.to_dtype(DType::I64)?)? - down.to_dtype(DType::I64)?)?;
        Ok(Quantized { codes: shifted.clamp(0i64, 255i64)?.to_dtype(DType::U8)?, absmax: q.absmax })
    }

    /// The values `q` stands for, in the shape `shape`.
    pub fn dequantize(&self, q: &Quantized, shape: &candle_core::Shape) -> Result<Tensor> {
        if q.codes.device().is_cpu() {
            return self.dequantize_on_host(q, shape);
        }
        self.dequantize_with_ops(q, shape)
    }

    /// [`DynamicMap::dequantize`] as one loop over the codes in host memory.
    fn dequantize_on_host(&self, q: &Quantized, shape: &candle_core::Shape) -> Result<Tensor> {
        let (codes, absmax) = (q.codes.to_vec1::<u8>()?, q.absmax.to_vec1::<f32>()?);
        let mut values = Vec::with_capacity(codes.len());
        for (block, scale) in codes.chunks(BLOCK).zip(&absmax) {
            values.extend(block.iter().map(|c| self.value(*c) * scale));
        }
        values.truncate(shape.elem_count());
        Tensor::from_vec(values, shape, q.codes.device())
    }

    /// [`DynamicMap::dequantize`] in candle ops, for any device.
    fn dequantize_with_ops(&self, q: &Quantized, shape: &candle_core::Shape) -> Result<Tensor> {
        let values = self.codes.index_select(&q.codes.to_dtype(DType::U32)?, 0)?;
        let blocks = q.absmax.elem_count();
        let scaled = values.reshape((blocks, BLOCK))?.broadcast_mul(&q.absmax.unsqueeze(1)?)?;
        scaled.flatten_all()?.narrow(0, 0, shape.elem_count())?.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maps_are_bitsandbytes_dynamic_maps() {
        let signed = dynamic_codes(true);
        let unsigned = dynamic_codes(false);
        assert_eq!((signed.len(), unsigned.len()), (256, 256));
        assert_eq!((signed[0], signed[255]), (-0.99296874, 1.0));
        assert_eq!(signed.iter().filter(|v| **v == 0.0).count(), 1);
        assert_eq!((unsigned[0], unsigned[255]), (0.0, 1.0));
        // Dense near zero: the smallest non-zero code is 10^-6 times a fraction.
        let smallest = signed.iter().filter(|v| **v > 0.0).fold(1f32, |a, b| a.min(*b));
        assert!((smallest - 0.55e-6).abs() < 1e-9, "{smallest}");
        assert!(signed.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn values_round_trip_to_the_nearest_code_within_each_block() {
        let dev = Device::Cpu;
        let map = DynamicMap::new(true, &dev).unwrap();
        let mut rng = crate::rng::Rng::new(1);
        // Two blocks and a partial one, with very different scales.
        let mut values: Vec<f32> = rng.normals_f32(600);
        values[300..].iter_mut().for_each(|v| *v *= 1e-4);
        let x = Tensor::from_vec(values.clone(), (20, 30), &dev).unwrap();
        let q = map.quantize(&x).unwrap();
        assert_eq!(q.codes.dims(), [768]);
        assert_eq!(q.absmax.dims(), [3]);
        let back = map.dequantize(&q, x.shape()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let codes = dynamic_codes(true);
        let absmax = q.absmax.to_vec1::<f32>().unwrap();
        for (i, (v, b)) in values.iter().zip(&back).enumerate() {
            let a = absmax[i / BLOCK];
            // The nearest code to v / a, times a.
            let nearest = codes.iter().min_by(|x, y| (*x - v / a).abs().total_cmp(&(*y - v / a).abs())).unwrap();
            assert!((b - nearest * a).abs() <= 1e-6 * a, "{i}: {v} -> {b}, nearest {}", nearest * a);
        }
        // Keeping the sign: a tiny negative value lands on the smallest negative code, not 0.
        let tiny = Tensor::new(&[1e-9f32, -1e-9, 1.0], &dev).unwrap();
        let kept = map.quantize_keeping_sign(&tiny).unwrap();
        let back = map.dequantize(&kept, tiny.shape()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((back[0], back[2]), (0.0, 1.0));
        assert!(back[1] < 0.0, "{back:?}");
        // The unsigned map quantises the (non-negative) second moment.
        let sq = x.sqr().unwrap();
        let uq = DynamicMap::new(false, &dev).unwrap();
        let back = uq.dequantize(&uq.quantize(&sq).unwrap(), sq.shape()).unwrap();
        assert!(back.min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0);
    }

    #[test]
    fn the_host_loops_and_the_device_ops_give_the_same_codes_and_values() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(7);
        // A partial block, zeros, exact midpoints, tiny values of both signs and wide scales.
        let mut values: Vec<f32> = rng.normals_f32(1000);
        values[..100].iter_mut().for_each(|v| *v *= 1e-7);
        values[100..110].fill(0.0);
        values[300..556].fill(0.0);
        let signed = DynamicMap::new(true, &dev).unwrap();
        values[600] = 4.0;
        values[601] = 4.0 * signed.host_bounds[100];
        values[602] = -4.0 * 1e-8;
        let x = Tensor::from_vec(values, (10, 100), &dev).unwrap();
        let same = |a: Quantized, b: Quantized| {
            assert_eq!(a.codes.to_vec1::<u8>().unwrap(), b.codes.to_vec1::<u8>().unwrap());
            assert_eq!(a.absmax.to_vec1::<f32>().unwrap(), b.absmax.to_vec1::<f32>().unwrap());
        };
        same(signed.quantize_on_host(&x, false).unwrap(), signed.quantize_with_ops(&x).unwrap());
        let q = signed.quantize_on_host(&x, true).unwrap();
        let (host, ops) =
            (signed.dequantize_on_host(&q, x.shape()).unwrap(), signed.dequantize_with_ops(&q, x.shape()).unwrap());
        assert_eq!(
            host.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ops.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        same(signed.quantize_on_host(&x, true).unwrap(), signed.keep_sign_with_ops(&x).unwrap());
        let unsigned = DynamicMap::new(false, &dev).unwrap();
        let sq = x.sqr().unwrap();
        same(unsigned.quantize_on_host(&sq, false).unwrap(), unsigned.quantize_with_ops(&sq).unwrap());
    }
}
