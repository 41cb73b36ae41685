//! Checkpoint loaders: GGUF files and HF safetensors folders.

mod gguf;
mod gguf_export;
mod gguf_tokenizer;
mod safetensors;
mod save;

use std::path::Path;

use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::model::EpasLlama;
use crate::tokenizer::TextTokenizer;

pub use gguf::{load_gguf, load_gguf_bytes};
pub use gguf_export::{export_gguf, GgufQuant};
pub use safetensors::{load_safetensors, read_config, read_tokenizer, HfModelConfig};
pub use save::{save_model_files, save_safetensors};

/// Loads a GGUF file or an HF folder, chosen by what `path` is.
pub fn load_model(path: &Path, device: &Device) -> Result<(EpasLlama, TextTokenizer)> {
    let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        load_safetensors(path, device)
    } else {
        load_gguf(path, device)
    }
}
