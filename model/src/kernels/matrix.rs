//! `y = x W^T` for block-quantized weights in GGUF layout. Activations are quantized to 8 bits
//! per block of 32 (as llama.cpp does); each block's dot product is an exact integer scaled by
//! the block scales. Threads split the weight rows; every output value's arithmetic depends only
//! on its own row of `x`, never on the batch around it.

use std::marker::PhantomData;

use super::pool::SpinPool;
use super::q8::{quantize_q8_1, BlockQ8_1, QK};
use super::{kernel_level, KernelLevel};

/// Activation rows per weight-row pass: keeps a tile of quantized activations in cache.
const ROW_TILE: usize = 32;

/// A GGUF block format and its dot-product kernels.
pub trait BlockFormat: Send + Sync + 'static {
    const NAME: &'static str;
    const BLOCK_BYTES: usize;
    /// Dot products of one weight row with `R` activation rows (AVX-512 VNNI).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, AVX-512 VNNI and AVX-512 VL.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dots_vnni<const R: usize>(w: &[u8], rows: &[&[BlockQ8_1]; 4], out: &mut [f32; 4]);
    /// The same with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dots_avx2<const R: usize>(w: &[u8], rows: &[&[BlockQ8_1]; 4], out: &mut [f32; 4]);
    /// The reference: one block at a time, integer dot product, then scales.
    fn dot_scalar(w: &[u8], x: &[BlockQ8_1]) -> f32;
    fn dequantize_block(block: &[u8], out: &mut Vec<f32>);
}

/// Dot products of one weight row with `take` (1 or 4) activation rows at `level`.
#[inline]
fn dots<F: BlockFormat>(
    level: KernelLevel,
    w: &[u8],
    rows: &[&[BlockQ8_1]; 4],
    take: usize,
    out: &mut [f32; 4],
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the level was chosen by run-time feature detection.
        unsafe {
            match (level, take) {
                (KernelLevel::Avx512Vnni, 4) => return F::dots_vnni::<4>(w, rows, out),
                (KernelLevel::Avx512Vnni, _) => return F::dots_vnni::<1>(w, rows, out),
                (KernelLevel::Avx2, 4) => return F::dots_avx2::<4>(w, rows, out),
                (KernelLevel::Avx2, _) => return F::dots_avx2::<1>(w, rows, out),
                (KernelLevel::Scalar, _) => {}
            }
        }
    }
    let _ = level;
    for r in 0..take {
        out[r] = F::dot_scalar(w, rows[r]);
    }
}

/// A `(rows, cols)` matrix of `F` blocks.
pub struct QuantMatrix<F: BlockFormat> {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    format: PhantomData<F>,
}

impl<F: BlockFormat> std::fmt::Debug for QuantMatrix<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}Matrix({}x{})", F::NAME, self.rows, self.cols)
    }
}

struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint output columns (their own weight rows) of the shared buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl<F: BlockFormat> QuantMatrix<F> {
    /// Wraps raw GGUF bytes (`rows * cols / 32` blocks).
    pub fn from_bytes(rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        (cols.is_multiple_of(QK) && data.len() == rows * cols / QK * F::BLOCK_BYTES).then_some(
            Self {
                rows,
                cols,
                data,
                format: PhantomData,
            },
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub(crate) fn row(&self, n: usize) -> &[u8] {
        let len = self.cols / QK * F::BLOCK_BYTES;
        &self.data[n * len..(n + 1) * len]
    }

    /// The weights as f32, `(rows, cols)` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for block in self.data.chunks_exact(F::BLOCK_BYTES) {
            F::dequantize_block(block, &mut out);
        }
        out
    }

    /// `x` holds `m` rows of `cols` floats; returns `m` rows of `rows` floats.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(kernel_level(), x, m)
    }

    pub(crate) fn matmul_with(&self, level: KernelLevel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "activation shape");
        let acts = quantize_q8_1(x, self.cols);
        let nb = self.cols / QK;
        let n_total = self.rows;
        let mut out = vec![0f32; m * n_total];
        let pool = SpinPool::global();
        let rows_per_task = n_total.div_ceil(pool.threads() * 4).max(8);
        let ptr = SendPtr(out.as_mut_ptr());
        let ptr = &ptr;
        let acts = &acts;
        pool.run(n_total.div_ceil(rows_per_task), &|task| {
            let n0 = task * rows_per_task;
            let n1 = (n0 + rows_per_task).min(n_total);
            for tile in (0..m).step_by(ROW_TILE) {
                let tile_end = (tile + ROW_TILE).min(m);
                for n in n0..n1 {
                    let w = self.row(n);
                    let mut r = tile;
                    while r < tile_end {
                        let take = if tile_end - r >= 4 { 4 } else { 1 };
                        let mut vals = [0f32; 4];
                        let rows: [&[BlockQ8_1]; 4] = std::array::from_fn(|i| {
                            let rr = (r + i).min(tile_end - 1);
                            &acts[rr * nb..(rr + 1) * nb]
                        });
                        dots::<F>(level, w, &rows, take, &mut vals);
                        for (i, v) in vals.iter().take(take).enumerate() {
                            // SAFETY: row r+i < m and column n < n_total; only this task
                            // writes column n.
                            unsafe { *ptr.0.add((r + i) * n_total + n) = *v };
                        }
                        r += take;
                    }
                }
            }
        });
        out
    }
}
