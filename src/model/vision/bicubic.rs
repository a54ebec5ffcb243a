//! PyTorch's `F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)` (no
//! antialiasing), which DINOv2 uses to fit its position embeddings to the patch grid of an
//! image whose size differs from the config's `image_size` (dinov2 checkpoints say 518; the
//! processor crops 224).
//!
//! It is separable: output `o` of an axis mixes the inputs `i0 − 1 ..= i0 + 2` (clamped to the
//! edges), with `real = scale · (o + 0.5) − 0.5` (not clamped), `i0 = floor(real)`,
//! `t = real − i0` and Keys' cubic with `A = −0.75`; `scale = in / out`. The coordinates and
//! weights are computed in f32 as PyTorch's CPU kernel does for f32 input; the sums in f64.

/// Keys' cubic convolution parameter PyTorch uses.
const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// The [out_size × in_size] matrix of one axis (row `o` holds output `o`'s weights).
pub fn axis_matrix(in_size: usize, out_size: usize) -> Vec<f64> {
    let scale = in_size as f32 / out_size as f32;
    let mut m = vec![0f64; out_size * in_size];
    for o in 0..out_size {
        let real = scale * (o as f32 + 0.5) - 0.5;
        let i0 = real.floor();
        let t = real - i0;
        let weights = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, w) in weights.into_iter().enumerate() {
            let i = (i0 as i64 - 1 + k as i64).clamp(0, in_size as i64 - 1) as usize;
            m[o * in_size + i] += f64::from(w);
        }
    }
    m
}

/// Resizes `channels` planes of `in_h`×`in_w` values, stored channel by channel, to
/// `out_h`×`out_w`.
pub fn interpolate(
    data: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    let (my, mx) = (axis_matrix(in_h, out_h), axis_matrix(in_w, out_w));
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    let mut rows = vec![0f64; out_h * in_w];
    for plane in data.chunks_exact(in_h * in_w).take(channels) {
        // Vertical, then horizontal.
        rows.iter_mut().for_each(|v| *v = 0.0);
        for oy in 0..out_h {
            for iy in 0..in_h {
                let w = my[oy * in_h + iy];
                if w != 0.0 {
                    for x in 0..in_w {
                        rows[oy * in_w + x] += w * f64::from(plane[iy * in_w + x]);
                    }
                }
            }
        }
        for oy in 0..out_h {
            for ox in 0..out_w {
                let sum: f64 = (0..in_w).map(|ix| mx[ox * in_w + ix] * rows[oy * in_w + ix]).sum();
                out.push(sum as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let m = axis_matrix(3, 3);
        for o in 0..3 {
            for i in 0..3 {
                assert!((m[o * 3 + i] - f64::from(u8::from(o == i))).abs() < 1e-7, "{m:?}");
            }
        }
    }

    /// torch 2.15.0: `F.interpolate(torch.arange(15.).reshape(1, 1, 3, 5) ** 2 / 10,
    /// size=(2, 4), mode="bicubic", align_corners=False)`.
    #[test]
    fn matches_pytorch_on_a_small_grid() {
        let data: Vec<f32> = (0..15).map(|v| (v * v) as f32 / 10.0).collect();
        let got = interpolate(&data, 1, (3, 5), (2, 4));
        let want = TORCH_3X5_TO_2X4;
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    const TORCH_3X5_TO_2X4: [f32; 8] =
        [0.328_145_24, 0.757_658_4, 1.462_263_5, 2.582_304_2, 8.566_483, 11.114_607, 13.745_939, 16.984_592];
}
