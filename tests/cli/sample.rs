use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::Env;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A PNG's pixels, text chunks (keyword, text) and size.
type Png = (Vec<u8>, Vec<(String, String)>, (u32, u32));

fn read_png(path: &Path) -> Png {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let text = reader.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (buf, text, (info.width, info.height))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn builtin_model_writes_seeded_pngs_with_their_settings() {
    let env = Env::new();
    let out = env.root().join("out");
    let o = out.to_str().unwrap();
    let args = ["sample", "--prompt", "a photo of sks dog", "--n", "2", "--steps", "5", "--seed", "7", "--out", o];
    let listed = env.ok(&args);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let (pixels, text, size) = read_png(&out.join("sample-00-seed7.png"));
    assert_eq!(size, (32, 32), "built-in default size");
    let get = |k: &str| text.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("prompt"), "a photo of sks dog");
    assert_eq!(get("seed"), "7");
    let settings: serde_json::Value = serde_json::from_str(&get("dbsweep")).unwrap();
    assert_eq!((settings["steps"].as_u64(), settings["guidance"].as_f64()), (Some(5), Some(7.5)));
    assert_eq!(read_png(&out.join("sample-01-seed8.png")).1.iter().find(|(k, _)| k == "seed").unwrap().1, "8");
    // Image i depends on seed + i only: asking for image 8 alone reproduces it.
    let alone = env.root().join("alone");
    env.ok(&[
        "sample",
        "--prompt",
        "a photo of sks dog",
        "--steps",
        "5",
        "--seed",
        "8",
        "--out",
        alone.to_str().unwrap(),
    ]);
    assert_eq!(read_png(&alone.join("sample-00-seed8.png")).0, read_png(&out.join("sample-01-seed8.png")).0);
    assert_ne!(pixels, read_png(&out.join("sample-01-seed8.png")).0);
}

#[test]
fn a_diffusers_folder_with_given_latents_reproduces_the_diffusers_sample() {
    let env = Env::new();
    let reference = candle_core::safetensors::load(fixture("sd1-reference.safetensors"), &Device::Cpu).unwrap();
    let latents = env.root().join("latents.safetensors");
    candle_core::safetensors::save(&[("latents", reference["ddim.latents"].clone())].into_iter().collect(), &latents)
        .unwrap();
    let out = env.root().join("out");
    let model = fixture("sd1");
    env.ok(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photo of sks dog",
        "--steps",
        "4",
        "--guidance",
        "7.5",
        "--latents",
        latents.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (pixels, _, size) = read_png(&out.join("sample-00-seed0.png"));
    assert_eq!(size, (16, 16));
    let expected: Vec<u8> = (reference["ddim.image"].clone() * 255.0)
        .unwrap()
        .round()
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = pixels.iter().zip(&expected).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(worst <= 1, "pixels differ from diffusers by up to {worst}");
}

#[test]
fn missing_and_misshaped_tensors_are_all_named() {
    let env = Env::new();
    let model = env.root().join("broken");
    copy_dir(&fixture("sd1"), &model);
    let file = model.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    tensors.remove("conv_in.bias").unwrap();
    tensors.remove("mid_block.attentions.0.proj_in.weight").unwrap();
    tensors.insert("conv_out.weight".into(), Tensor::zeros((4, 32, 1, 1), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let out = env.root().join("never");
    let run = env.run(&["sample", "--model", model.to_str().unwrap(), "--prompt", "x", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!out.exists(), "nothing is written for a model that does not load");
    for needle in [
        "diffusion_pytorch_model.safetensors` does not match its config",
        "tensor `conv_in.bias` [32]: missing",
        "tensor `mid_block.attentions.0.proj_in.weight` [64, 64, 1, 1]: missing",
        "tensor `conv_out.weight`: expected shape [4, 32, 3, 3], found [4, 32, 1, 1]",
    ] {
        assert!(run.stderr.contains(needle), "missing {needle:?} in:\n{}", run.stderr);
    }
}

#[test]
fn bad_model_folders_and_options_are_bad_input() {
    let env = Env::new();
    let run = env.run(&["sample", "--model", "/nonexistent/model", "--prompt", "x", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("/nonexistent/model` is not a diffusers model folder"), "{}", run.stderr);
    let run = env.run(&["sample", "--model", "builtin:huge", "--prompt", "x", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("builtin:tiny"), "{}", run.stderr);

    let model = env.root().join("m");
    copy_dir(&fixture("sd1"), &model);
    std::fs::write(model.join("unet/config.json"), "{\n  \"block_out_channels\": [32, 64,\n}").unwrap();
    let run = env.run(&["sample", "--model", model.to_str().unwrap(), "--prompt", "x", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unet/config.json:3:1"), "{}", run.stderr);
    std::fs::write(model.join("unet/config.json"), r#"{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "class_embed_type": "timestep"}"#).unwrap();
    let run = env.run(&["sample", "--model", model.to_str().unwrap(), "--prompt", "x", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("key `class_embed_type`: dbsweep supports only null here"), "{}", run.stderr);

    let run = env.run(&["sample", "--prompt", "x", "--size", "20", "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--size 20: this model needs a positive multiple of 16 pixels"), "{}", run.stderr);
    let latents = env.root().join("l.safetensors");
    let bad = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("latents", bad)].into_iter().collect(), &latents).unwrap();
    let run = env.run(&["sample", "--prompt", "x", "--latents", latents.to_str().unwrap(), "--out", "o"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("expected a [n, 4, h, h] tensor, found [1, 3, 4, 4]"), "{}", run.stderr);
}
