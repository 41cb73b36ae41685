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

    /// GGUF blocks, on this crate's kernels where they serve the format.
    pub fn quantized(weight: QTensor) -> Result<Self> {
        Self::quantized_arc(Arc::new(weight), true)
    }

    /// As [`Self::quantized`]; with `rewrite` false, only formats the kernels take as they are
    /// (Q4_1, Q8_0) are packed and the others keep their GGUF blocks (for a device, which
    /// takes those blocks as they are).
    pub fn quantized_with(weight: QTensor, rewrite: bool) -> Result<Self> {
        Self::quantized_arc(Arc::new(weight), rewrite)
    }

    fn quantized_arc(weight: Arc<QTensor>, rewrite: bool) -> Result<Self> {
        use crate::kernels::{kernel_level, KernelLevel};
        use candle_core::quantized::GgmlDType;
        let (rows, cols) = weight.shape().dims2()?;
        // Rewritten formats pay off only on the SIMD levels; the scalar one is slower than
        // candle's own kernels for them.
        let rewrite = rewrite && kernel_level() != KernelLevel::Scalar;
        let packed = match weight.dtype() {
            GgmlDType::Q4_1 => Some(GgufBlocks::Q4_1),
            GgmlDType::Q8_0 => Some(GgufBlocks::Q8_0),
            GgmlDType::Q4_0 if rewrite => Some(GgufBlocks::Q4_0),
            GgmlDType::Q5_0 if rewrite => Some(GgufBlocks::Q5_0),
            GgmlDType::Q5_1 if rewrite => Some(GgufBlocks::Q5_1),
            GgmlDType::Q4K if rewrite => Some(GgufBlocks::Q4K),
            GgmlDType::Q5K if rewrite => Some(GgufBlocks::Q5K),
            GgmlDType::Q6K if rewrite => Some(GgufBlocks::Q6K),
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
            Self::Packed(m) => packed_dense(m)?,
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
pub(crate) fn project(x: &[f32], n: usize, layers: &[(&Linear, usize)]) -> Result<Vec<Vec<f32>>> {
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
    /// The packed matrix of a tied LM head: one copy of the table serves both.
    Packed(Arc<PackedMatrix>),
}

impl Embedding {
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Dense(w) => w.dims()[0],
            Self::Quantized(q) => q.shape().dims()[0],
            Self::Packed(m) => m.rows(),
        }
    }

    /// Rows for `ids` (a u32 tensor of shape `(n,)`), as `(n, hidden)` f32.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.index_select(ids, 0)?,
            Self::Quantized(q) => q.embedding(ids)?,
            Self::Packed(m) => packed_rows(m, ids)?,
        })
    }

    /// The table as a linear layer (tied LM head).
    pub fn as_linear(&self) -> Result<Linear> {
        self.as_linear_with(true)
    }

    /// As [`Self::as_linear`], `rewrite` as in [`Linear::quantized_with`].
    pub fn as_linear_with(&self, rewrite: bool) -> Result<Linear> {
        match self {
            Self::Dense(w) => Linear::dense(w.clone()),
            Self::Quantized(q) => Linear::quantized_arc(q.clone(), rewrite),
            Self::Packed(m) => Ok(Linear::Packed(m.clone())),
        }
    }

    /// The table and the tied LM head made from it; when the head is packed for the kernels,
    /// the table becomes a view of it, so its weights are held once.
    pub fn tied(self, rewrite: bool) -> Result<(Self, Linear)> {
        let head = self.as_linear_with(rewrite)?;
        let embed = match &head {
            Linear::Packed(m) => Self::Packed(m.clone()),
            _ => self,
        };
        Ok((embed, head))
    }

    pub fn dequantized(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(w) => w.clone(),
            Self::Quantized(q) => q.dequantize(&q.device())?,
            Self::Packed(m) => packed_dense(m)?,
        })
    }

    /// Bytes the table takes in memory (none of its own when it is a tied head's view).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(w) => tensor_bytes(w),
            Self::Quantized(q) => q.storage_size_in_bytes(),
            Self::Packed(_) => 0,
        }
    }
}

/// A packed matrix as a dense f32 `(rows, cols)` tensor.
fn packed_dense(m: &PackedMatrix) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        m.dequantize(),
        (m.rows(), m.cols()),
        &candle_core::Device::Cpu,
    )?)
}

/// Rows `ids` (u32, `(n,)`) of a packed table as `(n, cols)` f32; an id past the table is an
/// error, as candle's lookups give.
fn packed_rows(m: &PackedMatrix, ids: &Tensor) -> Result<Tensor> {
    let ids = ids.to_vec1::<u32>()?;
    let cols = m.cols();
    let mut out = vec![0f32; ids.len() * cols];
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        if id as usize >= m.rows() {
            return Err(crate::error::ModelError::TokenOutOfRange {
                id,
                vocab: m.rows(),
            });
        }
        m.dequantize_row_into(id as usize, row);
    }
    Ok(Tensor::from_vec(
        out,
        (ids.len(), cols),
        &candle_core::Device::Cpu,
    )?)
}

/// Bytes of a dense tensor's elements.
pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::Device;

    /// A tied table served from its packed LM head gives the rows the GGUF table gives, bit for
    /// bit, holds no bytes of its own, and refuses ids past the vocabulary.
    #[test]
    fn a_tied_table_reads_its_rows_from_the_packed_head() {
        let w = Tensor::arange(0f32, 40.0 * 64.0, &Device::Cpu)
            .unwrap()
            .affine(1e-3, -1.2)
            .unwrap()
            .sin()
            .unwrap()
            .reshape((40, 64))
            .unwrap();
        let ids = Tensor::new(&[0u32, 39, 17, 17, 3], &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1, GgmlDType::Q4_0] {
            let table = Embedding::Quantized(Arc::new(QTensor::quantize(&w, dtype).unwrap()));
            let want = table.lookup(&ids).unwrap().to_vec2::<f32>().unwrap();
            let (tied, head) = table.tied(true).unwrap();
            assert!(matches!(tied, Embedding::Packed(_)), "{dtype:?}");
            assert!(matches!(head, Linear::Packed(_)), "{dtype:?}");
            assert_eq!(tied.lookup(&ids).unwrap().to_vec2::<f32>().unwrap(), want);
            assert_eq!(tied.bytes(), 0);
            let past = Tensor::new(&[40u32], &Device::Cpu).unwrap();
            assert!(matches!(
                tied.lookup(&past),
                Err(crate::error::ModelError::TokenOutOfRange { id: 40, vocab: 40 })
            ));
        }
    }
}
