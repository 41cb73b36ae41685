//! EPAS LLaMA: decoder layers that switch between computing Q/K and reusing the source layer's
//! attention, per sequence; loaders for GGUF and HF safetensors checkpoints; generation and
//! evaluation helpers.
//!
//! The modules are private: what the server, the CLI, the trainer and the tests use is
//! re-exported here, and nothing else.

mod attention;
mod attention_kernels;
mod chat_template;
mod config;
mod device_forward;
mod error;
mod eval;
mod finish_reason;
mod generate;
mod host_forward;
mod host_weights;
mod init;
mod kernels;
mod kv_buffer;
mod kv_cache;
mod linear;
mod load;
mod model;
mod paged;
mod python_json;
mod quantize;
mod rope;
mod rope_scaling;
mod sampler;
mod sharing;
#[cfg(test)]
mod test_random;
mod tokenizer;
mod vector_ops;

pub use config::{EpasMeta, LlamaConfig, ModelInfo};
pub use device_forward::{DeviceModel, DeviceWeights};
pub use error::{ModelError, Result};
pub use eval::{perplexity, EvalRow};
pub use finish_reason::FinishReason;
pub use generate::{generate, Generation};
pub use host_weights::{DecoderLayer, HostWeights};
pub use init::random_model;
pub use kv_cache::{kv_bytes_per_token, ArenaKv, KvCache, KvDtype, Rows, SequenceCache};
pub use linear::{Embedding, Linear};
pub use load::{
    export_gguf, hf_rope_scaling, load_gguf_bytes, load_model, load_model_with, save_model_files,
    save_safetensors, LoadOptions,
};
pub use model::{Backend, EpasLlama, Logits, SequenceStep, SharedAttention};
pub use paged::{BlockPool, BlockSet, PagedSequence, PoolStats, PrefixCache, PrefixStats};
/// JSON written as Python's `json.dumps` writes it (what chat templates' `tojson` gives).
pub use python_json::to_string as python_json_string;
pub use quantize::{GgufQuant, QuantScheme};
pub use rope::RopeTable;
pub use rope_scaling::{Llama3Scaling, RopeScaling};
pub use sampler::{argmax, Sampled, Sampler, SamplingParams, TokenFilter};
pub use sharing::{LayerMode, SharingPlan};
pub use tokenizer::{ChatMessage, IncrementalDecoder, TextTokenizer};
/// The RMS norm's row scale; the trainer's op uses it so that training and serving agree.
pub use vector_ops::inv_rms;
