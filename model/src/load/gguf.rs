//! Loads a LLaMA GGUF file (quantized or float) as an [`EpasLlama`] with its tokenizer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;

use super::LoadOptions;
use crate::config::{EpasMeta, LlamaConfig, ModelInfo};
use crate::error::{ModelError, Result};
use crate::host_weights::{DecoderLayer, HostWeights};
use crate::linear::{Embedding, Linear};
use crate::model::EpasLlama;
use crate::quantize::{FloatMatrices, Role};
use crate::rope::gguf_to_hf_row_order;
use crate::rope_scaling::RopeScaling;
use crate::tokenizer::TextTokenizer;

use super::gguf_tokenizer::tokenizer_from_gguf;
use super::rope_gguf::read_rope_scaling;

struct GgufReader<'a, R> {
    path: &'a Path,
    content: Content,
    reader: R,
    device: &'a Device,
    floats: FloatMatrices,
}

impl<R: std::io::Read + std::io::Seek> GgufReader<'_, R> {
    fn format_error(&self, message: String) -> ModelError {
        ModelError::Format {
            path: self.path.to_path_buf(),
            format: "GGUF",
            message,
        }
    }

    fn tensor(&mut self, name: &str, expected: &[usize]) -> Result<QTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::Missing {
                path: self.path.to_path_buf(),
                what: format!("tensor {name}"),
            })?;
        if info.shape.dims() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: info.shape.dims().to_vec(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, self.device)
            .map_err(|e| self.format_error(format!("tensor {name}: {e}")))
    }

    fn linear(&mut self, name: &str, expected: &[usize], role: Role) -> Result<Linear> {
        let q = self.tensor(name, expected)?;
        self.as_linear(q, role, name)
    }

    fn as_linear(&mut self, q: QTensor, role: Role, name: &str) -> Result<Linear> {
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                self.floats.linear(&q.dequantize(&q.device())?, role, name)
            }
            _ => Linear::quantized_with(q, self.rewrite()),
        }
    }

    /// The embedding table; a float one is quantized like the LM head when `tied`.
    fn table(&mut self, name: &str, expected: &[usize], tied: bool) -> Result<Embedding> {
        let q = self.tensor(name, expected)?;
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 if self.floats.quantizes() => {
                self.floats.table(&q.dequantize(&q.device())?, tied)
            }
            _ => Ok(Embedding::Quantized(std::sync::Arc::new(q))),
        }
    }

    fn rewrite(&self) -> bool {
        self.floats.rewrite()
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<candle_core::Tensor> {
        let q = self.tensor(name, &[len])?;
        Ok(q.dequantize(self.device)?)
    }
}

/// Reorders the output rows of a `(rows, cols)` quantized matrix: row `r` of the result is row
/// `order[r]` of `q`. Quantization blocks run along a row, so whole rows move intact.
fn permute_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let dtype = q.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = q.data()?;
    let mut out = Vec::with_capacity(rows * row_bytes);
    for &src in order {
        out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &q.device(), dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

fn md<'a>(meta: &'a HashMap<String, Value>, key: &str) -> Option<&'a Value> {
    meta.get(key)
}

fn md_usize(meta: &HashMap<String, Value>, key: &str) -> Option<usize> {
    md(meta, key).and_then(|v| match v {
        Value::U8(x) => Some(*x as usize),
        Value::U16(x) => Some(*x as usize),
        Value::U32(x) => Some(*x as usize),
        Value::U64(x) => Some(*x as usize),
        Value::I32(x) if *x >= 0 => Some(*x as usize),
        Value::I64(x) if *x >= 0 => Some(*x as usize),
        _ => None,
    })
}

pub(super) fn md_f64(meta: &HashMap<String, Value>, key: &str) -> Option<f64> {
    md(meta, key).and_then(|v| match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        _ => None,
    })
}

/// Loads a GGUF file as `options` say.
pub(crate) fn load_gguf_with(
    path: &Path,
    device: &Device,
    options: &LoadOptions,
) -> Result<(EpasLlama, TextTokenizer)> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_gguf_from(BufReader::new(file), path, device, options)
}

/// Reads a GGUF image held in memory (e.g. a model compiled into the binary); `name` stands in
/// for the path in messages.
pub fn load_gguf_bytes(
    bytes: &[u8],
    name: &Path,
    device: &Device,
) -> Result<(EpasLlama, TextTokenizer)> {
    load_gguf_from(
        std::io::Cursor::new(bytes),
        name,
        device,
        &LoadOptions::default(),
    )
}

