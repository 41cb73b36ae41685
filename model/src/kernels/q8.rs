//! Activations quantized to 8 bits per block of 32 exactly as llama.cpp's x86 `quantize_row_q8_1`
//! does (multiplier `127 / amax`, round half to even, scale and scaled sum stored as f16), so
//! the Q4_1 dot products match llama.cpp's.

use half::f16;

pub(super) const QK: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
pub(crate) struct BlockQ8_1 {
    pub qs: [i8; QK],
    pub d: f32,
    /// `d * sum(qs)`, rounded to f16 (the Q4_1 minimum term).
    pub s: f32,
    /// `-128 * sum(qs)`: kernels that offset signed weights by 128 to make them unsigned start
    /// their integer sum here, which keeps the dot product exact.
    pub offset: i32,
    /// `sum(qs[16..32])`: with `offset`, the half-block sums the Q6K kernels need.
    pub upper_sum: i32,
}

impl BlockQ8_1 {
    /// `-32 * sum(qs[..16])` and `-32 * sum(qs[16..])`: Q6K kernels store their 6-bit weights
    /// `+32` and start each half-block's integer sum here, which keeps it exact.
    #[inline(always)]
    pub(crate) fn q6k_biases(&self) -> (i32, i32) {
        let total = -self.offset / 128;
        (-32 * (total - self.upper_sum), -32 * self.upper_sum)
    }
}

/// Rows below which quantization stays on the calling thread.
const PARALLEL_MIN_ROWS: usize = 8;

/// Quantizes `rows` rows of `cols` floats (`cols` a multiple of 32) into `rows * cols / 32`
/// blocks, row after row; many rows are split across the kernel pool (each block's bits are the
/// same either way).
pub(crate) fn quantize_q8_1(x: &[f32], cols: usize) -> Vec<BlockQ8_1> {
    debug_assert_eq!(cols % QK, 0);
    let mut out = vec![BlockQ8_1::default(); x.len() / QK];
    let rows = x.len() / cols.max(1);
    if rows < PARALLEL_MIN_ROWS {
        quantize_q8_1_into(x, &mut out);
        return out;
    }
    let nb = cols / QK;
    let rows_per_task = rows.div_ceil(16);
    super::par_chunks_mut(&mut out, rows_per_task * nb, |i, chunk| {
        let r0 = i * rows_per_task;
        quantize_q8_1_into(&x[r0 * cols..(r0 + chunk.len() / nb) * cols], chunk);
    });
    out
}

/// [`quantize_q8_1`] into `out` (`x.len() / 32` blocks).
pub(super) fn quantize_q8_1_into(x: &[f32], out: &mut [BlockQ8_1]) {
    #[cfg(target_arch = "x86_64")]
    if super::kernel_level() == super::KernelLevel::Avx512Vnni {
        // SAFETY: the level was chosen by run-time feature detection.
        unsafe { super::packed_x86::quantize_avx512(x, out) };
        return;
    }
    quantize_scalar(x, out);
}

/// The reference quantizer.
pub(crate) fn quantize_scalar(x: &[f32], out: &mut [BlockQ8_1]) {
    for (block, dst) in x.chunks_exact(QK).zip(out) {
        let amax = block
            .iter()
            .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let (mut sum, mut upper_sum) = (0i32, 0i32);
        for (i, (q, &v)) in dst.qs.iter_mut().zip(block).enumerate() {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
            if i >= QK / 2 {
                upper_sum += r;
            }
        }
        dst.d = f16::from_f32(d).to_f32();
        dst.s = f16::from_f32(sum as f32 * d).to_f32();
        dst.offset = -128 * sum;
        dst.upper_sum = upper_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_reconstruct_their_input() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.13)
            .collect();
        let q = quantize_q8_1(&x, 96);
        assert_eq!(q.len(), 3);
        for (b, chunk) in q.iter().zip(x.chunks(32)) {
            for (qi, v) in b.qs.iter().zip(chunk) {
                assert!((*qi as f32 * b.d - v).abs() <= b.d * 0.51 + 1e-3);
            }
            let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
            assert!((b.s - sum as f32 * b.d).abs() < 1e-2);
            assert_eq!(b.offset, -128 * sum);
            assert_eq!(
                b.upper_sum,
                b.qs[16..].iter().map(|&v| v as i32).sum::<i32>()
            );
        }
    }

    #[test]
    fn every_level_quantizes_to_the_same_bits() {
        let mut seed = 1u64;
        let mut x: Vec<f32> = (0..32 * 40)
            .map(|i| crate::test_random::uniform(&mut seed) * (1 + i % 7) as f32)
            .collect();
        x[32..64].fill(0.0);
        x[64..96]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 15.5);
        let mut want = vec![BlockQ8_1::default(); 40];
        quantize_scalar(&x, &mut want);
        let got = quantize_q8_1(&x, 32 * 4);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.qs, g.d.to_bits(), g.s.to_bits(), g.offset, g.upper_sum),
                (w.qs, w.d.to_bits(), w.s.to_bits(), w.offset, w.upper_sum)
            );
        }
    }
}
