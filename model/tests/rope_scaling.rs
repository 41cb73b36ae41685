//! RoPE scaling in the loaders: a Llama-3.x checkpoint (GGUF `rope_freqs` tensor, HF
//! `rope_scaling` object) loads with its scaled frequencies, and a type that is not implemented
//! is refused by name.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use common::scaled::*;
use common::*;
use epas_model::GgufQuant;
use epas_model::RopeScaling;
use epas_model::{export_gguf, save_safetensors};
use epas_model::{load_model, DeviceWeights, EpasLlama, ModelError};

/// llama.cpp's `rope_freqs` for the Llama-3 parameters above (one divisor per frequency).
fn llama3_rope_freqs(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
            let (low_wavelen, high_wavelen) = (
                ORIGINAL_CONTEXT / LOW_FREQ_FACTOR,
                ORIGINAL_CONTEXT / HIGH_FREQ_FACTOR,
            );
            let factor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                FACTOR
            } else {
                let smooth = (ORIGINAL_CONTEXT / wavelen - LOW_FREQ_FACTOR)
                    / (HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR);
                1.0 / ((1.0 - smooth) / FACTOR + smooth)
            };
            factor as f32
        })
        .collect()
}

/// `src` rewritten with `metadata` added (replacing keys of the same name) and `tensors` added.
fn gguf_with(src: &Path, dst: &Path, metadata: &[(&str, Value)], tensors: &[(&str, Vec<f32>)]) {
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut all: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    for (name, values) in tensors {
        let t = Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap();
        all.push((
            name.to_string(),
            QTensor::quantize(&t, GgmlDType::F32).unwrap(),
        ));
    }
    let mut md: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !metadata.iter().any(|(m, _)| m == k))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    md.extend(metadata.iter().map(|(k, v)| (*k, v)));
    let refs: Vec<(&str, &QTensor)> = all.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &md, &refs).unwrap();
}

/// A sharp unscaled model of `seed`, and its GGUF export (`dir/name.gguf`) with `metadata` and
/// `tensors` added.
fn gguf_variant(
    dir: &Path,
    seed: u64,
    name: &str,
    metadata: &[(&str, Value)],
    tensors: &[(&str, Vec<f32>)],
) -> (EpasLlama, PathBuf) {
    let model = sharp_model(seed, RopeScaling::None);
    let (_, tok) = smollm2();
    let plain = dir.join(format!("{name}-plain.gguf"));
    export_gguf(&model, tok, GgufQuant::F32, &plain).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    gguf_with(&plain, &path, metadata, tensors);
    (model, path)
}

