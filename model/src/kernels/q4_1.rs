//! GGUF Q4_1 weights (f16 scale, f16 minimum, 32 four-bit values per block) against Q8_1
//! activations: `d_w d_x sum(q_w q_x) + m_w s_x`, the integer part on `vpdpbusd` (AVX-512 VNNI)
//! or `vpmaddubsw` (AVX2).

use half::f16;

use super::matrix::{BlockFormat, QuantMatrix};
use super::q8::BlockQ8_1;

pub struct Q41;

pub type Q41Matrix = QuantMatrix<Q41>;

const BLOCK_BYTES: usize = 20;

#[inline]
fn scales(block: &[u8]) -> (f32, f32) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    (d, m)
}

impl BlockFormat for Q41 {
    const NAME: &'static str = "Q4_1";
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
            let (d, m) = scales(block);
            let mut isum = 0i32;
            for (j, q) in block[4..].iter().enumerate() {
                isum += (q & 0x0F) as i32 * a.qs[j] as i32;
                isum += (q >> 4) as i32 * a.qs[j + 16] as i32;
            }
            sum += d * a.d * isum as f32 + m * a.s;
        }
        sum
    }

    fn dequantize_block(block: &[u8], out: &mut Vec<f32>) {
        let (d, m) = scales(block);
        let qs = &block[4..];
        out.extend(qs.iter().map(|q| (q & 0x0F) as f32 * d + m));
        out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86_common::{hsum, udot};
    use super::{scales, BlockQ8_1, BLOCK_BYTES};

    #[inline(always)]
    unsafe fn unpack(qs: *const u8) -> __m256i {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    crate::kernels::x86_common::simd_entry_points!();

    #[inline(always)]
    unsafe fn dots<const R: usize, const VNNI: bool>(
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
                let dot = udot::<VNNI>(wv, av);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * a.d), acc[r]);
                mins[r] += m * a.s;
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }
}
