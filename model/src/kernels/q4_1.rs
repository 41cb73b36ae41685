//! `y = x W^T` for GGUF Q4_1 weights: activations are quantized to Q8_1 per block, then each
//! block's dot product is an exact integer (`vpdpbusd` on AVX-512 VNNI, `vpmaddubsw` on AVX2)
//! scaled by `d_w * d_x`, plus `m_w * s_x`. Threads split the weight rows; every output value's
//! arithmetic depends only on its own row of `x`, never on the batch around it.

use half::f16;
use rayon::prelude::*;

use super::q8::{quantize_q8_1, BlockQ8_1, QK};
use super::{kernel_level, KernelLevel};

/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of 4-bit values.
const BLOCK_BYTES: usize = 20;
/// Activation rows per weight-row pass: keeps a tile of quantized activations in L1/L2.
const ROW_TILE: usize = 32;

/// A `(rows, cols)` Q4_1 matrix in GGUF's block layout.
#[derive(Debug, Clone)]
pub struct Q41Matrix {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint output columns (their own weight rows) of the shared buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl Q41Matrix {
    /// Wraps raw GGUF Q4_1 bytes (`rows * cols / 32` blocks).
    pub fn from_bytes(rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        (cols.is_multiple_of(QK) && data.len() == rows * cols / QK * BLOCK_BYTES).then_some(Self {
            rows,
            cols,
            data,
        })
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

    fn row(&self, n: usize) -> &[u8] {
        let len = self.cols / QK * BLOCK_BYTES;
        &self.data[n * len..(n + 1) * len]
    }

    /// The weights as f32, `(rows, cols)` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for block in self.data.chunks_exact(BLOCK_BYTES) {
            let (d, m) = scales(block);
            let qs = &block[4..];
            out.extend(qs.iter().map(|q| (q & 0x0F) as f32 * d + m));
            out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
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
        let threads = rayon::current_num_threads().max(1);
        let rows_per_task = n_total.div_ceil(threads * 4).max(8);
        let ptr = SendPtr(out.as_mut_ptr());
        let ptr = &ptr;
        (0..n_total.div_ceil(rows_per_task))
            .into_par_iter()
            .for_each(|task| {
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
                            row_dots(level, w, &rows, take, &mut vals);
                            for (i, v) in vals.iter().take(take).enumerate() {
                                // SAFETY: row r+i < m and column n < n_total; this task alone
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

#[inline]
fn scales(block: &[u8]) -> (f32, f32) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    (d, m)
}

/// Dot products of one weight row with `take` (1 or 4) activation rows.
#[inline]
fn row_dots(
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
                (KernelLevel::Avx512Vnni, 4) => return x86::dots_vnni::<4>(w, rows, out),
                (KernelLevel::Avx512Vnni, _) => return x86::dots_vnni::<1>(w, rows, out),
                (KernelLevel::Avx2, 4) => return x86::dots_avx2::<4>(w, rows, out),
                (KernelLevel::Avx2, _) => return x86::dots_avx2::<1>(w, rows, out),
                (KernelLevel::Scalar, _) => {}
            }
        }
    }
    let _ = level;
    for r in 0..take {
        out[r] = dot_scalar(w, rows[r]);
    }
}

/// The reference: one block at a time, integer dot product, then scales.
pub(crate) fn dot_scalar(w: &[u8], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (block, a) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let (d, m) = scales(block);
        let qs = &block[4..];
        let mut isum = 0i32;
        for (j, q) in qs.iter().enumerate() {
            isum += (q & 0x0F) as i32 * a.qs[j] as i32;
            isum += (q >> 4) as i32 * a.qs[j + 16] as i32;
        }
        sum += d * a.d * isum as f32 + m * a.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{scales, BlockQ8_1, BLOCK_BYTES};

    #[inline(always)]
    unsafe fn unpack(qs: *const u8) -> __m256i {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub unsafe fn dots_vnni<const R: usize>(
        w: &[u8],
        rows: &[&[BlockQ8_1]; 4],
        out: &mut [f32; 4],
    ) {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for (b, block) in w.chunks_exact(BLOCK_BYTES).enumerate() {
            let (d, m) = scales(block);
            let wv = unpack(block.as_ptr().add(4));
            for r in 0..R {
                let a = rows[r].get_unchecked(b);
                let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, av);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d), acc[r]);
                mins[r] += m * a.s;
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_avx2<const R: usize>(
        w: &[u8],
        rows: &[&[BlockQ8_1]; 4],
        out: &mut [f32; 4],
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for (b, block) in w.chunks_exact(BLOCK_BYTES).enumerate() {
            let (d, m) = scales(block);
            let wv = unpack(block.as_ptr().add(4));
            for r in 0..R {
                let a = rows[r].get_unchecked(b);
                let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d), acc[r]);
                mins[r] += m * a.s;
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    fn random_matrix(rows: usize, cols: usize, seed: &mut u64) -> Q41Matrix {
        let mut data = Vec::new();
        for _ in 0..rows * cols / QK {
            let d = f16::from_f32((lcg(seed) % 1000) as f32 * 1e-5 + 1e-4);
            let m = f16::from_f32(-((lcg(seed) % 1000) as f32) * 1e-4);
            data.extend(d.to_le_bytes());
            data.extend(m.to_le_bytes());
            data.extend((0..16).map(|_| lcg(seed) as u8));
        }
        Q41Matrix::from_bytes(rows, cols, data).unwrap()
    }

    /// Every kernel level against the scalar reference and against dense f32 math, for odd
    /// row counts (tails of the 4-row groups and the 32-row tiles).
    #[test]
    fn kernels_match_the_scalar_reference_on_random_inputs() {
        let mut seed = 3;
        for &(n, k, m) in &[(37, 64, 1), (19, 96, 5), (64, 576, 33), (8, 1536, 70)] {
            let w = random_matrix(n, k, &mut seed);
            let x: Vec<f32> = (0..m * k)
                .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            for level in available_levels() {
                let got = w.matmul_with(level, &x, m);
                let acts = quantize_q8_1(&x, k);
                let dense = w.dequantize();
                let nb = k / QK;
                for r in 0..m {
                    for c in 0..n {
                        let reference = dot_scalar(w.row(c), &acts[r * nb..(r + 1) * nb]);
                        let v = got[r * n + c];
                        // Same integers, different float summation order.
                        assert!(
                            (v - reference).abs() <= 1e-4 * (1.0 + reference.abs()),
                            "{n}x{k}x{m} [{r},{c}] {v} vs {reference}"
                        );
                        let exact: f32 = (0..k).map(|j| x[r * k + j] * dense[c * k + j]).sum();
                        // 8-bit activations: about 1% of the magnitude of the terms.
                        let scale: f32 = (0..k)
                            .map(|j| (x[r * k + j] * dense[c * k + j]).abs())
                            .sum();
                        assert!(
                            (v - exact).abs() <= 0.02 * scale + 1e-4,
                            "{v} vs exact {exact}"
                        );
                    }
                }
            }
        }
    }

    fn available_levels() -> Vec<KernelLevel> {
        let best = kernel_level();
        let mut levels = vec![KernelLevel::Scalar];
        if best != KernelLevel::Scalar {
            levels.push(KernelLevel::Avx2);
        }
        if best == KernelLevel::Avx512Vnni {
            levels.push(KernelLevel::Avx512Vnni);
        }
        levels
    }

    #[test]
    fn a_row_gives_the_same_result_alone_and_in_a_batch() {
        let mut seed = 9;
        let w = random_matrix(24, 128, &mut seed);
        let x: Vec<f32> = (0..9 * 128)
            .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let batch = w.matmul(&x, 9);
        for r in 0..9 {
            let alone = w.matmul(&x[r * 128..(r + 1) * 128], 1);
            assert_eq!(&batch[r * 24..(r + 1) * 24], &alone[..]);
        }
    }
}
