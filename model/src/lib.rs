//! EPAS LLaMA: decoder layers that switch between computing Q/K and reusing the source layer's
//! attention, per sequence; loaders for GGUF and HF safetensors checkpoints; generation and
//! evaluation helpers.

pub mod attention;
mod attention_kernels;
pub mod builtin;
mod chat_template;
pub mod config;
pub mod error;
pub mod eval;
pub mod generate;
pub mod init;
pub mod kernels;
mod kv_buffer;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod model;
pub mod paged;
pub mod python_json;
mod quantize;
pub mod rope;
pub mod rope_scaling;
pub mod sampler;
pub mod sharing;
mod tensor_path;
#[cfg(test)]
mod test_random;
pub mod tokenizer;
pub mod train;
pub mod vector_ops;

pub use config::{EpasMeta, LlamaConfig, ModelInfo};
pub use error::{ModelError, Result};
pub use kv_cache::{ArenaKv, KvCache, KvDtype, Rows, SequenceCache};
pub use load::load_model;
pub use model::{EpasLlama, Logits, SequenceStep, SharedAttention};
pub use sharing::{LayerMode, SharingPlan};
pub use tensor_path::DeviceWeights;
pub use tokenizer::{ChatMessage, IncrementalDecoder, TextTokenizer};
