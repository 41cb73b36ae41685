//! Loads an HF LLaMA folder: `config.json` (optionally with an `"epas"` object), one or more
//! `*.safetensors` files and `tokenizer.json` (chat template from `tokenizer_config.json`).

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::rope_hf::read_hf_rope;
use super::LoadOptions;
use crate::config::{EpasMeta, LlamaConfig, ModelInfo};
use crate::error::{ModelError, Result};
use crate::host_weights::{DecoderLayer, HostWeights};
use crate::linear::Linear;
use crate::model::EpasLlama;
use crate::quantize::{FloatMatrices, Role};
use crate::rope_scaling::RopeScaling;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f32>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    epas: Option<EpasMeta>,
}

fn default_eps() -> f64 {
    1e-6
}
/// transformers' default `rope_theta`.
const DEFAULT_THETA: f64 = 10000.0;
fn default_max_pos() -> usize {
    2048
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_error(path: &Path, format: &'static str, message: impl ToString) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        format,
        message: message.to_string(),
    }
}

/// What `config.json` says: shape, EPAS metadata, BOS and EOS ids.
#[derive(Debug, Clone)]
pub(super) struct HfModelConfig {
    pub config: LlamaConfig,
    pub epas: Option<EpasMeta>,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

/// Reads `config.json` of `dir` into the model shape and EPAS metadata.
pub(super) fn read_config(dir: &Path) -> Result<HfModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    let hf: HfConfig =
        serde_json::from_str(&text).map_err(|e| format_error(&path, "config.json", e))?;
    if let Some(t) = &hf.model_type {
        if t != "llama" {
            return Err(ModelError::UnknownArchitecture(t.clone()));
        }
    }
    // transformers 5 writes `rope_parameters` (theta inside) where older versions wrote
    // `rope_scaling`; a file may carry both.
    let (rope_scaling, inner_theta) = match (&hf.rope_parameters, &hf.rope_scaling) {
        (Some(p), _) if !p.is_null() => read_hf_rope(p, true)?,
        (_, Some(s)) => read_hf_rope(s, false)?,
        _ => (RopeScaling::None, None),
    };
    let rope_theta = inner_theta
        .or(hf.rope_theta.map(f64::from))
        .unwrap_or(DEFAULT_THETA) as f32;
    let config = LlamaConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        rope_theta,
        rms_norm_eps: hf.rms_norm_eps,
        max_position_embeddings: hf.max_position_embeddings,
        tie_word_embeddings: hf.tie_word_embeddings,
        rope_scaling,
    };
    config.validate()?;
    if let Some(hd) = hf.head_dim {
        if hd != config.head_dim() {
            return Err(ModelError::Config(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads = {}",
                config.head_dim()
            )));
        }
    }
    if let Some(e) = &hf.epas {
        if !(e.sharing_ratio.is_finite() && e.sharing_ratio >= 0.0) {
            return Err(ModelError::Config(format!(
                "epas.sharing_ratio {} is invalid",
                e.sharing_ratio
            )));
        }
        e.check_servable()?;
    }
    let eos = match hf.eos_token_id {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    };
    Ok(HfModelConfig {
        config,
        epas: hf.epas,
        bos: hf.bos_token_id,
        eos,
    })
}

fn safetensor_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Missing {
            path: dir.to_path_buf(),
            what: "*.safetensors weights".into(),
        });
    }
    Ok(files)
}

/// The folder's tensors, memory-mapped and read one at a time, so a checkpoint is converted (or
/// quantized) matrix by matrix rather than held whole in f32.
struct Weights<'a> {
    dir: &'a Path,
    files: MmapedSafetensors,
    device: &'a Device,
    floats: FloatMatrices,
}

impl Weights<'_> {
    fn contains(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
    }

    /// The tensor in its file dtype.
    fn read(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(ModelError::Missing {
                path: self.dir.to_path_buf(),
                what: format!("tensor {name}"),
            });
        }
        let t = self
            .files
            .load(name, self.device)
            .map_err(|e| format_error(self.dir, "safetensors", format!("tensor {name}: {e}")))?;
        if t.dims() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        Ok(self.read(name, &[len])?.to_dtype(candle_core::DType::F32)?)
    }

    fn linear(&mut self, name: &str, expected: &[usize], role: Role) -> Result<Linear> {
        let t = self.read(name, expected)?;
        self.floats.linear(&t, role, name)
    }
}

