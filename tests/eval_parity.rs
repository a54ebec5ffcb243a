//! Parity of the evaluation models with PyTorch + transformers 5 on the tiny fixtures made by
//! `tests/fixtures/make_eval_fixtures.py` (run by hand; CI only reads its committed outputs):
//! everything is computed from the image FILES, through our preprocessing.
//!
//! - RGB conversion and pixel values: bit for bit equal to transformers' PIL backend (the
//!   whole pipeline is integer until the rescale, and the rescale and normalisation are done in
//!   the same floating-point order, so nothing needs a tolerance).
//! - Embeddings (CLIP image and text, DINO and DINOv2 CLS): within 1e-4 relative (the largest
//!   absolute difference over the largest reference magnitude); the float sums run in another
//!   order than PyTorch's. Token ids: equal.
//! - Folders with a missing, truncated or incomplete weights file, or an unsupported
//!   `model_type`, are errors naming the file.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, IndexOp, Tensor};
use common::{max_abs, rel_err};
use dbsweep::model::ModelError;
use dbsweep::model::vision::{self, EmbeddingModel, Preprocessor, bicubic, decode};

const STEMS: [&str; 8] = ["real-0", "real-1", "real-2", "gen-0", "gen-1", "gen-2", "class-0", "class-1"];
const MODELS: [&str; 3] = ["clip", "vit", "dinov2"];
const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn image_path(stem: &str) -> PathBuf {
    dir().join("images").join(format!("{stem}.png"))
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = dir().join("eval-reference.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        Reference { tensors, metadata: meta.metadata().clone().unwrap_or_default() }
    })
}

fn get(name: &str) -> &'static Tensor {
    reference().tensors.get(name).unwrap_or_else(|| panic!("the reference lacks {name}"))
}

fn prompts() -> Vec<String> {
    serde_json::from_str(&reference().metadata["prompts"]).unwrap()
}

fn load(name: &str) -> EmbeddingModel {
    vision::load(&dir().join(name), &Device::Cpu).unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// The embeddings of every fixture image, from the files, one image per batch and all at once.
fn check_image_embeddings(model: &EmbeddingModel, key: &str) -> f32 {
    let files: Vec<PathBuf> = STEMS.iter().map(|s| image_path(s)).collect();
    let batched = model.embed_files(&files, 3).unwrap();
    let mut worst = 0f32;
    for (i, stem) in STEMS.iter().enumerate() {
        let pixels = model.preprocessor().pixels(&image_path(stem)).unwrap().unsqueeze(0).unwrap();
        let ours = model.image_embeds(&pixels).unwrap().squeeze(0).unwrap();
        let want = get(&format!("{key}.{stem}"));
        let e = rel_err(&ours, want);
        assert!(e < TOLERANCE, "{key}.{stem}: rel err {e}");
        let e_batched = rel_err(&batched.get(i).unwrap(), want);
        assert!(e_batched < TOLERANCE, "{key}.{stem} in a batch: rel err {e_batched}");
        worst = worst.max(e).max(e_batched);
    }
    eprintln!("{key}: max rel err {worst:.3e} over {} images", STEMS.len());
    worst
}

#[test]
fn rgb_conversion_matches_transformers() {
    for stem in STEMS {
        let rgb = decode::load_rgb(&image_path(stem)).unwrap();
        let want = get(&format!("image.rgb.{stem}"));
        assert_eq!(want.dims(), [rgb.height, rgb.width, 3], "{stem}");
        assert_eq!(rgb.pixels, want.flatten_all().unwrap().to_vec1::<u8>().unwrap(), "{stem}: RGB pixels");
    }
}

#[test]
fn pixel_values_equal_the_pil_backend_bit_for_bit() {
    for model in MODELS {
        let pre = Preprocessor::from_folder(&dir().join(model)).unwrap();
        for stem in STEMS {
            let ours = pre.pixels(&image_path(stem)).unwrap();
            let want = get(&format!("{model}.pixel_values.{stem}"));
            assert_eq!(ours.dims(), want.dims(), "{model} {stem}");
            let (a, b) = (
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let differing = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differing, 0, "{model} {stem}: {differing} of {} values differ", a.len());
        }
    }
}

#[test]
fn clip_image_and_text_embeddings_match() {
    let model = load("clip");
    let clip = model.as_clip().expect("a CLIP model");
    // The vision encoder alone, before post_layernorm and the projection.
    let pixels = model.preprocessor().pixels(&image_path("real-0")).unwrap().unsqueeze(0).unwrap();
    let hidden = clip.vision_last_hidden_state(&pixels).unwrap().squeeze(0).unwrap();
    let e = rel_err(&hidden, get("clip.vision_last_hidden_state.real-0"));
    eprintln!("clip.vision_last_hidden_state.real-0: rel err {e:.3e}");
    assert!(e < TOLERANCE, "vision last hidden state: rel err {e}");
    check_image_embeddings(&model, "clip.image_embeds");

    let prompts = prompts();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    assert_eq!(prompts.len(), 4);
    let ids = clip.input_ids(&prompts).unwrap();
    let text = clip.text_embeds(&prompts).unwrap();
    assert_eq!(text.dims(), [4, clip.dim()]);
    let mut worst = 0f32;
    for (i, row) in ids.iter().enumerate() {
        let want: Vec<i64> = get(&format!("clip.input_ids.{i}")).to_vec1::<i64>().unwrap();
        assert_eq!(row.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), want, "input ids of {:?}", prompts[i]);
        let e = rel_err(&text.get(i).unwrap(), get(&format!("clip.text_embeds.{i}")));
        assert!(e < TOLERANCE, "text embedding {i}: rel err {e}");
        worst = worst.max(e);
    }
    eprintln!("clip.text_embeds: max rel err {worst:.3e} over {} prompts", prompts.len());
}

