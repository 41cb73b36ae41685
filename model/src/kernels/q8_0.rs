//! GGUF Q8_0 weights (f16 scale, 32 signed bytes per block) against 8-bit activations:
//! `d_w d_x sum(q_w q_x)`. The signed product goes through the unsigned-by-signed instruction
//! as `|q_w| * (sign(q_w) q_x)`.

use half::f16;

use super::matrix::{BlockFormat, QuantMatrix};
use super::q8::BlockQ8_1;

pub struct Q80;

pub type Q80Matrix = QuantMatrix<Q80>;

const BLOCK_BYTES: usize = 34;

#[inline]
fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

impl BlockFormat for Q80 {
    const NAME: &'static str = "Q8_0";
    const BLOCK_BYTES: usize = BLOCK_BYTES;

    #[cfg(target_arch = "x86_64")]
    unsafe fn dots_vnni<const R: usize>(w: &[u8], rows: &[&[BlockQ8_1]; 4], out: &mut [f32; 4]) {
        x86::dots_vnni::<R>(w, rows, out)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dots_avx2<const R: usize>(w: &[u8], rows: &[&[BlockQ8_1]; 4], out: &mut [f32; 4]) {
        x86::dots_avx2::<R>(w, rows, out)
    }

    fn dot_scalar(w: &[u8], x: &[BlockQ8_1]) -> f32 {
        let mut sum = 0f32;
        for (block, a) in w.chunks_exact(BLOCK_BYTES).zip(x) {
            let isum: i32 = block[2..]
                .iter()
                .zip(&a.qs)
                .map(|(&q, &v)| q as i8 as i32 * v as i32)
                .sum();
            sum += scale(block) * a.d * isum as f32;
        }
        sum
    }

    fn dequantize_block(block: &[u8], out: &mut Vec<f32>) {
        let d = scale(block);
        out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86_common::{hsum, udot};
    use super::{scale, BlockQ8_1, BLOCK_BYTES};

    crate::kernels::x86_common::simd_entry_points!();

    #[inline(always)]
    unsafe fn dots<const R: usize, const VNNI: bool>(
        w: &[u8],
        rows: &[&[BlockQ8_1]; 4],
        out: &mut [f32; 4],
    ) {
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, block) in w.chunks_exact(BLOCK_BYTES).enumerate() {
            let d = scale(block);
            let wv = _mm256_loadu_si256(block.as_ptr().add(2) as *const __m256i);
            let abs_w = _mm256_sign_epi8(wv, wv);
            for r in 0..R {
                let a = rows[r].get_unchecked(b);
                let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let dot = udot::<VNNI>(abs_w, _mm256_sign_epi8(av, wv));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d), acc[r]);
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]);
        }
    }
}
