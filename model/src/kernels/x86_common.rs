//! x86 helpers shared by the block kernels; inlined into callers compiled with the features.

use std::arch::x86_64::*;

/// Sum over groups of four `u8 x i8` products into eight i32 lanes.
#[inline(always)]
pub unsafe fn udot<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    } else {
        // Each i16 pair sum is at most 2 * 255 * 127, within i16 for the operands used here
        // (4-bit weights, or absolute values of 8-bit ones against signed activations of at
        // most 127 in magnitude: 2 * 127 * 127 < 32768).
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

#[inline(always)]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Defines `dots_vnni::<R>` and `dots_avx2::<R>`, the feature-enabled entry points of a block
/// format, around the format's `#[inline(always)] dots::<R, VNNI>` body in the same module.
macro_rules! simd_entry_points {
    () => {
        #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
        pub unsafe fn dots_vnni<const R: usize>(
            w: &[u8],
            rows: &[&[BlockQ8_1]; 4],
            out: &mut [f32; 4],
        ) {
            dots::<R, true>(w, rows, out)
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dots_avx2<const R: usize>(
            w: &[u8],
            rows: &[&[BlockQ8_1]; 4],
            out: &mut [f32; 4],
        ) {
            dots::<R, false>(w, rows, out)
        }
    };
}
pub(crate) use simd_entry_points;
