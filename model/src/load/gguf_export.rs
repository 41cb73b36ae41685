//! Writes a model as a GGUF file llama.cpp and this crate load: `llama.*` shape keys, the
//! byte-level BPE tokenizer (`gpt2` model, `smollm` pre-tokenization), `epas.*` metadata, RoPE
//! scaling (keys or a `rope_freqs` tensor), and the Q/K rows permuted into llama.cpp's
//! interleaved RoPE layout.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use super::rope_gguf::{rope_freqs_tensor, rope_scaling_keys};
use crate::error::{ModelError, Result};
use crate::model::EpasLlama;
use crate::rope::gguf_to_hf_row_order;
use crate::tokenizer::TextTokenizer;

/// Storage of the exported matrices (norms stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F32,
    F16,
    Q8_0,
    Q5_1,
    Q5_0,
    Q4_1,
    Q4_0,
    /// Q4_K where a row holds whole 256-value super-blocks, else Q5_0 (llama.cpp's fallback).
    Q4K,
    /// Q5_K where a row holds whole 256-value super-blocks, else Q5_1 (llama.cpp's fallback).
    Q5K,
    /// Q6_K where a row holds whole 256-value super-blocks, else Q8_0 (llama.cpp's fallback).
    Q6K,
}

impl std::str::FromStr for GgufQuant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q5_1" => Ok(Self::Q5_1),
            "q5_0" => Ok(Self::Q5_0),
            "q4_1" => Ok(Self::Q4_1),
            "q4_0" => Ok(Self::Q4_0),
            "q4_k" | "q4k" => Ok(Self::Q4K),
            "q5_k" | "q5k" => Ok(Self::Q5K),
            "q6_k" | "q6k" => Ok(Self::Q6K),
            other => Err(format!(
                "unknown quantization {other:?} \
                 (q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, f16, f32)"
            )),
        }
    }
}

impl GgufQuant {
    /// The name `--quant` / `--quantize` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q5_1 => "q5_1",
            Self::Q5_0 => "q5_0",
            Self::Q4_1 => "q4_1",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
        }
    }

    /// The storage of a matrix whose rows hold `cols` values.
    pub(crate) fn dtype(self, cols: usize) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q5_1 => GgmlDType::Q5_1,
            Self::Q5_0 => GgmlDType::Q5_0,
            Self::Q4_1 => GgmlDType::Q4_1,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K if cols.is_multiple_of(GgmlDType::Q4K.block_size()) => GgmlDType::Q4K,
            Self::Q4K => GgmlDType::Q5_0,
            Self::Q5K if cols.is_multiple_of(GgmlDType::Q5K.block_size()) => GgmlDType::Q5K,
            Self::Q5K => GgmlDType::Q5_1,
            Self::Q6K if cols.is_multiple_of(GgmlDType::Q6K.block_size()) => GgmlDType::Q6K,
            Self::Q6K => GgmlDType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
            Self::Q5_0 => 8,
            Self::Q5_1 => 9,
            Self::Q5K => 16,
            Self::Q4K => 14,
            Self::Q6K => 18,
        }
    }
}

/// How a model's matrices are stored: each in `quant`, except that under formats of fewer than 6
/// bits the LM head (and an embedding table tied to it) is kept at Q6_K (Q8_0 where its rows are
/// not whole super-blocks), as llama.cpp's quantizer does: the logits are the most sensitive to
/// it. `pure` stores it like the rest (llama.cpp's `--pure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantScheme {
    pub quant: GgufQuant,
    pub pure: bool,
}

impl From<GgufQuant> for QuantScheme {
    fn from(quant: GgufQuant) -> Self {
        Self { quant, pure: false }
    }
}

impl QuantScheme {
    /// The storage of the LM head and of a tied embedding table.
    pub fn head(self) -> GgufQuant {
        use GgufQuant::*;
        match self.quant {
            F32 | F16 | Q8_0 | Q6K => self.quant,
            _ if self.pure => self.quant,
            _ => Q6K,
        }
    }
}

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;

pub(crate) fn quantize(t: &Tensor, quant: GgufQuant, name: &str) -> Result<QTensor> {
    let cols = t.dims().last().copied().unwrap_or(0);
    let dtype = quant.dtype(cols);
    if !cols.is_multiple_of(dtype.block_size()) {
        return Err(ModelError::Config(format!(
            "{name}: rows of {cols} values cannot be stored as {quant:?} (blocks of {})",
            dtype.block_size()
        )));
    }
    Ok(QTensor::quantize(t, dtype)?)
}

/// HF row order -> GGUF row order (the inverse of the loader's permutation).
fn to_gguf_rows(t: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let order = gguf_to_hf_row_order(heads, head_dim);
    let mut inverse = vec![0u32; order.len()];
    for (hf, &gguf) in order.iter().enumerate() {
        inverse[gguf] = hf as u32;
    }
    let idx = Tensor::from_vec(inverse, order.len(), t.device())?;
    Ok(t.index_select(&idx, 0)?)
}

