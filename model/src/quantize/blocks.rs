//! Float matrices into GGUF blocks: what the exporter writes and load-time quantization keeps.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use super::format::GgufQuant;
use crate::error::{ModelError, Result};

/// The block format `quant` stores rows of `cols` values in; an error (naming the matrix as
/// `name`, when given) when the rows are not whole blocks.
pub(crate) fn row_format(quant: GgufQuant, cols: usize, name: Option<&str>) -> Result<GgmlDType> {
    let dtype = quant.dtype(cols);
    let block = dtype.block_size();
    if cols.is_multiple_of(block) {
        return Ok(dtype);
    }
    let rows = format!(
        "rows of {cols} values cannot be stored as {} (blocks of {block})",
        quant.name()
    );
    Err(ModelError::Config(match name {
        Some(name) => format!("{name}: {rows}"),
        None => rows,
    }))
}

/// `t` (f32, rows last) as GGUF blocks of `quant`.
pub(crate) fn quantize(t: &Tensor, quant: GgufQuant, name: &str) -> Result<QTensor> {
    let cols = t.dims().last().copied().unwrap_or(0);
    let dtype = row_format(quant, cols, Some(name))?;
    Ok(QTensor::quantize(t, dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_are_not_whole_blocks_are_refused_by_name() {
        let t = Tensor::zeros((2, 48), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let err = quantize(&t, GgufQuant::Q8_0, "blk.0.ffn_down.weight").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid model config: blk.0.ffn_down.weight: rows of 48 values cannot be stored \
             as q8_0 (blocks of 32)"
        );
        // Q6_K falls back to Q8_0 for rows that are not whole super-blocks.
        let t = Tensor::zeros((2, 64), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        assert_eq!(
            quantize(&t, GgufQuant::Q6K, "x").unwrap().dtype(),
            GgmlDType::Q8_0
        );
    }
}
