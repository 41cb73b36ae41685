use std::path::PathBuf;

/// Everything the model crate can refuse or fail at, with messages a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("sharing ratio {0} is not a finite number")]
    RatioNotFinite(f64),
    #[error("sharing ratio {0} is negative")]
    RatioNegative(f64),
    #[error("sharing ratio {ratio} is above the maximum {max} for this model ({reason})")]
    RatioAboveMax {
        ratio: f64,
        max: f64,
        reason: String,
    },
    #[error("model has {0} layers; EPAS needs at least 1")]
    NoLayers(usize),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} file: {message}")]
    Format {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("unsupported model architecture {0:?} (only \"llama\" is supported)")]
    UnknownArchitecture(String),
    #[error("missing {what} in {path}")]
    Missing { path: PathBuf, what: String },
    #[error("tensor {name} has shape {actual:?}, the config asks for {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("RoPE scaling type `{0}` is not supported (supported: linear, llama3)")]
    UnsupportedRopeScaling(String),
    #[error("empty prompt: at least one token is needed")]
    EmptyPrompt,
    #[error("{tokens} tokens exceed the model's context of {context}")]
    ContextExceeded { tokens: usize, context: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("KV cache full: {needed} blocks needed, {free} free")]
    KvCacheFull { needed: usize, free: usize },
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error(
        "nothing to quantize: the model's matrices are already stored as {format}; load-time \
         quantization takes f32/f16/bf16 weights (`epas export --quant` re-quantizes a file)"
    )]
    AlreadyQuantized { format: String },
    #[error("load-time quantization needs a block format (q8_0, q6_k, ...), not {0}")]
    NotABlockFormat(String),
    #[error(
        "the model's weights were moved to a device; this needs them in host memory (use the \
         model as loaded, before it is placed on the device)"
    )]
    WeightsOnDevice,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
