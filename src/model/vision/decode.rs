//! Decoding an image file into 8-bit RGB the way transformers 5 does before preprocessing
//! (`convert_to_rgb` on the `PIL.Image.open` result).
//!
//! - Grayscale is replicated into the three channels.
//! - Any transparency (an alpha channel, or a PNG `tRNS` chunk, which the decoder expands into
//!   alpha) is composited onto opaque white: `out = (c·a + 255·(255 − a) + 127) div 255` per
//!   channel, which equals `PIL.Image.alpha_composite` for all 65536 `(c, a)` pairs. It is
//!   not alpha-dropped as `Image.convert("RGB")` would do.
//! - 16-bit samples keep their high byte, as Pillow reads 16-bit RGB(A) and LA PNGs; 16-bit
//!   grayscale saturates at 255, as Pillow's `I;16` to `RGB` conversion does.
//!
//! EXIF orientation is not applied (neither `Image.open` nor the processors apply it). JPEG and
//! WebP are decoded by the `image` crate, not libjpeg-turbo / libwebp as under Pillow, so lossy
//! files may differ from Pillow's decoding by a level here and there.

use std::path::Path;

use image::DynamicImage;

use crate::model::error::{ModelError, Result};
use crate::model::png::RgbImage;

/// Decodes the PNG, JPEG or WebP file at `path` into RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let err = |message: String| ModelError::Image { path: path.to_path_buf(), message };
    let decoded = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| err(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| err(format!("not a readable PNG, JPEG or WebP image: {e}")))?;
    Ok(to_rgb(decoded))
}

/// The composite of colour `c` with alpha `a` over white.
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    // At most (255·255 + 127) / 255 = 255: the cast is exact.
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// The high byte of a 16-bit sample.
fn high(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Converts a decoded image as transformers' `convert_to_rgb` converts the PIL image.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&l| [l; 3]).collect(),
        DynamicImage::ImageLumaA8(b) => {
            b.into_raw().chunks_exact(2).flat_map(|p| [over_white(p[0], p[1]); 3]).collect()
        }
        DynamicImage::ImageRgba8(b) => {
            b.into_raw().chunks_exact(4).flat_map(|p| [0, 1, 2].map(|c| over_white(p[c], p[3]))).collect()
        }
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| high(v)).collect(),
        DynamicImage::ImageLuma16(b) => b.into_raw().iter().flat_map(|&l| [l.min(255) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(b) => {
            b.into_raw().chunks_exact(2).flat_map(|p| [over_white(high(p[0]), high(p[1])); 3]).collect()
        }
        DynamicImage::ImageRgba16(b) => {
            b.into_raw().chunks_exact(4).flat_map(|p| [0, 1, 2].map(|c| over_white(high(p[c]), high(p[3])))).collect()
        }
        // Float images (not produced by the enabled decoders): the `image` crate's conversion.
        other => other.to_rgb8().into_raw(),
    };
    RgbImage { width, height, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, ImageBuffer, Luma, Rgba, RgbaImage};

    #[test]
    fn alpha_is_composited_onto_white_with_pillows_rounding() {
        // (c, a) -> PIL.Image.alpha_composite(white, (c, c, c, a)) (Pillow 13.0.0).
        for (c, a, want) in [(0, 0, 255), (0, 255, 0), (200, 255, 200), (0, 128, 127), (100, 77, 208), (13, 1, 254)] {
            assert_eq!(over_white(c, a), want, "c={c} a={a}");
        }
        let rgba = RgbaImage::from_raw(2, 1, vec![10, 20, 30, 0, 10, 20, 30, 255]).unwrap();
        let rgb = to_rgb(DynamicImage::ImageRgba8(rgba));
        assert_eq!((rgb.width, rgb.height, rgb.pixels), (2, 1, vec![255, 255, 255, 10, 20, 30]));
        let la = GrayAlphaImage::from_raw(1, 1, vec![0, 128]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageLumaA8(la)).pixels, vec![127; 3]);
    }

    #[test]
    fn sixteen_bit_samples_follow_pillow() {
        let gray: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(3, 1, vec![100, 256, 40000]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageLuma16(gray)).pixels, [100, 100, 100, 255, 255, 255, 255, 255, 255]);
        let rgba: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_raw(1, 1, vec![40000, 256, 255, 65535]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageRgba16(rgba)).pixels, [156, 1, 0]);
    }
}
