//! GGUF formats without a kernel of their own, rewritten at load into the blocks of one that
//! has (the common 4- and 5-bit formats would otherwise run on candle's slower kernels):
//! - Q4_0 (`d (q - 8)`) as Q4_1 with `m = -8 d`: exact (scaling an f16 by 8 is exact short of
//!   overflow, which is refused);
//! - Q5_0 (`d (q - 16)`, 5-bit `q`) as Q8_0 with the same `d`: exact; 34 bytes per 32 values
//!   instead of 22;
//! - Q4_K (super-blocks of 256 values: 8 sub-blocks of 32 with 6-bit scale and min under f16
//!   `d` and `dmin`) as Q4_1 with `d' = f16(d sc)` and `m' = f16(-dmin m)`: those products are
//!   rounded to f16 (relative 2^-11), which moves a weight by under 1% of its quantization step;
//!   20 bytes per 32 values instead of 18;
//! - Q6_K (super-blocks of 256 values: 16 sub-blocks of 16 with an 8-bit scale under f16 `d`,
//!   6-bit values biased by 32) as the packed Q6K format: each pair of sub-blocks is one block
//!   with `d_lo = f16(d sc_lo)` and `d_hi = f16(d sc_hi)` (rounded as Q4_K's), values as they
//!   are; 36 bytes per 32 values instead of 26.25;
//! - Q5_1 (`d q + m`, 5-bit `q`) as the packed Q5_1 format (one value per byte): exact; 36 bytes
//!   per 32 values instead of 24;
//! - Q5_K (as Q4_K with 5-bit values) as packed Q5_1 with `d'`, `m'` rounded as Q4_K's; 36
//!   bytes per 32 values instead of 22.
//!
//! Each function returns the target format's GGUF bytes, or `None` when the data does not fit
//! (length, or a scale that overflows f16), so the caller keeps candle's kernels.

use half::f16;

use super::packed::{PackedFormat, PackedMatrix};
use super::q8::QK;

/// GGUF block formats the packed kernels serve, directly or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufBlocks {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
    Q5_1,
    Q5K,
}

impl GgufBlocks {
    fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4k",
            Self::Q6K => "q6k",
            Self::Q5_1 => "q5_1",
            Self::Q5K => "q5k",
        }
    }
}

const Q4_0_BYTES: usize = 18;
const Q5_0_BYTES: usize = 22;
const Q4K_BYTES: usize = 144;
const Q6K_BYTES: usize = 210;
const Q5_1_BYTES: usize = 24;
const Q5K_BYTES: usize = 176;
const QK_K: usize = 256;

impl PackedMatrix {
    /// Packs `rows * cols` values of GGUF blocks of `kind`, row after row; `None` when the
    /// sizes or scales do not fit.
    pub fn from_gguf_blocks(
        kind: GgufBlocks,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Option<Self> {
        let (format, rewritten) = match kind {
            GgufBlocks::Q4_1 => return Self::from_gguf(PackedFormat::Q4_1, rows, cols, data),
            GgufBlocks::Q8_0 => return Self::from_gguf(PackedFormat::Q8_0, rows, cols, data),
            GgufBlocks::Q4_0 => (PackedFormat::Q4_1, q4_0_as_q4_1(data)?),
            GgufBlocks::Q5_0 => (PackedFormat::Q8_0, q5_0_as_q8_0(data)?),
            GgufBlocks::Q4K | GgufBlocks::Q5K | GgufBlocks::Q6K if !cols.is_multiple_of(QK_K) => {
                return None
            }
            GgufBlocks::Q4K => (PackedFormat::Q4_1, q4k_as_q4_1(data)?),
            GgufBlocks::Q6K => (PackedFormat::Q6K, q6k_as_pairs(data)?),
            GgufBlocks::Q5_1 => (PackedFormat::Q5_1, q5_1_as_bytes(data)?),
            GgufBlocks::Q5K => (PackedFormat::Q5_1, q5k_as_q5_1(data)?),
        };
        Some(Self::from_gguf(format, rows, cols, &rewritten)?.with_source(kind.name()))
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// `x` as f16 when that is exact or merely rounded, `None` when it is not finite.
fn finite_f16(x: f32) -> Option<f16> {
    let h = f16::from_f32(x);
    h.is_finite().then_some(h)
}

/// Each `block_bytes` block of `data` written by `write` (its output block: `out_bytes`);
/// `None` when the length is not whole blocks or `write` refuses one.
fn rewrite(
    data: &[u8],
    block_bytes: usize,
    out_bytes: usize,
    mut write: impl FnMut(&[u8], &mut Vec<u8>) -> Option<()>,
) -> Option<Vec<u8>> {
    if !data.len().is_multiple_of(block_bytes) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / block_bytes * out_bytes);
    for block in data.chunks_exact(block_bytes) {
        write(block, &mut out)?;
    }
    Some(out)
}

fn q4_0_as_q4_1(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q4_0_BYTES, 20, |block, out| {
        let d = f16_at(block, 0);
        let m = finite_f16(-8.0 * d.to_f32())?;
        out.extend(d.to_le_bytes());
        out.extend(m.to_le_bytes());
        // Same nibble order: low nibbles are values 0..16, high nibbles 16..32.
        out.extend_from_slice(&block[2..]);
        Some(())
    })
}

fn q5_0_as_q8_0(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q5_0_BYTES, 34, |block, out| {
        out.extend_from_slice(&block[..2]);
        out.extend(five_bit_values(&block[2..]).map(|q| (q as i8 - 16) as u8));
        Some(())
    })
}

