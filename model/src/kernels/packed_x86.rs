//! x86 kernels over the packed layout (`packed.rs`): `R` activation rows against one 16-row
//! group. AVX-512 VNNI runs one `vpdpbusd` per four values of 16 rows; AVX2 runs the group as
//! two halves of 8 rows with `vpmaddubsw` + `vpmaddwd`. Integer block sums are exact, and the
//! float steps are the reference's fused multiply-adds in the same order, so every level gives
//! the reference's bits.

use std::arch::x86_64::*;

use super::packed::{PackedFormat, GROUP};
use super::q8::BlockQ8_1;

/// Activations `4j..4j+4` of a block, in every 32-bit lane.
#[inline(always)]
unsafe fn broadcast4_512(a: &BlockQ8_1, j: usize) -> __m512i {
    _mm512_set1_epi32((a.qs.as_ptr().add(4 * j) as *const i32).read_unaligned())
}

#[inline(always)]
unsafe fn broadcast4_256(a: &BlockQ8_1, j: usize) -> __m256i {
    _mm256_set1_epi32((a.qs.as_ptr().add(4 * j) as *const i32).read_unaligned())
}

/// The 8 chunks of 64 bytes of a Q8_0 / Q6K / Q5_1 (group, block).
#[inline(always)]
unsafe fn load_chunks_512(q: *const u8) -> [__m512i; 8] {
    std::array::from_fn(|j| _mm512_loadu_si512(q.add(64 * j) as *const _))
}

/// The same chunks' 32-byte halves at `q` (8 rows of each).
#[inline(always)]
unsafe fn load_chunks_256(q: *const u8) -> [__m256i; 8] {
    std::array::from_fn(|j| _mm256_loadu_si256(q.add(64 * j) as *const _))
}

/// The 16 f16 scales at `s` and the 16 after them (`d` and `m`, or `d_lo` and `d_hi`).
#[inline(always)]
unsafe fn scale_pair_512(s: *const u16) -> (__m512, __m512) {
    (
        _mm512_cvtph_ps(_mm256_loadu_si256(s as *const _)),
        _mm512_cvtph_ps(_mm256_loadu_si256(s.add(16) as *const _)),
    )
}

