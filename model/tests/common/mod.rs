//! Helpers shared by the model tests: the real SmolLM2 model and the llama.cpp vectors.
#![allow(dead_code)]

pub mod scaled;

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use epas_model::{EpasLlama, TextTokenizer};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn smollm2_path() -> PathBuf {
    let p = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

/// SmolLM2-135M-Instruct Q4_1, loaded once per test binary.
pub fn smollm2() -> &'static (EpasLlama, TextTokenizer) {
    static MODEL: OnceLock<(EpasLlama, TextTokenizer)> = OnceLock::new();
    MODEL.get_or_init(|| epas_model::load_model(&smollm2_path(), &Device::Cpu).unwrap())
}

pub struct Vector {
    pub text: String,
    pub ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
}

/// llama.cpp's token ids and greedy continuations for SmolLM2 (tests/data).
pub fn llamacpp_vectors() -> Vec<Vector> {
    let path = repo_root().join("tests/data/smollm2-llamacpp.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Vector {
            text: c["text"].as_str().unwrap().to_string(),
            ids: ids(&c["ids"]),
            greedy_ids: ids(&c["greedy_ids"]),
        })
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// A random 6-layer model (vocabulary 61, 128 positions) with sharper attention than random
/// initialisation gives (Q scaled by 20), so a wrong mask or position shows in the logits.
pub fn sharp_random_model(
    hidden_size: usize,
    num_heads: usize,
    num_kv_heads: usize,
    seed: u64,
) -> EpasLlama {
    let config = epas_model::LlamaConfig {
        vocab_size: 61,
        hidden_size,
        intermediate_size: 40,
        num_layers: 6,
        num_heads,
        num_kv_heads,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 128,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
    };
    let mut m = epas_model::random_model(config, None, seed).unwrap();
    for l in &mut m.host_weights_mut().unwrap().layers {
        l.wq = epas_model::Linear::dense((l.wq.dequantized().unwrap() * 20.0).unwrap()).unwrap();
    }
    m
}
