//! Broken files, shapes and requests give typed errors, never panics.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::*;
use epas_model::random_model;
use epas_model::save_safetensors;
use epas_model::{
    load_model, KvCache, LlamaConfig, Logits, ModelError, SequenceCache, SequenceStep, SharingPlan,
};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
    }
}

/// A tiny random model saved as an HF folder with SmolLM2's tokenizer.
fn saved_tiny(dir: &Path) -> std::path::PathBuf {
    let model = random_model(tiny_config(), None, 3).unwrap();
    let (_, tok) = smollm2();
    let out = dir.join("tiny");
    save_safetensors(&model, tok, &out).unwrap();
    out
}

fn load_err(path: &Path) -> ModelError {
    match load_model(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn safetensors_round_trip_gives_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(tiny_config(), None, 3).unwrap();
    let path = saved_tiny(dir.path());
    let (loaded, tok) = load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(tok.encode("Hello world").unwrap(), vec![19556, 905]);
    let ids = [1u32, 500, 49000, 7, 7, 7];
    let a = model
        .forward_sequence(&ids, SharingPlan::new(4, 0.5).unwrap())
        .unwrap();
    let b = loaded
        .forward_sequence(&ids, SharingPlan::new(4, 0.5).unwrap())
        .unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.flatten_all().unwrap().to_vec1().unwrap(),
        b.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // No temporary folder is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["tiny"]);
}

#[test]
fn broken_safetensors_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_tiny(dir.path());
    let config_path = path.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();

    std::fs::write(&config_path, "{ not json").unwrap();
    assert!(matches!(load_err(&path), ModelError::Format { .. }));

    std::fs::write(&config_path, config.replace("\"llama\"", "\"gpt2\"")).unwrap();
    assert!(matches!(load_err(&path), ModelError::UnknownArchitecture(a) if a == "gpt2"));

    std::fs::write(
        &config_path,
        config.replace("\"intermediate_size\": 48", "\"intermediate_size\": 64"),
    )
    .unwrap();
    assert!(
        matches!(load_err(&path), ModelError::ShapeMismatch { .. }),
        "{}",
        load_err(&path)
    );

    std::fs::write(
        &config_path,
        config.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 3"),
    )
    .unwrap();
    assert!(matches!(load_err(&path), ModelError::Config(_)));

    std::fs::remove_file(&config_path).unwrap();
    assert!(matches!(load_err(&path), ModelError::Io { .. }));
    std::fs::write(&config_path, &config).unwrap();

    let weights = path.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_err(&path), ModelError::Format { .. }));
    std::fs::remove_file(&weights).unwrap();
    assert!(matches!(load_err(&path), ModelError::Missing { .. }));
    std::fs::write(&weights, &bytes).unwrap();

    std::fs::remove_file(path.join("tokenizer.json")).unwrap();
    assert!(matches!(load_err(&path), ModelError::Missing { .. }));
}

/// HF checkpoints are usually bf16 and sharded: such a folder loads (each tensor read from its
/// shard through the memory map) and scores like the f32 folder it came from.
#[test]
fn a_sharded_bf16_folder_loads_like_its_f32_source() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(tiny_config(), None, 3).unwrap();
    let path = saved_tiny(dir.path());
    let weights = path.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for (i, shard) in names.chunks(names.len() / 2 + 1).enumerate() {
        let part: std::collections::HashMap<String, Tensor> = shard
            .iter()
            .map(|&n| {
                (
                    n.clone(),
                    tensors[n].to_dtype(candle_core::DType::BF16).unwrap(),
                )
            })
            .collect();
        let file = path.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(&part, file).unwrap();
    }
    std::fs::remove_file(&weights).unwrap();

    let (loaded, _) = load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.info.weight_format, "f32");
    let ids = [1u32, 500, 49000, 7, 7, 7];
    let plan = SharingPlan::new(4, 0.5).unwrap();
    let flat = |m: &epas_model::EpasLlama| -> Vec<f32> {
        let logits = m.forward_sequence(&ids, plan).unwrap();
        logits.flatten_all().unwrap().to_vec1().unwrap()
    };
    let (a, b) = (flat(&model), flat(&loaded));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&a, &b);
    // bf16 keeps 8 bits of mantissa: logits move by a few tenths of a percent, not more.
    assert!(diff > 0.0 && diff < 0.02 * scale, "{diff} of {scale}");
}

