//! Flags shared by every command that loads a model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use epas_builtin::BUILTIN_NAME;
use epas_model::GgufQuant;
use epas_model::{EpasLlama, KvDtype, TextTokenizer};

use super::device::DeviceArgs;
use super::memory::peak_rss_mb;

/// The model fetched by `scripts/fetch-models.sh`.
pub const SMOLLM2_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF file, HF folder (config.json + *.safetensors + tokenizer.json), or `builtin`: the
    /// EPAS model compiled into the binary (trained on State of the Union addresses).
    #[arg(long, env = "EPAS_MODEL", default_value = BUILTIN_NAME)]
    pub model: PathBuf,
    /// Allow sharing ratios above what the checkpoint was trained for (forced sharing: the
    /// quality drops).
    #[arg(long, env = "EPAS_ALLOW_UNTRAINED_SHARING")]
    pub allow_untrained_sharing: bool,
    /// Element type of the K/V cache: `f16` (half the memory and cache traffic, as llama.cpp)
    /// or `f32` (exact against f32 references).
    #[arg(long, env = "EPAS_KV_CACHE_DTYPE", default_value = "f16")]
    pub kv_cache_dtype: KvDtype,
    /// Store a checkpoint's f32/f16/bf16 matrices as GGUF blocks at load: `q8_0`, `q6_k`,
    /// `q5_k`, `q5_1`, `q5_0`, `q4_k`, `q4_1` or `q4_0` (an HF folder then runs on the quantized
    /// kernels, as the same GGUF file would). A model with no float matrix is refused. On a GPU
    /// this saves memory only with `--device-weights quantized`.
    #[arg(long, env = "EPAS_QUANTIZE", value_name = "FORMAT")]
    pub quantize: Option<GgufQuant>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// The model on the device of `--device` (loaded on the host, then copied).
    pub fn load(&self) -> anyhow::Result<(EpasLlama, TextTokenizer)> {
        // Opened before loading: an unusable device fails at once.
        let device = self.device.resolve()?;
        let (model, tokenizer) = self.load_host()?;
        Ok((self.device.place(model, &device)?, tokenizer))
    }

    /// The model on the host, whatever `--device` says.
    pub fn load_host(&self) -> anyhow::Result<(EpasLlama, TextTokenizer)> {
        let device = candle_core::Device::Cpu;
        if !self.model.exists() && self.model.as_path() == std::path::Path::new(SMOLLM2_MODEL) {
            anyhow::bail!(
                "{} not found: run scripts/fetch-models.sh first, or pass --model PATH",
                SMOLLM2_MODEL
            );
        }
        let started = std::time::Instant::now();
        // A device takes GGUF blocks as they are; the rewrites are for the CPU kernels.
        let rewrite = matches!(self.device.device, super::device::DeviceSpec::Cpu);
        let quantize_context = || match self.quantize {
            Some(q) => format!(" (--quantize {})", q.name()),
            None => String::new(),
        };
        let mut loaded = if self.model.as_path() == std::path::Path::new(BUILTIN_NAME) {
            let mut builtin =
                epas_builtin::load_builtin(&device).context("loading the built-in model")?;
            if let Some(quant) = self.quantize {
                // Refused: the built-in weights are Q8_0 already.
                builtin
                    .0
                    .quantize_weights(quant, rewrite)
                    .with_context(|| format!("the built-in model{}", quantize_context()))?;
            }
            builtin
        } else {
            // Float matrices are quantized one by one as they are read: the checkpoint is never
            // held whole in f32.
            let options = epas_model::LoadOptions {
                rewrite_formats: rewrite,
                quantize: self.quantize.map(Into::into),
            };
            epas_model::load_model_with(&self.model, &device, &options).with_context(|| {
                format!("loading {}{}", self.model.display(), quantize_context())
            })?
        };
        loaded.0.set_kv_dtype(self.kv_cache_dtype);
        let c = loaded.0.config();
        tracing::info!(
            model = %loaded.0.info.name,
            layers = c.num_layers,
            hidden = c.hidden_size,
            weights = %loaded.0.info.weight_format,
            weight_mb = (loaded.0.host_weights()?.bytes() as f64 / 1e6).round(),
            quantized_at_load = self.quantize.map_or("no", |q| q.name()),
            peak_rss_mb = peak_rss_mb().unwrap_or(0.0).round(),
            epas = loaded.0.info.epas.is_some(),
            seconds = started.elapsed().as_secs_f32(),
            "model loaded"
        );
        Ok(loaded)
    }
}