/// The 32 values `0..32` of a Q5_0 / Q5_1 block from its high bits (`u32`) and nibbles: value
/// `i` is nibble `i` (low nibbles of the 16 bytes first) with bit `i` of the high bits on top.
fn five_bit_values(high_and_nibbles: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let (high, qs) = high_and_nibbles.split_at(4);
    let high = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
    (0..QK).map(move |i| {
        let low = if i < 16 {
            qs[i] & 0x0F
        } else {
            qs[i - 16] >> 4
        };
        low | (((high >> i) & 1) as u8) << 4
    })
}

fn q5_1_as_bytes(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q5_1_BYTES, 36, |block, out| {
        out.extend_from_slice(&block[..4]);
        out.extend(five_bit_values(&block[4..]));
        Some(())
    })
}

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes of a Q4_K / Q5_K super-block.
fn k_scale_min_bits(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// `f16(d sc)` and `f16(-dmin m)` of sub-block `j` of a Q4_K / Q5_K super-block (`d`, `dmin`,
/// then the 12 scale bytes): its Q4_1-style scale and min.
fn k_scale_min(block: &[u8], j: usize) -> Option<[u8; 4]> {
    let (d, dmin) = (f16_at(block, 0).to_f32(), f16_at(block, 2).to_f32());
    let (sc, m) = k_scale_min_bits(j, &block[4..16]);
    let [a, b] = finite_f16(d * sc as f32)?.to_le_bytes();
    let [c, e] = finite_f16(-(dmin * m as f32))?.to_le_bytes();
    Some([a, b, c, e])
}

/// The low 4 bits of value `i` of sub-block `j` in Q4_K / Q5_K nibbles: sub-blocks 2c and 2c+1
/// are the low and high nibbles of the same 32 bytes.
fn k_nibble(qs: &[u8], j: usize, i: usize) -> u8 {
    let byte = qs[j / 2 * 32 + i];
    if j.is_multiple_of(2) {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

fn q4k_as_q4_1(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q4K_BYTES, 8 * 20, |block, out| {
        let qs = &block[16..];
        for j in 0..QK_K / QK {
            out.extend(k_scale_min(block, j)?);
            out.extend((0..16).map(|i| k_nibble(qs, j, i) | k_nibble(qs, j, i + 16) << 4));
        }
        Some(())
    })
}

fn q5k_as_q5_1(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q5K_BYTES, 8 * 36, |block, out| {
        let (high, qs) = (&block[16..48], &block[48..]);
        for j in 0..QK_K / QK {
            out.extend(k_scale_min(block, j)?);
            // As Q4_K's nibbles, with bit j of high[i] on top.
            out.extend((0..QK).map(|i| k_nibble(qs, j, i) | ((high[i] >> j) & 1) << 4));
        }
        Some(())
    })
}

/// Q6_K super-blocks as packed-Q6K blocks of 32: `d_lo`, `d_hi` (f16), 32 values `0..64`.
fn q6k_as_pairs(data: &[u8]) -> Option<Vec<u8>> {
    rewrite(data, Q6K_BYTES, 8 * 36, |block, out| {
        let (low, high, scales) = (&block[..128], &block[128..192], &block[192..208]);
        let d = f16_at(block, 208).to_f32();
        // Value v = 128 n + 32 k + l: low nibble (k < 2) or high nibble of low[64 n + 32 (k % 2)
        // + l], bits 2k..2k+2 of high[32 n + l] on top; sub-block v / 16.
        let value = |v: usize| {
            let (n, k, l) = (v / 128, v % 128 / 32, v % 32);
            let byte = low[64 * n + 32 * (k % 2) + l];
            let nibble = if k < 2 { byte & 0x0F } else { byte >> 4 };
            nibble | ((high[32 * n + l] >> (2 * k)) & 3) << 4
        };
        for b in 0..QK_K / QK {
            for sub in [2 * b, 2 * b + 1] {
                out.extend(finite_f16(d * scales[sub] as i8 as f32)?.to_le_bytes());
            }
            out.extend((0..QK).map(|i| value(QK * b + i)));
        }
        Some(())
    })
}

#[cfg(test)]
mod tests {
    //! Against candle's dequantization of the same bytes (an independent implementation of the
    //! GGUF formats), on random blocks that cover every bit of every field.
    use super::*;
    use crate::linear::Linear;
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::{Device, Tensor};
    use std::borrow::Cow;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    fn small_f16(seed: &mut u64) -> [u8; 2] {
        f16::from_f32((lcg(seed) % 1000) as f32 * 1e-5 + 1e-5).to_le_bytes()
    }

    /// Random blocks for `rows * cols` values: scales small and positive, every other byte any.
    fn random_blocks(dtype: GgmlDType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let (block_values, block_bytes, scale_bytes) = match dtype {
            GgmlDType::Q4_0 => (QK, Q4_0_BYTES, 2),
            GgmlDType::Q5_0 => (QK, Q5_0_BYTES, 2),
            GgmlDType::Q4K => (QK_K, Q4K_BYTES, 4),
            GgmlDType::Q6K => (QK_K, Q6K_BYTES, 2),
            GgmlDType::Q5_1 => (QK, Q5_1_BYTES, 4),
            GgmlDType::Q5K => (QK_K, Q5K_BYTES, 4),
            other => panic!("{other:?}"),
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / block_values {
            let scales: Vec<u8> = (0..scale_bytes / 2).flat_map(|_| small_f16(seed)).collect();
            let rest = (scale_bytes..block_bytes).map(|_| lcg(seed) as u8);
            // Q6_K keeps its f16 `d` at the end of the block.
            if dtype == GgmlDType::Q6K {
                data.extend(rest);
                data.extend(scales);
            } else {
                data.extend(scales);
                data.extend(rest);
            }
        }
        data
    }

    fn qtensor(dtype: GgmlDType, rows: usize, cols: usize, data: Vec<u8>) -> QTensor {
        let storage = QStorage::from_data(Cow::Owned(data), &Device::Cpu, dtype).unwrap();
        QTensor::new(storage, (rows, cols)).unwrap()
    }

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0f32, |m, x| m.max(x.abs()))
    }

    /// Rewritten weights against candle's dequantization: exact for Q4_0 and Q5_0; Q4_K within
    /// the f16 rounding of its sub-block scale and min.
    fn check_weights(dtype: GgmlDType, kind: GgufBlocks, exact: bool) {
        let mut seed = 7;
        let (rows, cols) = (40, 512);
        let data = random_blocks(dtype, rows, cols, &mut seed);
        let expected = qtensor(dtype, rows, cols, data.clone())
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let packed = PackedMatrix::from_gguf_blocks(kind, rows, cols, &data).unwrap();
        let got = packed.dequantize();
        if exact {
            assert_eq!(got, expected, "{dtype:?}");
        } else {
            // Per 32 values: d sc and dmin m are each rounded by at most 2^-11 relative, and
            // both are bounded by the block's largest value (|d sc| q_max <= 2 max, a q of 0
            // gives -dmin m), so no value moves by more than 3 * 2^-11 of the block's largest.
            for (i, (g, e)) in got.chunks(QK).zip(expected.chunks(QK)).enumerate() {
                let worst = g.iter().zip(e).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                let bound = max_abs(e) * (3.0 * 2f32.powi(-11) + 4.0 * f32::EPSILON);
                assert!(worst <= bound, "{dtype:?} block {i}: {worst} > {bound}");
            }
        }
        assert_eq!(packed.source_format(), kind.name());
    }

    #[test]
    fn q4_0_is_rewritten_exactly() {
        check_weights(GgmlDType::Q4_0, GgufBlocks::Q4_0, true);
    }

    #[test]
    fn q5_0_is_rewritten_exactly() {
        check_weights(GgmlDType::Q5_0, GgufBlocks::Q5_0, true);
    }

    #[test]
    fn q4_k_is_rewritten_within_f16_rounding_of_its_scales() {
        check_weights(GgmlDType::Q4K, GgufBlocks::Q4K, false);
    }

    #[test]
    fn q5_1_is_rewritten_exactly() {
        check_weights(GgmlDType::Q5_1, GgufBlocks::Q5_1, true);
    }

    #[test]
    fn q5_k_is_rewritten_within_f16_rounding_of_its_scales() {
        check_weights(GgmlDType::Q5K, GgufBlocks::Q5K, false);
    }

    #[test]
    fn q6_k_is_rewritten_within_f16_rounding_of_its_scales() {
        check_weights(GgmlDType::Q6K, GgufBlocks::Q6K, false);
    }

    /// A layer of each format through this crate's kernels against the dense product with
    /// candle's dequantized weights (the difference is the 8-bit activation rounding).
    #[test]
    fn layers_of_rewritten_formats_run_on_the_packed_kernels() {
        let mut seed = 11;
        let (rows, cols, n) = (48, 512, 5);
        for (dtype, name) in [
            (GgmlDType::Q4_0, "q4_0"),
            (GgmlDType::Q5_0, "q5_0"),
            (GgmlDType::Q4K, "q4k"),
            (GgmlDType::Q6K, "q6k"),
            (GgmlDType::Q5_1, "q5_1"),
            (GgmlDType::Q5K, "q5k"),
        ] {
            let data = random_blocks(dtype, rows, cols, &mut seed);
            let q = qtensor(dtype, rows, cols, data);
            let w = q.dequantize(&Device::Cpu).unwrap();
            let layer = Linear::quantized(q).unwrap();
            assert!(matches!(layer, Linear::Packed(_)), "{dtype:?}");
            assert_eq!(layer.format(), name);
            let x: Vec<f32> = (0..n * cols)
                .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let x = Tensor::from_vec(x, (n, cols), &Device::Cpu).unwrap();
            let got = layer.forward(&x).unwrap().flatten_all().unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap().flatten_all().unwrap();
            let (got, want) = (
                got.to_vec1::<f32>().unwrap(),
                want.to_vec1::<f32>().unwrap(),
            );
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 0.02 * max_abs(&want), "{dtype:?}: {worst}");
        }
    }

    /// A model bound for a device keeps the file's blocks (only Q4_1 / Q8_0, which unpack
    /// back bit for bit, are packed).
    #[test]
    fn without_rewrites_only_q4_1_and_q8_0_are_packed() {
        let mut seed = 5;
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q5_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = qtensor(dtype, 16, 256, random_blocks(dtype, 16, 256, &mut seed));
            let layer = Linear::quantized_with(q, false).unwrap();
            assert!(matches!(layer, Linear::Quantized { .. }), "{dtype:?}");
        }
        let w = Tensor::ones((16, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let layer = Linear::quantized_with(QTensor::quantize(&w, dtype).unwrap(), false);
            assert!(matches!(layer.unwrap(), Linear::Packed(_)), "{dtype:?}");
        }
    }

    #[test]
    fn blocks_that_do_not_fit_keep_candle_kernels() {
        // A Q4_0 scale whose -8 d overflows f16.
        let mut block = f16::from_f32(10_000.0).to_le_bytes().to_vec();
        block.extend([0x11; 16]);
        let data: Vec<u8> = block.repeat(16);
        assert!(PackedMatrix::from_gguf_blocks(GgufBlocks::Q4_0, 16, 32, &data).is_none());
        let layer = Linear::quantized(qtensor(GgmlDType::Q4_0, 16, 32, data)).unwrap();
        assert!(matches!(layer, Linear::Quantized { .. }));
        // Q4_K rows must hold whole super-blocks; lengths must match.
        assert!(PackedMatrix::from_gguf_blocks(GgufBlocks::Q4K, 1, 128, &[0; 72]).is_none());
        assert!(PackedMatrix::from_gguf_blocks(GgufBlocks::Q6K, 1, 256, &[0; 209]).is_none());
        assert!(PackedMatrix::from_gguf_blocks(GgufBlocks::Q5_0, 1, 32, &[0; 21]).is_none());
    }
}