#[test]
fn broken_gguf_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_err(&dir.path().join("absent.gguf")),
        ModelError::Io { .. }
    ));

    let text = dir.path().join("text.gguf");
    std::fs::write(&text, "this is not a model").unwrap();
    assert!(matches!(load_err(&text), ModelError::Format { .. }));

    let mut garbage = b"GGUF\x03\x00\x00\x00".to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, garbage).unwrap();
    assert!(matches!(load_err(&corrupt), ModelError::Format { .. }));

    let real = std::fs::read(smollm2_path()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &real[..real.len() / 3]).unwrap();
    let err = load_err(&truncated);
    assert!(matches!(err, ModelError::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated.gguf"));
}

#[test]
fn gguf_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    let t = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = Value::String("gpt2".into());
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &t)],
    )
    .unwrap();
    drop(f);
    assert!(matches!(load_err(&path), ModelError::UnknownArchitecture(a) if a == "gpt2"));
}

#[test]
fn bad_ratios_prompts_and_tokens_are_typed_errors() {
    let (model, tok) = smollm2();
    let info = &model.info;
    assert!(info.epas.is_none());
    assert!(matches!(
        info.plan(f64::NAN, true),
        Err(ModelError::RatioNotFinite(_))
    ));
    assert!(matches!(
        info.plan(-0.25, true),
        Err(ModelError::RatioNegative(_))
    ));
    assert!(matches!(
        info.plan(1.0, true),
        Err(ModelError::RatioAboveMax { .. })
    ));
    // An ordinary checkpoint serves only ratio 0 unless forced sharing is allowed.
    let err = info.plan(0.5, false).unwrap_err();
    assert!(
        err.to_string().contains("--allow-untrained-sharing"),
        "{err}"
    );
    assert_eq!(info.plan(0.5, true).unwrap().sharing_layers(), 15);
    assert!(info.plan(0.0, false).is_ok());

    assert!(tok.encode("").unwrap().is_empty());
    let plan = SharingPlan::none(30);
    assert!(matches!(
        model.forward_sequence(&[], plan),
        Err(ModelError::EmptyPrompt)
    ));
    let params = epas_model::SamplingParams::default();
    let r = epas_model::generate(model, &[], plan, 4, params, &[], |_| true);
    assert!(matches!(r, Err(ModelError::EmptyPrompt)));
    assert!(matches!(
        model.forward_sequence(&[1, 49152], plan),
        Err(ModelError::TokenOutOfRange { id: 49152, .. })
    ));
}

#[test]
fn prompts_longer_than_the_context_are_refused_and_leave_the_cache_alone() {
    let model = random_model(tiny_config(), None, 5).unwrap();
    let plan = SharingPlan::new(4, 0.5).unwrap();
    let long: Vec<u32> = (0..65).collect();
    assert!(matches!(
        model.forward_sequence(&long, plan),
        Err(ModelError::ContextExceeded {
            tokens: 65,
            context: 64
        })
    ));
    let mut cache = SequenceCache::new(model.config(), plan);
    let mut steps = [SequenceStep {
        tokens: &long[..60],
        cache: &mut cache,
        logits: Logits::Skip,
    }];
    model.forward(&mut steps).unwrap();
    let mut steps = [SequenceStep {
        tokens: &long[..5],
        cache: &mut cache,
        logits: Logits::Last,
    }];
    assert!(matches!(
        model.forward(&mut steps),
        Err(ModelError::ContextExceeded { tokens: 65, .. })
    ));
    assert_eq!(cache.len(), 60);
    let mut steps = [SequenceStep {
        tokens: &long[..4],
        cache: &mut cache,
        logits: Logits::Last,
    }];
    assert!(model.forward(&mut steps).is_ok());
    assert_eq!(cache.len(), 64);
}
