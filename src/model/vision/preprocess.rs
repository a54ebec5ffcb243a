//! The image processors of the evaluation models (`CLIPImageProcessor`, `ViTImageProcessor`,
//! `BitImageProcessor`), as their PIL backend runs them: convert to RGB ([`super::decode`]),
//! resize with Pillow's filters ([`super::resize`]), center crop, rescale, normalize. The
//! result equals transformers' `pixel_values` bit for bit (tested on the eval fixtures).
//!
//! The settings come from `preprocessor_config.json`; keys it lacks take the class defaults
//! of transformers 5, the class named by `image_processor_type` or, in older files,
//! `feature_extractor_type` (a `Fast` or `Pil` suffix names the same class). A file that
//! names neither takes the class `AutoImageProcessor` maps the model's `model_type` to.
//! Images are always converted to RGB, whatever `do_convert_rgb` says (without it transformers
//! fails on grayscale and RGBA images).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use super::Architecture;
use super::decode::load_rgb;
use super::resize::{Filter, resize};
use crate::model::error::{ModelError, Result};
use crate::model::json;
use crate::model::png::RgbImage;

/// OpenAI CLIP's normalisation (transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`).
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// `IMAGENET_STANDARD_MEAN` / `_STD`, the ViT processor's default.
const STANDARD: [f64; 3] = [0.5, 0.5, 0.5];

/// The processor classes supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessorClass {
    /// `CLIPImageProcessor` (also the legacy `CLIPFeatureExtractor`).
    Clip,
    /// `ViTImageProcessor` (also `ViTFeatureExtractor`, as in facebook/dino-vits16).
    Vit,
    /// `BitImageProcessor` (facebook/dinov2-*).
    Bit,
}

impl ProcessorClass {
    /// The class of an `image_processor_type` / `feature_extractor_type` value.
    pub fn from_name(name: &str) -> Option<Self> {
        let base = name.strip_suffix("Fast").or_else(|| name.strip_suffix("Pil")).unwrap_or(name);
        match base {
            "CLIPImageProcessor" | "CLIPFeatureExtractor" => Some(ProcessorClass::Clip),
            "ViTImageProcessor" | "ViTFeatureExtractor" => Some(ProcessorClass::Vit),
            "BitImageProcessor" => Some(ProcessorClass::Bit),
            _ => None,
        }
    }

    /// The class `AutoImageProcessor` picks for a model family.
    pub fn for_architecture(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Clip => ProcessorClass::Clip,
            Architecture::Vit => ProcessorClass::Vit,
            Architecture::Dinov2 => ProcessorClass::Bit,
        }
    }
}

/// How the resize picks the output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side becomes this, the longer one `int(s · long / short)`.
    ShortestEdge(usize),
    /// Exactly `(height, width)`.
    Exact(usize, usize),
}

impl ResizeTo {
    /// The `(height, width)` an `height`×`width` image is resized to.
    pub fn output(self, height: usize, width: usize) -> (usize, usize) {
        match self {
            ResizeTo::Exact(h, w) => (h, w),
            // `int(s * long / short)` in Python: the quotient is never within a rounding error
            // of the next integer, so integer division gives the same.
            ResizeTo::ShortestEdge(s) if width <= height => (s * height / width, s),
            ResizeTo::ShortestEdge(s) => (s, s * width / height),
        }
    }
}

/// A processor's settings, with the class defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    /// The processor class.
    pub class: ProcessorClass,
    /// The resize, if any, and its filter.
    pub resize: Option<(ResizeTo, Filter)>,
    /// The center crop `(height, width)`, if any.
    pub crop: Option<(usize, usize)>,
    /// The rescale factor, if any (usually 1/255).
    pub rescale: Option<f64>,
    /// Per-channel `(mean, std)`, if normalising.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    /// The file the settings were read from.
    pub path: PathBuf,
}

/// `size` / `crop_size` as processor configs write them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Int(usize),
    List(Vec<usize>),
    Dict(SizeDict),
}

#[derive(Clone, Debug, Deserialize)]
struct SizeDict {
    shortest_edge: Option<usize>,
    longest_edge: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
}

/// `image_mean` / `image_std`: one value for all channels or one per channel.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f64),
    Many(Vec<f64>),
}

/// `preprocessor_config.json`; absent and `null` keys take the class default.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    image_processor_type: Option<String>,
    feature_extractor_type: Option<String>,
    do_resize: Option<bool>,
    size: Option<SizeValue>,
    resample: Option<i64>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeValue>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<PerChannel>,
    image_std: Option<PerChannel>,
}

