//! A weight matrix on the device: dense in the compute dtype, or kept as GGUF blocks for
//! candle's quantized matmul (on CUDA its MMVQ/MMQ kernels; a quarter to an eighth of the
//! memory of f16 for Q4/Q8 formats).

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::Result;
use crate::linear::Linear;

/// How quantized checkpoints are held on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceWeights {
    /// Dequantized once to the compute dtype (cuBLAS matmuls).
    #[default]
    Dense,
    /// GGUF blocks as loaded (Q4_0/Q4_1/Q5_x/Q8_0/k-quants); dense tensors stay dense.
    Quantized,
}

impl std::str::FromStr for DeviceWeights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dense" => Ok(Self::Dense),
            "quantized" => Ok(Self::Quantized),
            other => Err(format!("`{other}`: expected dense or quantized")),
        }
    }
}

impl std::fmt::Display for DeviceWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dense => "dense",
            Self::Quantized => "quantized",
        })
    }
}

#[derive(Debug)]
pub(super) enum DeviceMatrix {
    Dense(Tensor),
    Quantized(QMatMul),
}

impl DeviceMatrix {
    /// `x W^T` for `x` of `(n, in)`, in `x`'s dtype.
    pub(super) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => x.matmul(&w.t()?)?,
            // candle's CPU quantized matmul takes f32 only; the casts are cheap next to it.
            Self::Quantized(q) => q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?,
        })
    }
}

/// Places the row-wise stack of `parts` (same input width) on `device`: as GGUF blocks when
/// asked and every part has blocks of one format, else dense in `dtype`.
pub(super) fn place(
    parts: &[&Linear],
    device: &Device,
    dtype: DType,
    weights: DeviceWeights,
) -> Result<DeviceMatrix> {
    if weights == DeviceWeights::Quantized {
        let blocks = parts
            .iter()
            .map(|l| gguf_blocks(l))
            .collect::<Result<Option<Vec<_>>>>()?;
        if let Some(blocks) = blocks.filter(|b| b.iter().all(|(f, _)| *f == b[0].0)) {
            let format = blocks[0].0;
            let rows = parts.iter().map(|l| l.dims().0).sum::<usize>();
            let cols = parts[0].dims().1;
            let data: Vec<u8> = blocks.into_iter().flat_map(|(_, d)| d).collect();
            let storage = QStorage::from_data(Cow::Owned(data), device, format)?;
            let tensor = QTensor::new(storage, (rows, cols))?;
            return Ok(DeviceMatrix::Quantized(QMatMul::from_qtensor(tensor)?));
        }
    }
    let dense = parts
        .iter()
        .map(|l| l.dequantized())
        .collect::<Result<Vec<_>>>()?;
    Ok(DeviceMatrix::Dense(
        Tensor::cat(&dense, 0)?
            .to_dtype(DType::F32)?
            .to_dtype(dtype)?
            .to_device(device)?
            .contiguous()?,
    ))
}

/// The GGUF format and bytes of a block-quantized layer; `None` for dense ones.
fn gguf_blocks(l: &Linear) -> Result<Option<(GgmlDType, Vec<u8>)>> {
    use crate::kernels::PackedFormat;
    Ok(match l {
        Linear::Dense(_) => None,
        Linear::Packed(m) => match m.format() {
            PackedFormat::Q4_1 => Some((GgmlDType::Q4_1, m.to_gguf())),
            PackedFormat::Q8_0 => Some((GgmlDType::Q8_0, m.to_gguf())),
            // Their packed blocks (Q6_K with f16 sub-block scales; Q5_1 / Q5_K values one per
            // byte) are no GGUF type: they run dense.
            PackedFormat::Q6K | PackedFormat::Q5_1 => None,
        },
        Linear::Quantized { weight, .. } => match weight.dtype() {
            // Q8_1 and Q8_K are activation formats: candle's CUDA matmul has no kernel for them
            // as weights, so they run dense like unquantized tensors.
            GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
            | GgmlDType::Q8_1
            | GgmlDType::Q8K => None,
            format => Some((format, weight.data()?.into_owned())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantized(format: GgmlDType) -> Linear {
        let w = Tensor::arange(0f32, 64.0 * 256.0, &Device::Cpu)
            .unwrap()
            .affine(1e-4, -0.5)
            .unwrap()
            .reshape((64, 256))
            .unwrap();
        Linear::quantized(QTensor::quantize(&w, format).unwrap()).unwrap()
    }

    #[test]
    fn weight_formats_keep_blocks_and_activation_formats_run_dense() {
        for (format, blocks) in [
            (GgmlDType::Q4_0, true),
            (GgmlDType::Q4K, true),
            (GgmlDType::Q8_1, false),
            (GgmlDType::Q8K, false),
        ] {
            let l = quantized(format);
            let m = place(&[&l], &Device::Cpu, DType::F32, DeviceWeights::Quantized).unwrap();
            assert_eq!(
                matches!(m, DeviceMatrix::Quantized(_)),
                blocks,
                "{format:?}"
            );
        }
    }
}