fn tokenizer_metadata(tok: &TextTokenizer) -> Result<Vec<(String, Value)>> {
    let inner = tok.inner();
    let size = inner.get_vocab_size(true);
    let mut tokens = vec![String::new(); size];
    for (text, id) in inner.get_vocab(true) {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = text;
        }
    }
    let specials = inner.get_added_tokens_decoder();
    let types: Vec<Value> = (0..size as u32)
        .map(|id| {
            let special = specials.get(&id).is_some_and(|t| t.special);
            Value::I32(if special {
                TOKEN_TYPE_CONTROL
            } else {
                TOKEN_TYPE_NORMAL
            })
        })
        .collect();
    let json: serde_json::Value = serde_json::from_str(
        &inner
            .to_string(false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?,
    )
    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    if json["model"]["type"] != "BPE" {
        return Err(ModelError::Tokenizer(
            "only byte-level BPE tokenizers can be written to GGUF".into(),
        ));
    }
    let merges: Vec<Value> = json["model"]["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|entry| match entry {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(pair) => Some(format!(
                        "{} {}",
                        pair.first()?.as_str()?,
                        pair.get(1)?.as_str()?
                    )),
                    _ => None,
                })
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String("smollm".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(tok.add_bos),
        ),
    ];
    if let Some(bos) = tok.bos_token {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)));
    }
    if let Some(&eos) = tok.eos_tokens.first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
    }
    if let Some(&eot) = tok.eos_tokens.get(1) {
        md.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(eot)));
    }
    if let Some(t) = &tok.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
    }
    Ok(md)
}

/// Writes `model` and `tokenizer` to `path` (through a temporary file renamed into place).
pub fn export_gguf(
    model: &EpasLlama,
    tokenizer: &TextTokenizer,
    scheme: impl Into<QuantScheme>,
    path: &Path,
) -> Result<()> {
    let scheme = scheme.into();
    let quant = scheme.quant;
    let c = model.config();
    let weights = model.host_weights()?;
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String(model.info.name.clone()),
        ),
        (
            "llama.context_length".into(),
            Value::U32(c.max_position_embeddings as u32),
        ),
        (
            "llama.embedding_length".into(),
            Value::U32(c.hidden_size as u32),
        ),
        ("llama.block_count".into(), Value::U32(c.num_layers as u32)),
        (
            "llama.feed_forward_length".into(),
            Value::U32(c.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count".into(),
            Value::U32(c.num_heads as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(c.num_kv_heads as u32),
        ),
        ("llama.rope.freq_base".into(), Value::F32(c.rope_theta)),
        (
            "llama.rope.dimension_count".into(),
            Value::U32(c.head_dim() as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.rms_norm_eps as f32),
        ),
        ("llama.vocab_size".into(), Value::U32(c.vocab_size as u32)),
        ("general.file_type".into(), Value::U32(quant.file_type())),
    ];
    if let Some(e) = &model.info.epas {
        md.push((
            "epas.sharing_ratio".into(),
            Value::F32(e.sharing_ratio as f32),
        ));
        md.push((
            "epas.sharing_layers".into(),
            Value::U32(e.sharing_layers as u32),
        ));
        if let Some(s) = &e.schedule {
            md.push(("epas.schedule".into(), Value::String(s.to_string())));
        }
    }
    md.extend(rope_scaling_keys(c));
    md.extend(tokenizer_metadata(tokenizer)?);

    let hd = c.head_dim();
    let vector = |t: &Tensor| -> Result<QTensor> { Ok(QTensor::quantize(t, GgmlDType::F32)?) };
    let table_quant = if c.tie_word_embeddings {
        scheme.head()
    } else {
        quant
    };
    let mut tensors: Vec<(String, QTensor)> = vec![(
        "token_embd.weight".into(),
        quantize(
            &weights.embed.dequantized()?,
            table_quant,
            "token_embd.weight",
        )?,
    )];
    for (i, l) in weights.layers.iter().enumerate() {
        let p = format!("blk.{i}");
        let wq = to_gguf_rows(&l.wq.dequantized()?, c.num_heads, hd)?;
        let wk = to_gguf_rows(&l.wk.dequantized()?, c.num_kv_heads, hd)?;
        for (name, t) in [
            ("attn_q", wq),
            ("attn_k", wk),
            ("attn_v", l.wv.dequantized()?),
            ("attn_output", l.wo.dequantized()?),
            ("ffn_gate", l.gate.dequantized()?),
            ("ffn_up", l.up.dequantized()?),
            ("ffn_down", l.down.dequantized()?),
        ] {
            let name = format!("{p}.{name}.weight");
            let q = quantize(&t, quant, &name)?;
            tensors.push((name, q));
        }
        tensors.push((format!("{p}.attn_norm.weight"), vector(&l.attn_norm)?));
        tensors.push((format!("{p}.ffn_norm.weight"), vector(&l.mlp_norm)?));
    }
    tensors.push(("output_norm.weight".into(), vector(&weights.norm)?));
    tensors.extend(rope_freqs_tensor(c)?);
    if !c.tie_word_embeddings {
        tensors.push((
            "output.weight".into(),
            quantize(
                &weights.lm_head.dequantized()?,
                scheme.head(),
                "output.weight",
            )?,
        ));
    }

    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.gguf".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        candle_core::quantized::gguf_file::write(&mut file, &md_refs, &t_refs)?;
        use std::io::Write;
        file.flush().map_err(io)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io)
}
