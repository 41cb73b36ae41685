//! RoPE scaling in GGUF, as llama.cpp reads it: `llama.rope.scaling.type` (absent means
//! `linear`), `llama.rope.scaling.factor` (or the older `llama.rope.scale_linear`; absent or 0
//! means no scaling) and a `rope_freqs.weight` tensor holding one divisor per frequency, which
//! llama.cpp's converter writes for Llama 3.x checkpoints.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::gguf::md_f64;
use super::llama3_fit::llama3_from_factors;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::rope::base_inverse_frequencies;
use crate::rope_scaling::RopeScaling;

const TYPE_KEY: &str = "llama.rope.scaling.type";
const FACTOR_KEY: &str = "llama.rope.scaling.factor";
const OLD_FACTOR_KEY: &str = "llama.rope.scale_linear";
const ATTN_FACTOR_KEY: &str = "llama.rope.scaling.attn_factor";
const FREQS_TENSOR: &str = "rope_freqs.weight";

/// The linear factor the metadata asks for (1: none); any other type is refused by name.
fn linear_factor(meta: &HashMap<String, Value>) -> Result<f64> {
    let kind = match meta.get(TYPE_KEY) {
        None => "linear".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ModelError::Config(format!(
                "{TYPE_KEY} must be a string, not {other:?}"
            )))
        }
    };
    if let Some(attn) = md_f64(meta, ATTN_FACTOR_KEY).filter(|&a| a != 1.0) {
        return Err(ModelError::Config(format!(
            "RoPE attention factor {attn} ({ATTN_FACTOR_KEY}) is not supported"
        )));
    }
    let factor = md_f64(meta, FACTOR_KEY)
        .or_else(|| md_f64(meta, OLD_FACTOR_KEY))
        .filter(|&f| f != 0.0)
        .unwrap_or(1.0);
    match kind.as_str() {
        "none" => Ok(1.0),
        "linear" => Ok(factor),
        other => Err(ModelError::UnsupportedRopeScaling(other.to_string())),
    }
}

/// The `rope_freqs` tensor of the file, if it has one of `half` values.
fn frequency_factors<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    path: &Path,
    half: usize,
) -> Result<Option<Vec<f32>>> {
    let Some(info) = content.tensor_infos.get(FREQS_TENSOR) else {
        return Ok(None);
    };
    if info.shape.dims() != [half] {
        return Err(ModelError::ShapeMismatch {
            name: FREQS_TENSOR.into(),
            expected: vec![half],
            actual: info.shape.dims().to_vec(),
        });
    }
    let q = content
        .tensor(reader, FREQS_TENSOR, &Device::Cpu)
        .map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            format: "GGUF",
            message: format!("tensor {FREQS_TENSOR}: {e}"),
        })?;
    Ok(Some(q.dequantize(&Device::Cpu)?.to_vec1()?))
}

/// The scaling a GGUF file of shape `config` describes. A `rope_freqs` table of the Llama-3
/// form loads as [`RopeScaling::Llama3`] (so an HF folder can be written from it), any other as
/// the table itself.
pub(super) fn read_rope_scaling<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    path: &Path,
    config: &LlamaConfig,
) -> Result<RopeScaling> {
    let linear = linear_factor(&content.metadata)?;
    let hd = config.head_dim();
    let factors = frequency_factors(content, reader, path, hd / 2)?;
    match factors {
        Some(_) if linear != 1.0 => Err(ModelError::Config(format!(
            "{FREQS_TENSOR} together with linear RoPE scaling (factor {linear}) is not supported"
        ))),
        Some(factors) if factors.iter().all(|&f| f == 1.0) => Ok(RopeScaling::None),
        Some(factors) => {
            let base = base_inverse_frequencies(hd, config.rope_theta);
            Ok(match llama3_from_factors(&factors, &base) {
                Some(p) => RopeScaling::Llama3(p),
                None => RopeScaling::Frequencies { factors },
            })
        }
        None if linear != 1.0 => Ok(RopeScaling::Linear { factor: linear }),
        None => Ok(RopeScaling::None),
    }
}

/// The metadata keys `epas export` writes for the scaling of `config` (linear only).
pub(super) fn rope_scaling_keys(config: &LlamaConfig) -> Vec<(String, Value)> {
    match &config.rope_scaling {
        RopeScaling::Linear { factor } => vec![
            (TYPE_KEY.into(), Value::String("linear".into())),
            (FACTOR_KEY.into(), Value::F32(*factor as f32)),
        ],
        _ => Vec::new(),
    }
}

/// The `rope_freqs` tensor `epas export` writes for the per-frequency forms of scaling, as
/// llama.cpp's converter writes it for Llama 3.x.
pub(super) fn rope_freqs_tensor(config: &LlamaConfig) -> Result<Option<(String, QTensor)>> {
    let base = base_inverse_frequencies(config.head_dim(), config.rope_theta);
    let factors = match &config.rope_scaling {
        RopeScaling::Llama3(p) => p.frequency_factors(&base),
        RopeScaling::Frequencies { factors } => factors.clone(),
        RopeScaling::None | RopeScaling::Linear { .. } => return Ok(None),
    };
    let n = factors.len();
    let t = Tensor::from_vec(factors, n, &Device::Cpu)?;
    Ok(Some((
        FREQS_TENSOR.to_string(),
        QTensor::quantize(&t, GgmlDType::F32)?,
    )))
}
