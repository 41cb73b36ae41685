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
use crate::quantize::{quantize, QuantScheme, Role};
use crate::rope::gguf_to_hf_row_order;
use crate::tokenizer::TextTokenizer;

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;

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
        (
            "general.file_type".into(),
            Value::U32(scheme.quant.file_type()),
        ),
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
    let table_quant = scheme.format_for(Role::table(c.tie_word_embeddings));
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
            let q = quantize(&t, scheme.format_for(Role::Layer), &name)?;
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
                scheme.format_for(Role::Head),
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