fn load_err(path: &Path) -> ModelError {
    match load_model(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

fn assert_refuses_yarn(path: &Path) {
    let err = load_err(path);
    assert!(
        matches!(&err, ModelError::UnsupportedRopeScaling(kind) if kind == "yarn"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("RoPE scaling type `yarn` is not supported"),
        "{message}"
    );
}

/// `config.json` of a saved HF folder with `rope_scaling` set to `value`.
fn hf_folder_with(model: &EpasLlama, dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
    let (_, tok) = smollm2();
    let out = dir.join(name);
    save_safetensors(model, tok, &out).unwrap();
    let path = out.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["rope_scaling"] = value;
    std::fs::write(&path, config.to_string()).unwrap();
    out
}

/// The logits of `loaded` equal those of `direct` (the same weights, built with the scaling),
/// and differ from those of `unscaled`.
fn assert_scaled_like(loaded: &EpasLlama, direct: &EpasLlama, unscaled: &EpasLlama) {
    let ours = logits(loaded);
    let same = max_abs_diff(&ours, &logits(direct));
    assert!(
        same < 1e-5,
        "differs from the directly scaled model by {same}"
    );
    let moved = max_abs_diff(&ours, &logits(unscaled));
    assert!(
        moved > 1e-3,
        "the scaling changed the logits by only {moved}"
    );
}

/// `path` loads with `scaling` and scores like the model of `seed` built with it.
fn assert_loads_scaled(path: &Path, seed: u64, scaling: RopeScaling, unscaled: &EpasLlama) {
    let (loaded, _) = load_model(path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config().rope_scaling, scaling);
    assert_scaled_like(&loaded, &sharp_model(seed, scaling), unscaled);
}

fn hf_llama3() -> serde_json::Value {
    serde_json::json!({
        "rope_type": "llama3",
        "factor": FACTOR,
        "low_freq_factor": LOW_FREQ_FACTOR,
        "high_freq_factor": HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": ORIGINAL_CONTEXT as usize,
    })
}

#[test]
fn a_gguf_with_rope_freqs_loads_with_scaled_frequencies() {
    let dir = tempfile::tempdir().unwrap();
    let freqs = llama3_rope_freqs(16, 10000.0);
    let (model, scaled) = gguf_variant(
        dir.path(),
        11,
        "llama3",
        &[],
        &[("rope_freqs.weight", freqs)],
    );
    // The table is llama.cpp's rendering of these Llama-3 parameters: they come back.
    assert_loads_scaled(&scaled, 11, llama3(), &model);
}

#[test]
fn gguf_rope_scaling_types_not_implemented_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("llama.rope.scaling.type", Value::String("yarn".into())),
        ("llama.rope.scaling.factor", Value::F32(4.0)),
    ];
    let (_, yarn) = gguf_variant(dir.path(), 12, "yarn", &keys, &[]);
    assert_refuses_yarn(&yarn);
}

#[test]
fn a_rope_freqs_tensor_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = [("rope_freqs.weight", vec![1.0; 5])];
    let (_, bad) = gguf_variant(dir.path(), 13, "bad", &[], &short);
    let err = load_err(&bad);
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, expected, actual }
            if name == "rope_freqs.weight" && expected == &[8] && actual == &[5]),
        "{err}"
    );
}

#[test]
fn an_hf_folder_with_llama3_rope_scaling_loads_with_scaled_frequencies() {
    let dir = tempfile::tempdir().unwrap();
    let model = sharp_model(14, RopeScaling::None);
    let scaled = hf_folder_with(&model, dir.path(), "llama3", hf_llama3());
    assert_loads_scaled(&scaled, 14, llama3(), &model);
}

#[test]
fn hf_rope_scaling_types_not_implemented_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = sharp_model(15, RopeScaling::None);
    let yarn = serde_json::json!({"rope_type": "yarn", "factor": 4.0,
        "original_max_position_embeddings": 64});
    let folder = hf_folder_with(&model, dir.path(), "yarn", yarn);
    assert_refuses_yarn(&folder);
}

#[test]
fn gguf_linear_scaling_divides_positions_and_type_none_ignores_the_factor() {
    let dir = tempfile::tempdir().unwrap();
    let factor = ("llama.rope.scaling.factor", Value::F32(4.0));
    let kind = |k: &str| ("llama.rope.scaling.type", Value::String(k.into()));
    let keys = [kind("linear"), factor.clone()];
    let (model, linear) = gguf_variant(dir.path(), 16, "linear", &keys, &[]);
    assert_loads_scaled(&linear, 16, RopeScaling::Linear { factor: 4.0 }, &model);

    let (_, none) = gguf_variant(dir.path(), 16, "none", &[kind("none"), factor], &[]);
    let (loaded, _) = load_model(&none, &Device::Cpu).unwrap();
    assert_eq!(loaded.config().rope_scaling, RopeScaling::None);
}

#[test]
fn rope_freqs_with_linear_scaling_too_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, both) = gguf_variant(
        dir.path(),
        17,
        "both",
        &[("llama.rope.scaling.factor", Value::F32(2.0))],
        &[("rope_freqs.weight", llama3_rope_freqs(16, 10000.0))],
    );
    let err = load_err(&both).to_string();
    assert!(
        err.contains("rope_freqs.weight together with linear"),
        "{err}"
    );
}

