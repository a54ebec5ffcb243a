//! Pillow's `Image.resize` for 8-bit RGB images, bit for bit (`src/libImaging/Resample.c`,
//! Pillow 13.0.0): the image processors' PIL backend resizes this way, and a 1e-4 parity on the
//! metrics needs the same 8-bit levels (the torchvision backend differs by up to one level).
//!
//! Each axis is one separable pass of a filter stretched by the scale when shrinking
//! (antialiasing), with weights normalised in f64 and then rounded to 22-bit fixed point; the
//! image between the two passes is 8-bit. A pass that keeps its axis' size is skipped. Pillow 13
//! runs the vertical pass first when the height shrinks by more than twice as many pixels as the
//! width (Pillow ≤ 12 always ran the horizontal pass first); the order changes some levels.

use crate::model::png::RgbImage;

/// Fixed-point precision of the weights (Pillow's `PRECISION_BITS` for 8-bit images).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter of Pillow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Resampling.BILINEAR` (2): the triangle filter, support 1.
    Bilinear,
    /// `Resampling.BICUBIC` (3): Keys' cubic with `a = -0.5`, support 2.
    Bicubic,
}

impl Filter {
    /// The filter with Pillow's number (`resample` in a processor config), if supported.
    pub fn from_pil(code: i64) -> Option<Self> {
        match code {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bicubic if x < 1.0 => ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1.0,
            Filter::Bicubic if x < 2.0 => (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5,
            _ => 0.0,
        }
    }
}

/// For each output index of one axis: the first input index and the fixed-point weights of
/// the inputs from there on (Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let one = f64::from(1u32 << PRECISION_BITS);
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; `as` does too.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> =
                (xmin..xmax.max(xmin)).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|w| *w /= total);
            }
            // Round half away from zero, then truncate, as Pillow does.
            let fixed = k.iter().map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 });
            (xmin, fixed.collect())
        })
        .collect()
}

