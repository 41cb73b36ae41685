//! Linear layers and embeddings over dense or quantized weights.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::sync::Arc;

use crate::error::Result;
use crate::kernels::{matmul_jobs, quantize_q8_1, GgufBlocks, MatmulJob, PackedMatrix};

/// `y = x W^T` with `W` of shape `(out, in)`, dense or quantized (GGUF blocks).
#[derive(Debug, Clone)]
pub enum Linear {
    Dense(Tensor),
    Quantized {
        weight: Arc<QTensor>,
        matmul: QMatMul,
    },
    /// Q4_1 / Q8_0 weights repacked for this crate's SIMD kernels (candle's Q4_1 path is
    /// scalar); Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K rewritten into packed formats
    /// (`kernels::repack`).
    Packed(Arc<PackedMatrix>),
}

impl Linear {
    pub fn dense(weight: Tensor) -> Result<Self> {
        Ok(Self::Dense(weight.to_dtype(DType::F32)?.contiguous()?))
    }

    pub fn quantized(weight: QTensor) -> Result<Self> {
        Self::quantized_arc(Arc::new(weight))
    }

    fn quantized_arc(weight: Arc<QTensor>) -> Result<Self> {
        use candle_core::quantized::GgmlDType;
        let (rows, cols) = weight.shape().dims2()?;
        let packed = match weight.dtype() {
            GgmlDType::Q4_0 => Some(GgufBlocks::Q4_0),
            GgmlDType::Q4_1 => Some(GgufBlocks::Q4_1),
            GgmlDType::Q5_0 => Some(GgufBlocks::Q5_0),
            GgmlDType::Q8_0 => Some(GgufBlocks::Q8_0),
            GgmlDType::Q4K => Some(GgufBlocks::Q4K),
            GgmlDType::Q6K => Some(GgufBlocks::Q6K),
            GgmlDType::Q5_1 => Some(GgufBlocks::Q5_1),
            GgmlDType::Q5K => Some(GgufBlocks::Q5K),
            _ => None,
        };
        if let Some(kind) = packed.filter(|_| weight.device().is_cpu()) {
            if let Some(m) = PackedMatrix::from_gguf_blocks(kind, rows, cols, &weight.data()?) {
                return Ok(Self::Packed(Arc::new(m)));
            }
        }
        let matmul = QMatMul::from_arc(weight.clone())?;
        Ok(Self::Quantized { weight, matmul })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        let dims = match self {
            Self::Dense(w) => w.dims(),
            Self::Quantized { weight, .. } => weight.shape().dims(),
            Self::Packed(m) => return (m.rows(), m.cols()),
        };
        (dims[0], dims[1])
    }

    /// `x` is `(n, in)`; returns `(n, out)` in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => x.matmul(&w.t()?)?,
            Self::Quantized { matmul, .. } => matmul.forward(x)?,
            Self::Packed(m) => packed_forward(m, x)?,
        })
    }

    /// The weight as a dense f32 `(out, in)` tensor.
    pub fn dequantized(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.clone(),
            Self::Quantized { weight, .. } => weight.dequantize(&weight.device())?,
            Self::Packed(m) => Tensor::from_vec(
                m.dequantize(),
                (m.rows(), m.cols()),
                &candle_core::Device::Cpu,
            )?,
        })
    }

    /// Bytes the weights take in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(w) => tensor_bytes(w),
            Self::Quantized { weight, .. } => weight.storage_size_in_bytes(),
            Self::Packed(m) => m.bytes(),
        }
    }

    /// Storage name, e.g. "f32" or "q4_1".
    pub fn format(&self) -> String {
        match self {
            Self::Dense(w) => format!("{:?}", w.dtype()).to_lowercase(),
            Self::Quantized { weight, .. } => format!("{:?}", weight.dtype()).to_lowercase(),
            Self::Packed(m) => m.source_format().into(),
        }
    }
}

fn packed_forward(m: &PackedMatrix, x: &Tensor) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    let input = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Tensor::from_vec(
        m.matmul(&input, n),
        (n, m.rows()),
        x.device(),
    )?)
}

/// Projections of the same input: `x` holds `n` rows of `in` floats; each layer is applied to
/// the first `rows` of them. Packed layers quantize `x` once and run in one parallel region.
pub fn project(x: &[f32], n: usize, layers: &[(&Linear, usize)]) -> Result<Vec<Vec<f32>>> {
    let packed: Option<Vec<&PackedMatrix>> = layers
        .iter()
        .map(|(l, _)| match l {
            Linear::Packed(m) => Some(m.as_ref()),
            _ => None,
        })
        .collect();
    let cols = x.len() / n.max(1);
    let Some(packed) = packed.filter(|p| p.iter().all(|m| m.cols() == cols)) else {
        return layers
            .iter()
            .map(|(l, rows)| {
                let input = Tensor::from_slice(
                    &x[..rows * cols],
                    (*rows, cols),
                    &candle_core::Device::Cpu,
                )?;
                Ok(l.forward(&input)?.flatten_all()?.to_vec1::<f32>()?)
            })
            .collect();
    };
    let used = layers.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let acts = quantize_q8_1(&x[..used * cols], cols);
    let mut outs: Vec<Vec<f32>> = layers
        .iter()
        .zip(&packed)
        .map(|((_, rows), m)| vec![0f32; rows * m.rows()])
        .collect();
    let mut jobs: Vec<MatmulJob<'_>> = packed
        .iter()
        .zip(layers)
        .zip(outs.iter_mut())
        .map(|((matrix, (_, rows)), out)| MatmulJob {
            matrix,
            rows: *rows,
            out,
        })
        .collect();
    matmul_jobs(&acts, &mut jobs);
    Ok(outs)
}

/// Token embedding table `(vocab, hidden)`.
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Dense(w) => w.dims()[0],
            Self::Quantized(q) => q.shape().dims()[0],
        }
    }

    /// Rows for `ids` (a u32 tensor of shape `(n,)`), as `(n, hidden)` f32.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.index_select(ids, 0)?,
            Self::Quantized(q) => q.embedding(ids)?,
        })
    }

    /// The table as a linear layer (tied LM head).
    pub fn as_linear(&self) -> Result<Linear> {
        match self {
            Self::Dense(w) => Linear::dense(w.clone()),
            Self::Quantized(q) => Linear::quantized_arc(q.clone()),
        }
    }

    pub fn dequantized(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.clone(),
            Self::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// Bytes the table takes in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(w) => tensor_bytes(w),
            Self::Quantized(q) => q.storage_size_in_bytes(),
        }
    }
}

/// Bytes of a dense tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}
