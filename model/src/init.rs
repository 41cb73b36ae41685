//! A freshly initialised model (normal(0, 0.02) weights, unit norms), for training from scratch
//! and for tests.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{EpasMeta, LlamaConfig, ModelInfo};
use crate::error::Result;
use crate::host_weights::{DecoderLayer, HostWeights};
use crate::linear::{Embedding, Linear};
use crate::model::EpasLlama;

fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    // Box-Muller: two uniforms give one standard normal sample.
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

/// A model of shape `config` with weights drawn from `seed`.
pub fn random_model(config: LlamaConfig, epas: Option<EpasMeta>, seed: u64) -> Result<EpasLlama> {
    config.validate()?;
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut matrix = |rows: usize, cols: usize| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            normal(&mut rng, rows * cols, 0.02),
            (rows, cols),
            &dev,
        )?)
    };
    let (d, kv, ffn, v) = (
        config.hidden_size,
        config.kv_dim(),
        config.intermediate_size,
        config.vocab_size,
    );
    let embed = Embedding::Dense(matrix(v, d)?);
    let mut layers = Vec::with_capacity(config.num_layers);
    for _ in 0..config.num_layers {
        layers.push(DecoderLayer {
            attn_norm: Tensor::ones(d, candle_core::DType::F32, &dev)?,
            wq: Linear::dense(matrix(d, d)?)?,
            wk: Linear::dense(matrix(kv, d)?)?,
            wv: Linear::dense(matrix(kv, d)?)?,
            wo: Linear::dense(matrix(d, d)?)?,
            mlp_norm: Tensor::ones(d, candle_core::DType::F32, &dev)?,
            gate: Linear::dense(matrix(ffn, d)?)?,
            up: Linear::dense(matrix(ffn, d)?)?,
            down: Linear::dense(matrix(d, ffn)?)?,
        });
    }
    let norm = Tensor::ones(d, candle_core::DType::F32, &dev)?;
    let lm_head = if config.tie_word_embeddings {
        embed.as_linear()?
    } else {
        Linear::dense(matrix(v, d)?)?
    };
    let info = ModelInfo {
        name: "random".into(),
        config,
        epas,
        weight_format: "f32".into(),
    };
    EpasLlama::new(
        info,
        HostWeights {
            embed,
            layers,
            norm,
            lm_head,
        },
    )
}