impl Preprocessor {
    /// Reads `preprocessor_config.json` of a transformers model folder.
    pub fn from_folder(folder: &Path) -> Result<Self> {
        let path = folder.join("preprocessor_config.json");
        if !path.is_file() {
            return Err(ModelError::Missing { path });
        }
        let raw: RawConfig = json::read(&path)?;
        let named = raw.image_processor_type.as_deref().or(raw.feature_extractor_type.as_deref());
        let class = match named {
            Some(name) => ProcessorClass::from_name(name).ok_or_else(|| {
                let key =
                    if raw.image_processor_type.is_some() { "image_processor_type" } else { "feature_extractor_type" };
                ModelError::config_key(
                    &path,
                    key,
                    format!(
                        "`{name}` is not supported; expected CLIPImageProcessor, ViTImageProcessor or BitImageProcessor"
                    ),
                )
            })?,
            None => ProcessorClass::for_architecture(super::architecture(folder)?),
        };
        Self::from_raw(raw, class, path)
    }

    fn from_raw(raw: RawConfig, class: ProcessorClass, path: PathBuf) -> Result<Self> {
        let err = |key: &str, message: &str| ModelError::config_key(&path, key, message);
        let square = class == ProcessorClass::Vit; // transformers' `default_to_square`
        let resize = if raw.do_resize.unwrap_or(true) {
            let size = match raw.size {
                None if square => ResizeTo::Exact(224, 224),
                None => ResizeTo::ShortestEdge(224),
                Some(SizeValue::Int(s)) if square => ResizeTo::Exact(s, s),
                Some(SizeValue::Int(s)) => ResizeTo::ShortestEdge(s),
                Some(value) => resize_size(value).ok_or_else(|| {
                    err(
                        "size",
                        "expected an integer, [height, width], {\"shortest_edge\": s} or {\"height\": h, \"width\": w}",
                    )
                })?,
            };
            if matches!(size, ResizeTo::ShortestEdge(0) | ResizeTo::Exact(0, _) | ResizeTo::Exact(_, 0)) {
                return Err(err("size", "sizes must be positive"));
            }
            let code = raw.resample.unwrap_or(if square { 2 } else { 3 });
            let filter = Filter::from_pil(code)
                .ok_or_else(|| err("resample", "only 2 (bilinear) and 3 (bicubic) are supported"))?;
            Some((size, filter))
        } else {
            None
        };
        let crop = if raw.do_center_crop.unwrap_or(!square) {
            let crop = match raw.crop_size {
                None => (224, 224),
                Some(value) => crop_size(value).ok_or_else(|| {
                    err("crop_size", "expected an integer, [height, width] or {\"height\": h, \"width\": w}")
                })?,
            };
            if crop.0 == 0 || crop.1 == 0 {
                return Err(err("crop_size", "sizes must be positive"));
            }
            Some(crop)
        } else {
            None
        };
        let rescale = raw.do_rescale.unwrap_or(true).then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0));
        let (default_mean, default_std) =
            if square { (STANDARD, STANDARD) } else { (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) };
        let normalize = if raw.do_normalize.unwrap_or(true) {
            let mean =
                per_channel(raw.image_mean, default_mean).ok_or_else(|| err("image_mean", "expected 1 or 3 values"))?;
            let std =
                per_channel(raw.image_std, default_std).ok_or_else(|| err("image_std", "expected 1 or 3 values"))?;
            if std.contains(&0.0) {
                return Err(err("image_std", "must not be zero"));
            }
            Some((mean, std))
        } else {
            None
        };
        Ok(Self { class, resize, crop, rescale, normalize, path })
    }

    /// The `(height, width)` of every output, when it does not depend on the image.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(crop), _) => Some(crop),
            (None, Some((ResizeTo::Exact(h, w), _))) => Some((h, w)),
            _ => None,
        }
    }

    /// Checks that every output is `(height, width)`, the input size of the model whose config
    /// is `config`.
    pub fn expect_size(&self, (height, width): (usize, usize), config: &Path) -> Result<()> {
        let makes = match self.output_size() {
            Some(size) if size == (height, width) => return Ok(()),
            Some((h, w)) => format!("makes {h}x{w} (height x width) images"),
            None => "makes images whose size depends on the input (no crop_size)".into(),
        };
        Err(ModelError::config_key(
            &self.path,
            "size",
            format!("{makes}, but `{}` wants {height}x{width}", config.display()),
        ))
    }

    /// Resizes and crops an RGB image (the 8-bit steps).
    pub fn resize_and_crop(&self, rgb: &RgbImage) -> RgbImage {
        let resized = match self.resize {
            Some((to, filter)) => {
                let (h, w) = to.output(rgb.height, rgb.width);
                resize(rgb, w, h, filter)
            }
            None => RgbImage { width: rgb.width, height: rgb.height, pixels: rgb.pixels.clone() },
        };
        match self.crop {
            Some((h, w)) => center_crop(&resized, h, w),
            None => resized,
        }
    }

    /// Rescales and normalises 8-bit RGB into channel-first values, as transformers does:
    /// `f32(f64(v) · factor)`, then `(x − mean) / std` in f32.
    pub fn to_chw(&self, rgb: &RgbImage) -> Vec<f32> {
        let plane = rgb.width * rgb.height;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in rgb.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let v = match self.rescale {
                    Some(factor) => (f64::from(px[c]) * factor) as f32,
                    None => f32::from(px[c]),
                };
                out[c * plane + i] = match self.normalize {
                    Some((mean, std)) => (v - mean[c]) / std[c],
                    None => v,
                };
            }
        }
        out
    }

    /// The pixel values of the image file at `path`: [3, height, width] f32 on the CPU.
    pub fn pixels(&self, path: &Path) -> Result<Tensor> {
        let rgb = self.resize_and_crop(&load_rgb(path)?);
        let (h, w) = (rgb.height, rgb.width);
        Ok(Tensor::from_vec(self.to_chw(&rgb), (3, h, w), &Device::Cpu)?)
    }

    /// The pixel values of several image files, decoded in parallel, as one batch
    /// [n, 3, height, width] on `device`; every output must have the same size (always the
    /// case with a crop or an exact resize).
    pub fn batch(&self, paths: &[PathBuf], device: &Device) -> Result<Tensor> {
        let images: Vec<RgbImage> =
            paths.par_iter().map(|p| Ok(self.resize_and_crop(&load_rgb(p)?))).collect::<Result<_>>()?;
        let Some(first) = images.first() else {
            return Ok(Tensor::zeros((0, 3, 0, 0), candle_core::DType::F32, device)?);
        };
        let (h, w) = (first.height, first.width);
        let mut data = Vec::with_capacity(images.len() * 3 * h * w);
        for (img, path) in images.iter().zip(paths) {
            if (img.height, img.width) != (h, w) {
                return Err(ModelError::Image {
                    path: path.clone(),
                    message: format!(
                        "preprocessed to {}x{}, unlike {}x{} for `{}`; batch images of one size (set a crop_size in `{}`)",
                        img.width,
                        img.height,
                        w,
                        h,
                        paths[0].display(),
                        self.path.display()
                    ),
                });
            }
            data.extend(self.to_chw(img));
        }
        Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?)
    }
}