/// One separable pass along `axis` (0 vertical, 1 horizontal) to `out_size` pixels.
fn pass(img: &RgbImage, out_size: usize, axis: usize, filter: Filter) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let (in_size, across) = if axis == 0 { (h, w) } else { (w, h) };
    // Offsets (in bytes) of one step along the axis and across it, in the input.
    let (step, across_step) = if axis == 0 { (w * 3, 3) } else { (3, w * 3) };
    let (out_w, out_h) = if axis == 0 { (w, out_size) } else { (out_size, h) };
    let mut pixels = vec![0u8; out_w * out_h * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for (o, (start, k)) in coefficients(in_size, out_size, filter).iter().enumerate() {
        for a in 0..across {
            let (out_x, out_y) = if axis == 0 { (a, o) } else { (o, a) };
            let base = a * across_step + start * step;
            for c in 0..3 {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(half, |acc, (j, &kj)| acc + i32::from(img.pixels[base + j * step + c]) * kj);
                pixels[(out_y * out_w + out_x) * 3 + c] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage { width: out_w, height: out_h, pixels }
}

/// Whether Pillow 13 runs the vertical pass first for a `width`×`height` → `w`×`h` resize.
fn vertical_first(width: usize, height: usize, w: usize, h: usize) -> bool {
    h < height && (height - h) as i64 > 2 * (width as i64 - w as i64)
}

/// `Image.resize((width, height), filter)` of an RGB image (both sizes at least 1).
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    let passes = if vertical_first(img.width, img.height, width, height) {
        [(height, 0), (width, 1)]
    } else {
        [(width, 1), (height, 0)]
    };
    let mut out = RgbImage { width: img.width, height: img.height, pixels: img.pixels.clone() };
    for (size, axis) in passes {
        let current = if axis == 0 { out.height } else { out.width };
        if size != current {
            out = pass(&out, size, axis, filter);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: usize, height: usize, pixels: &[u8]) -> RgbImage {
        assert_eq!(pixels.len(), width * height * 3);
        RgbImage { width, height, pixels: pixels.to_vec() }
    }

    // Inputs are random; the expected values are `Image.fromarray(input).resize((w, h), f)` of
    // Pillow 13.0.0 (Python 3.11, numpy 2.4.6).

    #[test]
    fn bicubic_shrinks_one_axis_and_grows_the_other() {
        #[rustfmt::skip]
        let input = image(7, 4, &[
            168, 229, 184, 171, 238, 171, 20, 206, 245, 153, 204, 5, 37, 53, 213, 206, 192, 173, 6, 120, 63,
            96, 236, 131, 118, 4, 87, 161, 124, 71, 42, 73, 237, 16, 194, 250, 10, 103, 206, 13, 143, 2,
            38, 71, 133, 118, 36, 98, 196, 35, 57, 146, 50, 179, 145, 104, 206, 53, 141, 33, 181, 39, 151,
            11, 180, 138, 66, 0, 165, 98, 123, 12, 144, 184, 24, 38, 129, 1, 202, 255, 85, 54, 228, 48,
        ]);
        #[rustfmt::skip]
        let want = [
            143, 242, 196, 94, 170, 132, 105, 134, 137, 134, 180, 145, 76, 143, 168, 49, 138, 141,
            119, 97, 90, 79, 102, 196, 15, 131, 140, 108, 51, 96, 148, 64, 159, 103, 95, 121,
            75, 66, 115, 136, 105, 75, 122, 162, 81, 49, 93, 130, 105, 151, 11, 114, 231, 51,
        ];
        let out = resize(&input, 3, 6, Filter::Bicubic);
        assert_eq!((out.width, out.height), (3, 6));
        assert_eq!(out.pixels, want);
    }

    /// 6×11 → 5×3 shrinks the height by 8 > 2·1 pixels: Pillow 13 runs the vertical pass first,
    /// and for this input the other order gives different levels.
    #[test]
    fn bilinear_runs_the_vertical_pass_first_when_pillow_13_does() {
        #[rustfmt::skip]
        let input = image(6, 11, &[
            127, 169, 1, 167, 109, 247, 16, 192, 78, 220, 8, 60, 189, 181, 64, 72, 8, 185, 88, 111, 191,
            138, 99, 67, 48, 68, 100, 249, 67, 40, 127, 45, 33, 51, 206, 229, 217, 85, 53, 204, 120, 134,
            31, 216, 14, 127, 160, 29, 208, 161, 116, 100, 83, 151, 198, 160, 173, 193, 54, 126, 126, 57,
            118, 170, 107, 131, 59, 173, 52, 139, 181, 169, 63, 196, 144, 15, 138, 137, 135, 245, 15, 140,
            59, 142, 252, 140, 76, 231, 51, 218, 125, 69, 151, 117, 140, 92, 189, 209, 48, 225, 71, 217,
            216, 47, 124, 91, 112, 16, 45, 88, 184, 95, 72, 215, 222, 173, 36, 146, 75, 31, 190, 30, 190,
            222, 190, 75, 79, 87, 255, 139, 49, 58, 133, 9, 97, 139, 135, 24, 60, 229, 52, 107, 73, 226,
            194, 51, 72, 223, 74, 189, 116, 78, 92, 139, 189, 4, 184, 93, 52, 199, 243, 109, 30, 181, 205,
            194, 94, 197, 89, 159, 78, 0, 109, 47, 177, 9, 250, 117, 220, 128, 15, 173, 204, 85, 116, 105,
            201, 111, 148, 235, 105, 238, 187, 96, 8, 52, 18, 181,
        ]);
        #[rustfmt::skip]
        let want = [
            149, 126, 116, 124, 117, 112, 124, 115, 68, 170, 115, 67, 111, 120, 163,
            109, 109, 156, 130, 122, 104, 163, 126, 83, 174, 102, 108, 161, 120, 119,
            97, 114, 172, 153, 91, 133, 128, 117, 82, 147, 103, 97, 138, 143, 139,
        ];
        assert!(vertical_first(6, 11, 5, 3));
        assert_eq!(resize(&input, 5, 3, Filter::Bilinear).pixels, want);
        let horizontal_first = pass(&pass(&input, 5, 1, Filter::Bilinear), 3, 0, Filter::Bilinear);
        assert_ne!(horizontal_first.pixels, want, "the order matters for this input");
    }

    #[test]
    fn bicubic_shrinks_the_width_only() {
        #[rustfmt::skip]
        let input = image(9, 5, &[
            239, 112, 47, 83, 226, 235, 130, 75, 192, 32, 100, 206, 233, 91, 57, 39, 6, 1, 3, 81, 74, 206,
            104, 30, 130, 100, 39, 38, 176, 131, 240, 71, 138, 174, 209, 178, 188, 14, 93, 148, 67, 201,
            211, 114, 169, 128, 103, 43, 105, 76, 135, 204, 214, 211, 190, 204, 121, 206, 74, 60, 8, 210,
            72, 15, 56, 104, 221, 81, 242, 149, 96, 37, 149, 231, 196, 204, 13, 64, 1, 133, 177, 55, 207,
            129, 35, 54, 98, 74, 140, 114, 162, 129, 212, 103, 171, 247, 232, 55, 119, 60, 190, 233, 159,
            196, 80, 166, 184, 3, 11, 129, 85, 80, 243, 194, 231, 238, 108, 26, 11, 223, 213, 173, 248,
            21, 131, 115, 209, 215, 115, 31, 77, 216, 28, 30, 10,
        ]);
        #[rustfmt::skip]
        let want = [
            151, 157, 157, 109, 96, 174, 79, 51, 34, 137, 99, 42, 150, 141, 142, 184, 84, 150, 164, 89,
            133, 147, 136, 145, 163, 153, 81, 66, 102, 121, 177, 124, 134, 112, 100, 130, 47, 128, 108,
            120, 133, 185, 149, 128, 189, 143, 192, 73, 79, 201, 132, 134, 127, 198, 121, 162, 159, 59,
            82, 114,
        ];
        assert_eq!(resize(&input, 4, 5, Filter::Bicubic).pixels, want);
    }

    #[test]
    fn same_size_is_a_copy_and_weights_sum_to_one() {
        let input = image(2, 1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(resize(&input, 2, 1, Filter::Bicubic).pixels, input.pixels);
        for (n_in, n_out) in [(37, 5), (5, 37), (224, 224), (500, 224)] {
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                for (_, k) in coefficients(n_in, n_out, filter) {
                    let sum: i32 = k.iter().sum();
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i32, "{n_in}->{n_out} {filter:?}");
                }
            }
        }
    }

    #[test]
    fn pil_codes() {
        assert_eq!(Filter::from_pil(2), Some(Filter::Bilinear));
        assert_eq!(Filter::from_pil(3), Some(Filter::Bicubic));
        assert_eq!(Filter::from_pil(1), None);
    }
}