#[test]
fn dino_vit_cls_embeddings_match() {
    let model = load("vit");
    assert_eq!(model.architecture(), vision::Architecture::Vit);
    let EmbeddingModel::Vit(vit) = &model else { unreachable!() };
    let pixels = model.preprocessor().pixels(&image_path("real-0")).unwrap().unsqueeze(0).unwrap();
    let e = rel_err(&vit.last_hidden_state(&pixels).unwrap().squeeze(0).unwrap(), get("vit.last_hidden_state.real-0"));
    eprintln!("vit.last_hidden_state.real-0: rel err {e:.3e}");
    assert!(e < TOLERANCE, "last hidden state: rel err {e}");
    check_image_embeddings(&model, "vit.cls");
}

#[test]
fn dinov2_cls_embeddings_match_with_interpolated_positions() {
    let model = load("dinov2");
    assert_eq!(model.architecture(), vision::Architecture::Dinov2);
    let EmbeddingModel::Dinov2(dinov2) = &model else { unreachable!() };
    let pixels = model.preprocessor().pixels(&image_path("real-0")).unwrap().unsqueeze(0).unwrap();
    let e = rel_err(
        &dinov2.last_hidden_state(&pixels).unwrap().squeeze(0).unwrap(),
        get("dinov2.last_hidden_state.real-0"),
    );
    eprintln!("dinov2.last_hidden_state.real-0: rel err {e:.3e}");
    assert!(e < TOLERANCE, "last hidden state: rel err {e}");
    check_image_embeddings(&model, "dinov2.cls");
}

/// The position embeddings of the 5×5 grid resized to 4×4 as transformers does.
#[test]
fn dinov2_position_interpolation_matches_pytorch() {
    let file = candle_core::safetensors::load(dir().join("dinov2/model.safetensors"), &Device::Cpu).unwrap();
    let positions = file["embeddings.position_embeddings"].squeeze(0).unwrap(); // [26, 32]
    let d = positions.dim(1).unwrap();
    let grid =
        positions.i(1..).unwrap().t().unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let resized = bicubic::interpolate(&grid, d, (5, 5), (4, 4));
    let resized = Tensor::from_vec(resized, (d, 16), &Device::Cpu).unwrap().t().unwrap();
    let ours = Tensor::cat(&[&positions.i(0..1).unwrap(), &resized], 0).unwrap();
    let want = get("dinov2.position_embeddings_interpolated");
    let diff = max_abs(&(&ours - want).unwrap());
    eprintln!("dinov2 interpolated positions: max abs diff {diff:.3e}");
    assert!(diff < 1e-6, "max abs diff {diff}");
}

/// The metrics of the reference, computed by dbsweep's metric code (`dbsweep::eval::metrics`,
/// what an evaluation runs) from our embeddings of the same image files.
#[test]
fn metrics_from_our_embeddings_match_the_reference() {
    use dbsweep::eval::metrics::{Embedding, diversity, mean_matched, mean_pairwise};
    let embed = |name: &str, stems: &[&str]| -> Vec<Embedding> {
        let files: Vec<PathBuf> = stems.iter().map(|s| image_path(s)).collect();
        load(name).embed_files(&files, 8).unwrap().to_vec2::<f32>().unwrap()
    };
    let (real, generated, class) = (&STEMS[0..3], &STEMS[3..6], &STEMS[6..8]);
    let prompts = prompts();
    let texts = load("clip").as_clip().unwrap().text_embeds(&[&prompts[0], &prompts[1], &prompts[2]]).unwrap();
    let texts = texts.to_vec2::<f32>().unwrap();
    for (name, ours) in [
        ("dino", mean_pairwise(&embed("vit", generated), &embed("vit", real))),
        ("dino_v2", mean_pairwise(&embed("dinov2", generated), &embed("dinov2", real))),
        ("clip_i", mean_pairwise(&embed("clip", generated), &embed("clip", real))),
        ("clip_t", mean_matched(&embed("clip", generated), &texts)),
        ("pres", mean_pairwise(&embed("vit", class), &embed("vit", real))),
        ("div", diversity(&[embed("vit", generated)])),
    ] {
        let ours = ours.unwrap();
        let want = get(&format!("metric.{name}")).to_scalar::<f64>().unwrap();
        eprintln!("metric {name}: ours {ours:.9} reference {want:.9} diff {:.2e}", (ours - want).abs());
        assert!((ours - want).abs() < 1e-4, "{name}: {ours} vs {want}");
    }
}

