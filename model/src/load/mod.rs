//! Checkpoint loaders: GGUF files and HF safetensors folders.

mod gguf;
mod gguf_export;
mod gguf_tokenizer;
mod llama3_fit;
mod rope_gguf;
mod rope_hf;
mod safetensors;
mod save;

use std::path::Path;

use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::model::EpasLlama;
use crate::quantize::QuantScheme;
use crate::tokenizer::TextTokenizer;

pub use gguf::load_gguf_bytes;
pub(crate) use gguf::load_gguf_with;
pub use gguf_export::export_gguf;
pub use rope_hf::hf_rope_scaling;
pub use save::{save_model_files, save_safetensors};

/// Loads a GGUF file or an HF folder, chosen by what `path` is.
pub fn load_model(path: &Path, device: &Device) -> Result<(EpasLlama, TextTokenizer)> {
    load_model_with(path, device, &LoadOptions::default())
}

/// How a checkpoint is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Rewrite GGUF formats without a kernel of their own (Q4_0, Q5_x, Q4_K, Q5_K, Q6_K) for
    /// this crate's CPU kernels (the default); off for a model bound for a device, which takes
    /// the file's blocks as they are.
    pub rewrite_formats: bool,
    /// Quantize float (f32/f16/bf16) matrices as they are read (`--quantize`), so the float
    /// checkpoint is never held whole; a model with no float matrix is then an error.
    pub quantize: Option<QuantScheme>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rewrite_formats: true,
            quantize: None,
        }
    }
}

/// [`load_model`] with options.
pub fn load_model_with(
    path: &Path,
    device: &Device,
    options: &LoadOptions,
) -> Result<(EpasLlama, TextTokenizer)> {
    let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        safetensors::load_safetensors_with(path, device, options)
    } else {
        load_gguf_with(path, device, options)
    }
}