fn resize_size(value: SizeValue) -> Option<ResizeTo> {
    match value {
        SizeValue::List(v) if v.len() == 2 => Some(ResizeTo::Exact(v[0], v[1])),
        // transformers' precedence: shortest_edge (with longest_edge: unsupported), then
        // height and width.
        SizeValue::Dict(SizeDict { longest_edge: Some(_), .. }) => None,
        SizeValue::Dict(SizeDict { shortest_edge: Some(s), .. }) => Some(ResizeTo::ShortestEdge(s)),
        SizeValue::Dict(SizeDict { height: Some(h), width: Some(w), .. }) => Some(ResizeTo::Exact(h, w)),
        _ => None,
    }
}

fn crop_size(value: SizeValue) -> Option<(usize, usize)> {
    match value {
        SizeValue::Int(s) => Some((s, s)),
        SizeValue::List(v) if v.len() == 2 => Some((v[0], v[1])),
        SizeValue::Dict(SizeDict { height: Some(h), width: Some(w), .. }) => Some((h, w)),
        _ => None,
    }
}

fn per_channel(value: Option<PerChannel>, default: [f64; 3]) -> Option<[f32; 3]> {
    let v = match value {
        None => default,
        Some(PerChannel::One(v)) => [v; 3],
        Some(PerChannel::Many(v)) => <[f64; 3]>::try_from(v).ok()?,
    };
    // transformers makes float32 arrays of them.
    Some(v.map(|x| x as f32))
}