/// A copy of a fixture model folder to break.
fn broken_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir().join(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

fn load_err(folder: &Path) -> ModelError {
    match vision::load(folder, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", folder.display()),
        Err(e) => e,
    }
}

#[test]
fn broken_folders_are_errors_naming_the_file() {
    for name in MODELS {
        // No weights file.
        let tmp = broken_copy(name);
        let weights = tmp.path().join("model.safetensors");
        std::fs::remove_file(&weights).unwrap();
        let err = load_err(tmp.path());
        assert!(matches!(err, ModelError::Missing { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(&weights.display().to_string()), "{name}: {err}");
        assert!(err.is_bad_input());

        // A truncated weights file.
        let tmp = broken_copy(name);
        let weights = tmp.path().join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_err(tmp.path());
        assert!(matches!(err, ModelError::Unreadable { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(&weights.display().to_string()), "{name}: {err}");

        // A weights file without one tensor.
        let tmp = broken_copy(name);
        let weights = tmp.path().join("model.safetensors");
        let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
        let dropped = match name {
            "clip" => "vision_model.post_layernorm.weight",
            _ => "encoder.layer.1.attention.attention.value.bias",
        };
        tensors.remove(dropped).unwrap();
        candle_core::safetensors::save(&tensors, &weights).unwrap();
        let err = load_err(tmp.path());
        let text = err.to_string();
        assert!(matches!(err, ModelError::Weights { .. }), "{name}: {err:?}");
        assert!(text.contains(&weights.display().to_string()) && text.contains(dropped), "{name}: {text}");

        // An unsupported model type.
        let tmp = broken_copy(name);
        let config = tmp.path().join("config.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        json["model_type"] = "bert".into();
        json["architectures"] = serde_json::json!(["BertModel"]);
        std::fs::write(&config, json.to_string()).unwrap();
        let err = load_err(tmp.path());
        let text = err.to_string();
        assert!(matches!(err, ModelError::Config { .. }), "{name}: {err:?}");
        assert!(
            text.contains(&config.display().to_string()) && text.contains("model_type") && text.contains("bert"),
            "{text}"
        );
    }
    // No folder, no config.
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(load_err(&tmp.path().join("nowhere")), ModelError::Missing { .. }));
    let err = load_err(tmp.path());
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn registers_and_processor_mismatches_are_refused() {
    let tmp = broken_copy("dinov2");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"dinov2\"", "\"dinov2_with_registers\"");
    std::fs::write(&config, text).unwrap();
    let err = load_err(tmp.path()).to_string();
    assert!(err.contains("register"), "{err}");

    // A ViT whose processor makes 40x40 images for a 32x32 model.
    let tmp = broken_copy("vit");
    let pre = tmp.path().join("preprocessor_config.json");
    let text = std::fs::read_to_string(&pre).unwrap().replace("\"size\": 32", "\"size\": 40");
    std::fs::write(&pre, text).unwrap();
    let err = load_err(tmp.path()).to_string();
    assert!(err.contains("preprocessor_config.json") && err.contains("40x40"), "{err}");
}

/// transformers 5 names the ViT and DINOv2 modules differently from the checkpoints
/// (`conversion_mapping.py`; the metadata's `checkpoint_key_renames`); files with those names,
/// or saved under a head model's prefix (`vit.`, `dinov2.`), load the same weights.
#[test]
fn transformers5_and_prefixed_key_names_load_the_same_model() {
    let renames: serde_json::Value = serde_json::from_str(&reference().metadata["checkpoint_key_renames"]).unwrap();
    let pixels = Preprocessor::from_folder(&dir().join("vit")).unwrap().pixels(&image_path("real-1")).unwrap();
    let pixels = pixels.unsqueeze(0).unwrap();
    for (name, prefix) in [("vit", "vit"), ("dinov2", "dinov2")] {
        let original = load(name).image_embeds(&pixels).unwrap();
        let file = candle_core::safetensors::load(dir().join(name).join("model.safetensors"), &Device::Cpu).unwrap();
        let map = renames[name].as_object().unwrap();
        assert!(!map.is_empty(), "{name}: no renames in the metadata");
        for (what, rename) in [
            (
                "transformers 5 names",
                Box::new(|k: &str| map.get(k).and_then(|v| v.as_str()).unwrap_or(k).to_string())
                    as Box<dyn Fn(&str) -> String>,
            ),
            ("a head model's prefix", Box::new(|k: &str| format!("{prefix}.{k}"))),
        ] {
            let tmp = broken_copy(name);
            let renamed: HashMap<String, Tensor> = file.iter().map(|(k, v)| (rename(k), v.clone())).collect();
            assert!(renamed.keys().any(|k| !file.contains_key(k)), "{name}: nothing renamed");
            candle_core::safetensors::save(&renamed, tmp.path().join("model.safetensors")).unwrap();
            let ours = vision::load(tmp.path(), &Device::Cpu).unwrap().image_embeds(&pixels).unwrap();
            assert_eq!(max_abs(&(&ours - &original).unwrap()), 0.0, "{name} with {what}");
        }
    }
}
