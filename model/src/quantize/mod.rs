//! Quantization, one place for the loaders and the exporter: the formats and the LM-head rule
//! ([`format`]), float matrices into GGUF blocks ([`blocks`]), and load-time quantization of
//! a model's float matrices ([`at_load`]).

mod at_load;
mod blocks;
mod format;

pub(crate) use at_load::FloatMatrices;
pub(crate) use blocks::quantize;
pub(crate) use format::Role;
pub use format::{GgufQuant, QuantScheme};