fn load_gguf_from<R: std::io::Read + std::io::Seek>(
    mut reader: R,
    path: &Path,
    device: &Device,
    options: &LoadOptions,
) -> Result<(EpasLlama, TextTokenizer)> {
    let content = Content::read(&mut reader).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        format: "GGUF",
        message: e.to_string(),
    })?;
    let meta = &content.metadata;
    let arch = match md(meta, "general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                what: "metadata general.architecture".into(),
            })
        }
    };
    if arch != "llama" {
        return Err(ModelError::UnknownArchitecture(arch));
    }
    let need = |key: &str| {
        md_usize(meta, key).ok_or_else(|| ModelError::Missing {
            path: path.to_path_buf(),
            what: format!("metadata {key}"),
        })
    };
    let num_heads = need("llama.attention.head_count")?;
    let hidden_size = need("llama.embedding_length")?;
    let vocab_size = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| ModelError::Missing {
            path: path.to_path_buf(),
            what: "tensor token_embd.weight".into(),
        })?;
    let mut config = LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: need("llama.feed_forward_length")?,
        num_layers: need("llama.block_count")?,
        num_heads,
        num_kv_heads: md_usize(meta, "llama.attention.head_count_kv").unwrap_or(num_heads),
        rope_theta: md_f64(meta, "llama.rope.freq_base").unwrap_or(10000.0) as f32,
        rms_norm_eps: md_f64(meta, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        max_position_embeddings: md_usize(meta, "llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        rope_scaling: RopeScaling::None,
    };
    config.validate()?;
    config.rope_scaling = read_rope_scaling(&content, &mut reader, path, &config)?;
    config.validate()?;
    if let Some(rope_dim) = md_usize(meta, "llama.rope.dimension_count") {
        if rope_dim != config.head_dim() {
            return Err(ModelError::Config(format!(
                "partial RoPE (dimension_count {rope_dim} < head_dim {}) is not supported",
                config.head_dim()
            )));
        }
    }
    let epas = epas_meta(meta, &config);
    if let Some(e) = &epas {
        e.check_servable()?;
    }
    let name = match md(meta, "general.name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    let tokenizer = tokenizer_from_gguf(meta, path)?;

    let mut r = GgufReader {
        path,
        content,
        reader,
        device,
        floats: FloatMatrices::new(options.quantize, options.rewrite_formats)?,
    };
    let (d, kv, ffn, hd) = (
        config.hidden_size,
        config.kv_dim(),
        config.intermediate_size,
        config.head_dim(),
    );
    let tied = config.tie_word_embeddings;
    let embed = r.table("token_embd.weight", &[config.vocab_size, d], tied)?;
    let q_order = gguf_to_hf_row_order(config.num_heads, hd);
    let k_order = gguf_to_hf_row_order(config.num_kv_heads, hd);
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("blk.{i}");
        let (q_name, k_name) = (format!("{p}.attn_q.weight"), format!("{p}.attn_k.weight"));
        let wq = permute_rows(&r.tensor(&q_name, &[d, d])?, &q_order)?;
        let wk = permute_rows(&r.tensor(&k_name, &[kv, d])?, &k_order)?;
        let layer = Role::Layer;
        layers.push(DecoderLayer {
            attn_norm: r.vector(&format!("{p}.attn_norm.weight"), d)?,
            wq: r.as_linear(wq, layer, &q_name)?,
            wk: r.as_linear(wk, layer, &k_name)?,
            wv: r.linear(&format!("{p}.attn_v.weight"), &[kv, d], layer)?,
            wo: r.linear(&format!("{p}.attn_output.weight"), &[d, d], layer)?,
            mlp_norm: r.vector(&format!("{p}.ffn_norm.weight"), d)?,
            gate: r.linear(&format!("{p}.ffn_gate.weight"), &[ffn, d], layer)?,
            up: r.linear(&format!("{p}.ffn_up.weight"), &[ffn, d], layer)?,
            down: r.linear(&format!("{p}.ffn_down.weight"), &[d, ffn], layer)?,
        });
    }
    let norm = r.vector("output_norm.weight", d)?;
    let (embed, lm_head) = if tied {
        embed.tied(r.rewrite())?
    } else {
        let head = r.linear("output.weight", &[config.vocab_size, d], Role::Head)?;
        (embed, head)
    };
    let weight_format = layers[0].wv.format();
    r.floats.finish(&weight_format)?;
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

/// EPAS metadata under `epas.*`: `epas.sharing_ratio`, `epas.sharing_layers`, `epas.schedule`
/// (a JSON string).
fn epas_meta(meta: &HashMap<String, Value>, config: &LlamaConfig) -> Option<EpasMeta> {
    let ratio = md_f64(meta, "epas.sharing_ratio")?;
    let sharing_layers = md_usize(meta, "epas.sharing_layers")
        .unwrap_or((ratio * config.num_layers as f64).floor() as usize);
    let schedule = match md(meta, "epas.schedule") {
        Some(Value::String(s)) => serde_json::from_str(s).ok(),
        _ => None,
    };
    Some(EpasMeta {
        sharing_ratio: ratio,
        sharing_layers,
        schedule,
    })
}
