//! EPAS LLaMA: decoder layers that switch between computing Q/K and reusing the source layer's
//! attention, per sequence; loaders for GGUF and HF safetensors checkpoints; generation and
//! evaluation helpers.

pub mod attention;
mod attention_kernels;
pub mod config;
mod device_forward;
pub mod error;
pub mod eval;
mod finish_reason;
pub mod generate;
mod host_forward;
mod host_weights;
pub mod init;
pub mod kernels;
mod kv_buffer;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod model;
pub mod paged;
mod quantize;
pub mod rope;
pub mod rope_scaling;
pub mod sampler;
pub mod sharing;
#[cfg(test)]
mod test_random;
pub mod tokenizer;
pub mod vector_ops;

pub use config::{EpasMeta, LlamaConfig, ModelInfo};
pub use device_forward::{DeviceModel, DeviceWeights};
pub use error::{ModelError, Result};
pub use finish_reason::FinishReason;
pub use host_weights::{DecoderLayer, HostWeights};
pub use kv_cache::{ArenaKv, KvCache, KvDtype, Rows, SequenceCache};
pub use load::load_model;
pub use model::{Backend, EpasLlama, Logits, SequenceStep, SharedAttention};
pub use quantize::{GgufQuant, QuantScheme};
pub use sharing::{LayerMode, SharingPlan};
pub use tokenizer::{ChatMessage, IncrementalDecoder, TextTokenizer};