/// transformers' `center_crop`: the window whose first row and column are at
/// `((H − h) div 2, (W − w) div 2)` (floor division); where an image smaller than the crop
/// leaves it, zeros (transformers pads centred, the odd row or column at the top or left,
/// which is the same window).
pub fn center_crop(img: &RgbImage, height: usize, width: usize) -> RgbImage {
    let start = |size: usize, crop: usize| (size as i64 - crop as i64).div_euclid(2);
    let (top, left) = (start(img.height, height), start(img.width, width));
    let mut pixels = vec![0u8; height * width * 3];
    for y in 0..height {
        let sy = top + y as i64;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..width {
            let sx = left + x as i64;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let (s, d) = ((sy as usize * img.width + sx as usize) * 3, (y * width + x) * 3);
            pixels[d..d + 3].copy_from_slice(&img.pixels[s..s + 3]);
        }
    }
    RgbImage { width, height, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Preprocessor> {
        let raw: RawConfig = serde_json::from_str(json).unwrap();
        let name = raw.image_processor_type.clone().or(raw.feature_extractor_type.clone()).unwrap();
        let class = ProcessorClass::from_name(&name).unwrap();
        Preprocessor::from_raw(raw, class, PathBuf::from("preprocessor_config.json"))
    }

    #[test]
    fn legacy_vit_size_is_square_without_crop() {
        // facebook/dino-vits16's file (size 224 there).
        let p = parse(
            r#"{"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 2,
            "do_normalize": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]}"#,
        )
        .unwrap();
        assert_eq!(p.class, ProcessorClass::Vit);
        assert_eq!(p.resize, Some((ResizeTo::Exact(224, 224), Filter::Bilinear)));
        assert_eq!((p.crop, p.rescale), (None, Some(1.0 / 255.0)));
        assert_eq!(p.normalize, Some(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])));
        assert_eq!(p.output_size(), Some((224, 224)));
        // Class defaults: bilinear 224x224, mean and std 0.5.
        let p = parse(r#"{"image_processor_type": "ViTImageProcessorFast"}"#).unwrap();
        assert_eq!(p.resize, Some((ResizeTo::Exact(224, 224), Filter::Bilinear)));
        assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])));
    }

    #[test]
    fn clip_and_bit_sizes_are_shortest_edges_with_a_square_crop() {
        let p = parse(r#"{"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224}"#).unwrap();
        assert_eq!(p.resize, Some((ResizeTo::ShortestEdge(224), Filter::Bicubic)));
        assert_eq!(p.crop, Some((224, 224)));
        let clip_mean = OPENAI_CLIP_MEAN.map(|v| v as f32);
        assert_eq!(p.normalize.map(|n| n.0), Some(clip_mean));
        let p = parse(r#"{"image_processor_type": "BitImageProcessor"}"#).unwrap();
        assert_eq!((p.resize, p.crop), (Some((ResizeTo::ShortestEdge(224), Filter::Bicubic)), Some((224, 224))));
        let p = parse(
            r#"{"image_processor_type": "CLIPImageProcessor", "size": {"height": 30, "width": 40},
            "do_center_crop": false, "do_normalize": false, "rescale_factor": 0.5}"#,
        )
        .unwrap();
        assert_eq!(
            (p.resize, p.crop, p.rescale, p.normalize),
            (Some((ResizeTo::Exact(30, 40), Filter::Bicubic)), None, Some(0.5), None)
        );
    }

    #[test]
    fn unsupported_settings_name_their_key() {
        for (json, key) in [
            (r#"{"image_processor_type": "CLIPImageProcessor", "resample": 1}"#, "resample"),
            (
                r#"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 800, "longest_edge": 1333}}"#,
                "size",
            ),
            (r#"{"image_processor_type": "CLIPImageProcessor", "crop_size": {"shortest_edge": 3}}"#, "crop_size"),
            (r#"{"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5]}"#, "image_mean"),
            (r#"{"image_processor_type": "CLIPImageProcessor", "image_std": 0}"#, "image_std"),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains("preprocessor_config.json"), "{json}: {err}");
        }
        assert_eq!(ProcessorClass::from_name("SiglipImageProcessor"), None);
    }

    #[test]
    fn shortest_edge_truncates_the_long_side() {
        // (width, height) -> (width, height) of the eval fixtures (transformers 5.24).
        for ((w, h), s, want) in [((40, 56), 32, (32, 44)), ((29, 41), 32, (32, 45)), ((64, 37), 36, (62, 36))] {
            let (oh, ow) = ResizeTo::ShortestEdge(s).output(h, w);
            assert_eq!((ow, oh), want);
        }
    }

    #[test]
    fn center_crop_pads_small_images_like_transformers() {
        let img = RgbImage { width: 5, height: 2, pixels: (1..=30).collect() };
        // transformers.image_transforms.center_crop of the same array (HWC), 5.24.0.
        let tall = center_crop(&img, 5, 2);
        #[rustfmt::skip]
        assert_eq!(tall.pixels, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 7, 8, 9, 19, 20, 21, 22, 23, 24,
            0, 0, 0, 0, 0, 0]);
        let wide = center_crop(&img, 3, 4);
        #[rustfmt::skip]
        assert_eq!(wide.pixels, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]);
        assert_eq!((wide.width, wide.height), (4, 3));
    }
}