/// 8 f16 scales at `s` and the 8 at `s + 16`: one half of a 16-row group's pair.
#[inline(always)]
unsafe fn scale_pair_256(s: *const u16) -> (__m256, __m256) {
    (
        _mm256_cvtph_ps(_mm_loadu_si128(s as *const _)),
        _mm256_cvtph_ps(_mm_loadu_si128(s.add(16) as *const _)),
    )
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI, AVX2, FMA and F16C; `quants`/`scales` hold whole
/// (group, block) units of `format` and every activation row at least as many blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_avx512<const R: usize>(
    format: PackedFormat,
    quants: &[u8],
    scales: &[u16],
    acts: [&[BlockQ8_1]; R],
) -> [[f32; GROUP]; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    let (qp, sp) = (quants.as_ptr(), scales.as_ptr());
    let zero = _mm512_setzero_si512();
    match format {
        PackedFormat::Q4_1 => {
            let mask = _mm512_set1_epi8(0x0F);
            for b in 0..quants.len() / 256 {
                let q = qp.add(b * 256);
                let w: [__m512i; 4] =
                    std::array::from_fn(|p| _mm512_loadu_si512(q.add(64 * p) as *const _));
                let lo = w.map(|v| _mm512_and_si512(v, mask));
                let hi = w.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask));
                let (d, m) = scale_pair_512(sp.add(b * 32));
                for r in 0..R {
                    let a = acts[r].get_unchecked(b);
                    let mut s0 = _mm512_dpbusd_epi32(zero, lo[0], broadcast4_512(a, 0));
                    let mut s1 = _mm512_dpbusd_epi32(zero, hi[0], broadcast4_512(a, 4));
                    for p in 1..4 {
                        s0 = _mm512_dpbusd_epi32(s0, lo[p], broadcast4_512(a, p));
                        s1 = _mm512_dpbusd_epi32(s1, hi[p], broadcast4_512(a, 4 + p));
                    }
                    let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
                    acc[r] = _mm512_fmadd_ps(isum, scale, acc[r]);
                    acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s), acc[r]);
                }
            }
        }
        PackedFormat::Q8_0 => {
            for b in 0..quants.len() / 512 {
                let q = qp.add(b * 512);
                let w = load_chunks_512(q);
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(sp.add(b * 16) as *const _));
                for r in 0..R {
                    let a = acts[r].get_unchecked(b);
                    let mut s0 = _mm512_dpbusd_epi32(
                        _mm512_set1_epi32(a.offset),
                        w[0],
                        broadcast4_512(a, 0),
                    );
                    let mut s1 = _mm512_dpbusd_epi32(zero, w[4], broadcast4_512(a, 4));
                    for j in 1..4 {
                        s0 = _mm512_dpbusd_epi32(s0, w[j], broadcast4_512(a, j));
                        s1 = _mm512_dpbusd_epi32(s1, w[4 + j], broadcast4_512(a, 4 + j));
                    }
                    let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
                    acc[r] = _mm512_fmadd_ps(isum, scale, acc[r]);
                }
            }
        }
        PackedFormat::Q6K => {
            for b in 0..quants.len() / 512 {
                let q = qp.add(b * 512);
                let w = load_chunks_512(q);
                let (d_lo, d_hi) = scale_pair_512(sp.add(b * 32));
                for r in 0..R {
                    let a = acts[r].get_unchecked(b);
                    let (lo_bias, hi_bias) = a.q6k_biases();
                    let mut lo =
                        _mm512_dpbusd_epi32(_mm512_set1_epi32(lo_bias), w[0], broadcast4_512(a, 0));
                    let mut hi =
                        _mm512_dpbusd_epi32(_mm512_set1_epi32(hi_bias), w[4], broadcast4_512(a, 4));
                    for j in 1..4 {
                        lo = _mm512_dpbusd_epi32(lo, w[j], broadcast4_512(a, j));
                        hi = _mm512_dpbusd_epi32(hi, w[4 + j], broadcast4_512(a, 4 + j));
                    }
                    let x_d = _mm512_set1_ps(a.d);
                    let lo_scale = _mm512_mul_ps(d_lo, x_d);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), lo_scale, acc[r]);
                    let hi_scale = _mm512_mul_ps(d_hi, x_d);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), hi_scale, acc[r]);
                }
            }
        }
        PackedFormat::Q5_1 => {
            for b in 0..quants.len() / 512 {
                let q = qp.add(b * 512);
                let w = load_chunks_512(q);
                let (d, m) = scale_pair_512(sp.add(b * 32));
                for r in 0..R {
                    let a = acts[r].get_unchecked(b);
                    let mut s0 = _mm512_dpbusd_epi32(zero, w[0], broadcast4_512(a, 0));
                    let mut s1 = _mm512_dpbusd_epi32(zero, w[4], broadcast4_512(a, 4));
                    for j in 1..4 {
                        s0 = _mm512_dpbusd_epi32(s0, w[j], broadcast4_512(a, j));
                        s1 = _mm512_dpbusd_epi32(s1, w[4 + j], broadcast4_512(a, 4 + j));
                    }
                    let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
                    acc[r] = _mm512_fmadd_ps(isum, scale, acc[r]);
                    acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s), acc[r]);
                }
            }
        }
    }
    let mut out = [[0f32; GROUP]; R];
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
    out
}

