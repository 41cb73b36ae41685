//! The model's weights in host memory: what the loaders build, the host kernels run, the
//! exporters write and the trainer starts from. A device model is made from them
//! ([`crate::EpasLlama::on_device`]) and does not keep them.

use candle_core::Tensor;

use crate::error::Result;
use crate::linear::{tensor_bytes, Embedding, Linear};

/// Weights of one decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub mlp_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl DecoderLayer {
    /// The layer's seven projections.
    pub fn matrices(&self) -> [&Linear; 7] {
        [
            &self.wq, &self.wk, &self.wv, &self.wo, &self.gate, &self.up, &self.down,
        ]
    }
}

/// Every weight of the model, on the host.
#[derive(Debug, Clone)]
pub struct HostWeights {
    pub embed: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: Tensor,
    pub lm_head: Linear,
}

impl HostWeights {
    /// Bytes the weights take in memory (a tied LM head packed for the kernels counts apart
    /// from the embedding table it was made from).
    pub fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.matrices().iter().map(|w| w.bytes()).sum::<usize>()
                    + tensor_bytes(&l.attn_norm)
                    + tensor_bytes(&l.mlp_norm)
            })
            .sum();
        self.embed.bytes() + layers + tensor_bytes(&self.norm) + self.lm_head.bytes()
    }

    /// Replaces every quantized linear layer by its dense f32 form (more memory, f32 accuracy).
    pub(crate) fn dequantize(&mut self) -> Result<()> {
        let dense = |l: &Linear| -> Result<Linear> { Linear::dense(l.dequantized()?) };
        for layer in &mut self.layers {
            for l in [
                &mut layer.wq,
                &mut layer.wk,
                &mut layer.wv,
                &mut layer.wo,
                &mut layer.gate,
                &mut layer.up,
                &mut layer.down,
            ] {
                *l = dense(l)?;
            }
        }
        self.lm_head = dense(&self.lm_head)?;
        Ok(())
    }
}
