//! Small random models with RoPE scaling, for the loader tests and the trainer's.

use epas_model::random_model;
use epas_model::{EpasLlama, LlamaConfig, SharingPlan};
use epas_model::{Llama3Scaling, RopeScaling};

/// head_dim 16 (8 frequencies) at theta 10000: wavelengths 6.3, 20, 63, 199, 628, 1987, 6283 and
/// 19869. Llama-3 scaling with an original context of 2048 keeps the first four, divides the
/// last two by the factor and smooths 628 and 1987.
pub fn config(rope_scaling: RopeScaling) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        rope_scaling,
    }
}

pub const FACTOR: f64 = 8.0;
pub const LOW_FREQ_FACTOR: f64 = 1.0;
pub const HIGH_FREQ_FACTOR: f64 = 4.0;
pub const ORIGINAL_CONTEXT: f64 = 2048.0;

/// Llama-3 scaling with the parameters above.
pub fn llama3() -> RopeScaling {
    RopeScaling::Llama3(Llama3Scaling {
        factor: FACTOR,
        low_freq_factor: LOW_FREQ_FACTOR,
        high_freq_factor: HIGH_FREQ_FACTOR,
        original_max_position_embeddings: ORIGINAL_CONTEXT as usize,
    })
}

/// Per-frequency divisors of no Llama-3 form (not monotonic).
pub fn odd_table() -> RopeScaling {
    RopeScaling::Frequencies {
        factors: vec![1.0, 1.5, 1.0, 3.0, 2.0, 1.0, 6.0, 1.25],
    }
}

/// A random model whose Q rows are scaled up, so attention is sharp and positions show in the
/// logits.
pub fn sharp_model(seed: u64, rope_scaling: RopeScaling) -> EpasLlama {
    let mut m = random_model(config(rope_scaling), None, seed).unwrap();
    for l in &mut m.host_weights_mut().unwrap().layers {
        l.wq = epas_model::Linear::dense((l.wq.dequantized().unwrap() * 30.0).unwrap()).unwrap();
    }
    m
}

pub fn logits(model: &EpasLlama) -> Vec<f32> {
    let ids: Vec<u32> = (0..200u32).map(|i| (i * 7919) % 49152).collect();
    let plan = SharingPlan::none(model.config().num_layers);
    let out = model.forward_sequence(&ids, plan).unwrap();
    out.flatten_all().unwrap().to_vec1().unwrap()
}