/// Reads the tokenizer of an HF folder.
pub(super) fn read_tokenizer(dir: &Path, bos: Option<u32>, eos: Vec<u32>) -> Result<TextTokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Err(ModelError::Missing {
            path: dir.to_path_buf(),
            what: "tokenizer.json".into(),
        });
    }
    let inner =
        Tokenizer::from_file(&path).map_err(|e| format_error(&path, "tokenizer.json", e))?;
    let tc_path = dir.join("tokenizer_config.json");
    let (mut template, mut add_bos) = (None, false);
    if let Ok(text) = std::fs::read_to_string(&tc_path) {
        let tc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format_error(&tc_path, "tokenizer_config.json", e))?;
        template = tc
            .get("chat_template")
            .and_then(|v| v.as_str())
            .map(String::from);
        add_bos = tc
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
    }
    Ok(TextTokenizer::new(inner, bos, eos, add_bos, template))
}

/// Loads an HF folder, quantizing the matrices as they are read when `options` asks.
pub(crate) fn load_safetensors_with(
    dir: &Path,
    device: &Device,
    options: &LoadOptions,
) -> Result<(EpasLlama, TextTokenizer)> {
    let HfModelConfig {
        config,
        epas,
        bos,
        eos,
    } = read_config(dir)?;
    let files = safetensor_files(dir)?;
    // SAFETY: the files are mapped read-only for the duration of the load; every tensor is
    // copied out before the map is dropped. Changing a file while it loads is undefined, as for
    // every mmap-based loader.
    let mapped = unsafe { MmapedSafetensors::multi(&files) }
        .map_err(|e| format_error(dir, "safetensors", e))?;
    let mut w = Weights {
        dir,
        files: mapped,
        device,
        floats: FloatMatrices::new(options.quantize, options.rewrite_formats)?,
    };
    let (d, kv, ffn, v) = (
        config.hidden_size,
        config.kv_dim(),
        config.intermediate_size,
        config.vocab_size,
    );
    let separate_head = !config.tie_word_embeddings && w.contains("lm_head.weight");
    let table = w.read("model.embed_tokens.weight", &[v, d])?;
    let embed = w.floats.table(&table, !separate_head)?;
    drop(table);
    let mut layers = Vec::with_capacity(config.num_layers);
    let layer = Role::Layer;
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        layers.push(DecoderLayer {
            attn_norm: w.vector(&format!("{p}.input_layernorm.weight"), d)?,
            wq: w.linear(&format!("{p}.self_attn.q_proj.weight"), &[d, d], layer)?,
            wk: w.linear(&format!("{p}.self_attn.k_proj.weight"), &[kv, d], layer)?,
            wv: w.linear(&format!("{p}.self_attn.v_proj.weight"), &[kv, d], layer)?,
            wo: w.linear(&format!("{p}.self_attn.o_proj.weight"), &[d, d], layer)?,
            mlp_norm: w.vector(&format!("{p}.post_attention_layernorm.weight"), d)?,
            gate: w.linear(&format!("{p}.mlp.gate_proj.weight"), &[ffn, d], layer)?,
            up: w.linear(&format!("{p}.mlp.up_proj.weight"), &[ffn, d], layer)?,
            down: w.linear(&format!("{p}.mlp.down_proj.weight"), &[d, ffn], layer)?,
        });
    }
    let norm = w.vector("model.norm.weight", d)?;
    let (embed, lm_head) = if separate_head {
        let head = w.linear("lm_head.weight", &[v, d], Role::Head)?;
        (embed, head)
    } else {
        // No head of its own: the table is the head (one table, as in a GGUF file).
        embed.tied(options.rewrite_formats)?
    };
    let weight_format = layers[0].wv.format();
    w.floats.finish(&weight_format)?;
    let tokenizer = read_tokenizer(dir, bos, eos)?;
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let info = ModelInfo {
        name,
        config,
        epas,
        weight_format,
    };
    let model = EpasLlama::new(
        info,
        HostWeights {
            embed,
            layers,
            norm,
            lm_head,
        },
    )?;
    Ok((model, tokenizer))
}
