//! Writing sample images as PNG files that carry their settings in text chunks.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::error::{ModelError, Result};

/// An 8-bit RGB image.
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub pixels: Vec<u8>,
}

/// Converts images [n, 3, h, w] with values in [0, 1] to 8-bit RGB (rounded, as PIL does).
pub fn to_rgb8(images: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, _, height, width) = images.dims4()?;
    let bytes = (images.clamp(0f32, 1f32)? * 255.0)?.round()?.permute((0, 2, 3, 1))?.to_dtype(DType::U8)?;
    (0..n).map(|i| Ok(RgbImage { width, height, pixels: bytes.get(i)?.flatten_all()?.to_vec1::<u8>()? })).collect()
}

/// Writes `image` to `path` atomically, with one `tEXt` chunk per `(keyword, text)`, and
/// returns the sha256 (lower-case hex) of the bytes written, so callers recording the file
/// need not read it back.
pub fn write(path: &Path, image: &RgbImage, text: &[(&str, String)]) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| ModelError::Write { path: path.to_path_buf(), message: e.to_string() };
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (keyword, value) in text {
        encoder.add_text_chunk(keyword.to_string(), value.clone()).map_err(|e| err(&e))?;
    }
    let mut writer = encoder.write_header().map_err(|e| err(&e))?;
    writer.write_image_data(&image.pixels).map_err(|e| err(&e))?;
    writer.finish().map_err(|e| err(&e))?;
    crate::atomic_file::write(path, &bytes).map_err(|e| err(&e))?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn round_trips_pixels_and_text() {
        let img = Tensor::new(&[0f32, 0.5, 1.0, 0.25, 0.75, 1.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 2, 2))
            .unwrap();
        let rgb = to_rgb8(&img).unwrap();
        assert_eq!(rgb[0].pixels[..3], [0, 191, 51]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let sha = write(&path, &rgb[0], &[("prompt", "a photo of sks dog".into())]).unwrap();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&path).unwrap());
        assert_eq!(sha, digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let text = &reader.info().uncompressed_latin1_text;
        assert_eq!((text[0].keyword.as_str(), text[0].text.as_str()), ("prompt", "a photo of sks dog"));
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, rgb[0].pixels);
    }
}
