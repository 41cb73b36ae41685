//! The built-in model, compiled into the binary so `epas serve` runs with no download: an EPAS
//! LLaMA trained from scratch by `epas train` on State of the Union addresses up to 1999 with the
//! progressive schedule to sharing ratio 0.5, exported as Q8_0 GGUF. The command that produced it
//! is in docs/training.md. A crate of its own, so that the model library does not carry the
//! 7.5 MB asset.

use std::path::Path;

use candle_core::Device;

use epas_model::load_gguf_bytes;
use epas_model::{EpasLlama, Result, TextTokenizer};

/// What `--model` names to select it.
pub const BUILTIN_NAME: &str = "builtin";

const BUILTIN_GGUF: &[u8] = include_bytes!("../assets/epas-sotu.q8_0.gguf");

/// Loads the built-in model.
pub fn load_builtin(device: &Device) -> Result<(EpasLlama, TextTokenizer)> {
    load_gguf_bytes(BUILTIN_GGUF, Path::new("builtin:epas-sotu"), device)
}
