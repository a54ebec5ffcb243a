//! Training images: listing, fingerprinting, decoding (PNG, JPEG, WebP), resizing and
//! cropping to the training resolution, as diffusers' DreamBooth dataset does (resize the
//! shorter side with bilinear filtering, then centre or random crop, optional flip).

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;

use crate::image_set::{DataError, error};
use crate::rng::Rng;

/// How to crop after resizing the shorter side to the resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crop {
    /// The centre square.
    Center,
    /// A square at a random offset.
    Random,
}

/// Decodes `path` and returns it as a [3, r, r] tensor in [-1, 1]. Images whose shorter side
/// is below `resolution` are refused rather than upscaled.
pub fn load(
    path: &Path,
    resolution: u32,
    crop: Crop,
    flip: bool,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor, DataError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| error(path, format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| error(path, format!("not a readable PNG, JPEG or WebP image: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w.min(h) < resolution {
        return Err(error(
            path,
            format!("is {w}x{h}, smaller than the training resolution {resolution} on its shorter side"),
        ));
    }
    let (nw, nh) = if w <= h {
        (resolution, (h as u64 * resolution as u64 / w as u64) as u32)
    } else {
        ((w as u64 * resolution as u64 / h as u64) as u32, resolution)
    };
    let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
    let (x, y) = match crop {
        Crop::Center => ((nw - resolution) / 2, (nh - resolution) / 2),
        Crop::Random => {
            (rng.below((nw - resolution + 1) as u64) as u32, rng.below((nh - resolution + 1) as u64) as u32)
        }
    };
    let mut square = image::imageops::crop_imm(&resized, x, y, resolution, resolution).to_image();
    if flip {
        image::imageops::flip_horizontal_in_place(&mut square);
    }
    let r = resolution as usize;
    let data: Vec<f32> = square.into_raw().iter().map(|&b| b as f32 / 127.5 - 1.0).collect();
    let t = Tensor::from_vec(data, (r, r, 3), device).map_err(|e| error(path, e.to_string()))?;
    t.permute((2, 0, 1)).and_then(|t| t.contiguous()).map_err(|e| error(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_set::ImageSet;
    use std::path::PathBuf;

    fn examples() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/instance")
    }

    #[test]
    fn shipped_examples_load_at_the_tiny_resolution() {
        let set = ImageSet::open(&examples()).unwrap();
        assert_eq!(set.files.len(), 4);
        let mut rng = Rng::new(0);
        let t = load(&set.files[0], 32, Crop::Center, false, &mut rng, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [3, 32, 32]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        let flipped = load(&set.files[0], 32, Crop::Center, true, &mut rng, &Device::Cpu).unwrap();
        let back = flipped.flip(&[2]).unwrap();
        assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v);
    }

    #[test]
    fn bad_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.png");
        std::fs::write(&bad, b"not an image").unwrap();
        let err = load(&bad, 32, Crop::Center, false, &mut Rng::new(0), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("broken.png") && err.contains("not a readable"), "{err}");
        let small = examples().join("sks-dog-0.png");
        let err = load(&small, 64, Crop::Center, false, &mut Rng::new(0), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("is 48x48, smaller than the training resolution 64"), "{err}");
    }
}