/// Sum over groups of four `u8 x i8` products into eight i32 lanes; exact while every pair of
/// products fits i16 (unsigned values of at most 15 against signed bytes).
#[inline(always)]
unsafe fn udot_256(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; the slices as for [`tile_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_avx2<const R: usize>(
    format: PackedFormat,
    quants: &[u8],
    scales: &[u16],
    acts: [&[BlockQ8_1]; R],
) -> [[f32; GROUP]; R] {
    let mut out = [[0f32; GROUP]; R];
    let (qp, sp) = (quants.as_ptr(), scales.as_ptr());
    let mask = _mm256_set1_epi8(0x0F);
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        match format {
            PackedFormat::Q4_1 => {
                for b in 0..quants.len() / 256 {
                    let q = qp.add(b * 256 + 32 * half);
                    let w: [__m256i; 4] =
                        std::array::from_fn(|p| _mm256_loadu_si256(q.add(64 * p) as *const _));
                    let lo = w.map(|v| _mm256_and_si256(v, mask));
                    let hi = w.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask));
                    let (d, m) = scale_pair_256(sp.add(b * 32 + 8 * half));
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let mut isum = _mm256_setzero_si256();
                        for p in 0..4 {
                            isum = _mm256_add_epi32(isum, udot_256(lo[p], broadcast4_256(a, p)));
                            isum =
                                _mm256_add_epi32(isum, udot_256(hi[p], broadcast4_256(a, 4 + p)));
                        }
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                        acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s), acc[r]);
                    }
                }
            }
            PackedFormat::Q8_0 => {
                for b in 0..quants.len() / 512 {
                    let q = qp.add(b * 512 + 32 * half);
                    let w = load_chunks_256(q);
                    // Values up to 255 overflow `vpmaddubsw`'s i16 pairs: split into nibbles.
                    let lo = w.map(|v| _mm256_and_si256(v, mask));
                    let hi = w.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask));
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(b * 16 + 8 * half) as *const _));
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let (mut lsum, mut hsum) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                        for j in 0..8 {
                            let x = broadcast4_256(a, j);
                            lsum = _mm256_add_epi32(lsum, udot_256(lo[j], x));
                            hsum = _mm256_add_epi32(hsum, udot_256(hi[j], x));
                        }
                        let isum = _mm256_add_epi32(
                            _mm256_add_epi32(lsum, _mm256_slli_epi32::<4>(hsum)),
                            _mm256_set1_epi32(a.offset),
                        );
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                    }
                }
            }
            PackedFormat::Q6K => {
                for b in 0..quants.len() / 512 {
                    let q = qp.add(b * 512 + 32 * half);
                    // Values up to 63: `vpmaddubsw`'s i16 pairs cannot overflow.
                    let w = load_chunks_256(q);
                    let (d_lo, d_hi) = scale_pair_256(sp.add(b * 32 + 8 * half));
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let (lo_bias, hi_bias) = a.q6k_biases();
                        let (mut lo, mut hi) =
                            (_mm256_set1_epi32(lo_bias), _mm256_set1_epi32(hi_bias));
                        for j in 0..4 {
                            lo = _mm256_add_epi32(lo, udot_256(w[j], broadcast4_256(a, j)));
                            hi = _mm256_add_epi32(hi, udot_256(w[4 + j], broadcast4_256(a, 4 + j)));
                        }
                        let x_d = _mm256_set1_ps(a.d);
                        let lo_scale = _mm256_mul_ps(d_lo, x_d);
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), lo_scale, acc[r]);
                        let hi_scale = _mm256_mul_ps(d_hi, x_d);
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), hi_scale, acc[r]);
                    }
                }
            }
            PackedFormat::Q5_1 => {
                for b in 0..quants.len() / 512 {
                    let q = qp.add(b * 512 + 32 * half);
                    // Values up to 31: `vpmaddubsw`'s i16 pairs cannot overflow.
                    let w = load_chunks_256(q);
                    let (d, m) = scale_pair_256(sp.add(b * 32 + 8 * half));
                    for r in 0..R {
                        let a = acts[r].get_unchecked(b);
                        let mut isum = _mm256_setzero_si256();
                        for (j, &wj) in w.iter().enumerate() {
                            isum = _mm256_add_epi32(isum, udot_256(wj, broadcast4_256(a, j)));
                        }
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                        acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s), acc[r]);
                    }
                }
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * half), acc[r]);
        }
    }
    out
}

/// [`super::q8::quantize_scalar`] with 512-bit vectors: the same multiplier, the conversion
/// rounds half to even like `round_ties_even`, so the blocks are bit-identical.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn quantize_avx512(x: &[f32], out: &mut [BlockQ8_1]) {
    use half::f16;
    for (block, dst) in x.chunks_exact(32).zip(out) {
        let v0 = _mm512_loadu_ps(block.as_ptr());
        let v1 = _mm512_loadu_ps(block.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        let qs = dst.qs.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(qs.add(1), _mm512_cvtepi32_epi8(q1));
        dst.d = f16::from_f32(d).to_f32();
        dst.s = f16::from_f32(sum as f32 * d).to_f32();
        dst.offset = -128 * sum;
        dst.upper_sum = _mm512_reduce_add_epi32(q1);
    }
}