/// `epas export` and the HF writer keep every scaling: the reloaded model has the same scaling
/// and the same logits, whichever format it went through (GGUF -> HF is the trainer's path).
#[test]
fn export_and_save_round_trips_keep_the_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = smollm2();
    for (i, scaling) in [llama3(), RopeScaling::Linear { factor: 2.5 }]
        .into_iter()
        .enumerate()
    {
        let model = sharp_model(20 + i as u64, scaling.clone());
        let as_gguf = |m: &EpasLlama, name: &str| {
            let path = dir.path().join(format!("{name}-{i}.gguf"));
            export_gguf(m, tok, GgufQuant::F32, &path).unwrap();
            load_model(&path, &Device::Cpu).unwrap().0
        };
        let as_hf = |m: &EpasLlama, name: &str| {
            let path = dir.path().join(format!("{name}-{i}"));
            save_safetensors(m, tok, &path).unwrap();
            load_model(&path, &Device::Cpu).unwrap().0
        };
        let (gguf, hf) = (as_gguf(&model, "gguf"), as_hf(&model, "hf"));
        let (gguf_hf, hf_gguf) = (as_hf(&gguf, "gguf-hf"), as_gguf(&hf, "hf-gguf"));
        let want = logits(&model);
        for (label, loaded) in [
            ("gguf", &gguf),
            ("hf", &hf),
            ("gguf -> hf", &gguf_hf),
            ("hf -> gguf", &hf_gguf),
        ] {
            assert_eq!(loaded.config().rope_scaling, scaling, "{label}");
            let d = max_abs_diff(&logits(loaded), &want);
            assert!(d < 1e-5, "{label} {scaling:?}: logits differ by {d}");
        }
    }
}

/// A `rope_freqs` table of no Llama-3 form survives `epas export`, and the HF writer (which has
/// no way to say it) refuses it by name.
#[test]
fn other_frequency_tables_round_trip_through_gguf_and_are_refused_by_the_hf_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = smollm2();
    let table = odd_table();
    let model = sharp_model(30, table.clone());
    let gguf = dir.path().join("table.gguf");
    export_gguf(&model, tok, GgufQuant::F32, &gguf).unwrap();
    let (loaded, _) = load_model(&gguf, &Device::Cpu).unwrap();
    assert_eq!(loaded.config().rope_scaling, table);
    assert_scaled_like(&loaded, &model, &sharp_model(30, RopeScaling::None));
    let err = save_safetensors(&loaded, tok, &dir.path().join("hf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be written to an HF config.json"),
        "{err}"
    );
    assert!(!dir.path().join("hf").exists());
}

#[test]
fn hf_linear_scaling_and_transformers_5_rope_parameters_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = sharp_model(50, RopeScaling::None);
    let linear = serde_json::json!({"type": "linear", "factor": 2.0});
    let folder = hf_folder_with(&model, dir.path(), "linear", linear);
    assert_loads_scaled(&folder, 50, RopeScaling::Linear { factor: 2.0 }, &model);

    // transformers 5 moves rope_theta into rope_parameters.
    let (_, tok) = smollm2();
    let v5 = dir.path().join("v5");
    save_safetensors(&model, tok, &v5).unwrap();
    let path = v5.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("rope_theta");
    let mut parameters = hf_llama3();
    parameters["rope_theta"] = serde_json::json!(10000.0);
    config["rope_parameters"] = parameters;
    std::fs::write(&path, config.to_string()).unwrap();
    assert_loads_scaled(&v5, 50, llama3(), &model);
}

/// The tensor forward (how the model runs on CUDA), here on the CPU, takes the scaled table too.
#[test]
fn the_device_forward_uses_the_scaled_frequencies() {
    let on_device = |m: EpasLlama| {
        m.on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
            .unwrap()
    };
    let host = sharp_model(60, llama3());
    let device = on_device(host.clone());
    let unscaled = on_device(sharp_model(60, RopeScaling::None));
    assert_scaled_like(&device, &host, &unscaled);
}
