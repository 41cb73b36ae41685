//! Block-quantized weights (GGUF Q4_1 or Q8_0) repacked at load so that 16 weight rows are
//! processed together: for every block of 32 columns, the 16 rows' quantized values are stored
//! four bytes per row side by side, so one 512-bit integer dot-product instruction multiplies
//! four values of 16 rows by four activations broadcast to every lane, and the 16 rows' block
//! scales form one vector. Outputs of a 16-row group land in 16 lanes: no horizontal sums.
//!
//! Values are stored unsigned: Q4_1 nibbles as they are, Q8_0 bytes plus 128 (the activation
//! block's `offset`, `-128 * sum(x)`, starts the integer sum, which keeps it exact), Q6_K's 6-bit
//! values as they are (their `-32` bias folded into each half-block's integer sum the same way).
//!
//! Per (group, block):
//! - Q4_1: 4 chunks of 64 bytes; chunk `p` holds bytes `4p..4p+4` of each row's 16 nibble
//!   bytes, row `n` at `4n`. Low nibbles are values `4p..4p+4`, high nibbles `16+4p..16+4p+4`.
//!   Scales: 16 f16 `d`, then 16 f16 `m`.
//! - Q8_0: 8 chunks of 64 bytes; chunk `j` holds values `4j..4j+4` of each row, row `n` at
//!   `4n`. Scales: 16 f16 `d`.
//! - Q6K (Q6_K's 16-value sub-blocks in pairs, `kernels::repack`): chunks as Q8_0. Scales: 16
//!   f16 `d` of values 0..16, then 16 of values 16..32. Its unpacked block (the `gguf` bytes
//!   of this module, though GGUF has no such type) is `d_lo, d_hi` (f16) and 32 bytes `0..64`.
//! - Q5_1 (GGUF Q5_1, and Q5_K's sub-blocks, `kernels::repack`): chunks as Q8_0, values `0..32`
//!   as they are; scales as Q4_1 (`d`, then `m`). Unpacked block: `d, m` (f16), 32 bytes.
//!
//! Each output's arithmetic (integer block sums, then per block `acc += isum * (d_w d_x)` and
//! for Q4_1 `acc += m_w s_x`, both fused multiply-adds; Q6K one integer sum and step per half) is the same at every kernel level and
//! whatever the batch around it: a row's result alone equals its result in any batch.

use half::f16;

use super::q8::{BlockQ8_1, QK};

/// Weight rows per packed group (one 512-bit vector of f32 lanes).
pub(super) const GROUP: usize = 16;

/// GGUF block formats the packed kernels serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    Q4_1,
    Q8_0,
    Q6K,
    Q5_1,
}

impl PackedFormat {
    /// Bytes of one GGUF block.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q6K | Self::Q5_1 => 36,
        }
    }

    /// Packed quant bytes of one (group, block).
    pub(crate) fn quant_bytes(self) -> usize {
        match self {
            Self::Q4_1 => GROUP * QK / 2,
            Self::Q8_0 | Self::Q6K | Self::Q5_1 => GROUP * QK,
        }
    }

    /// f16 scales of one (group, block).
    pub(crate) fn scale_count(self) -> usize {
        match self {
            Self::Q4_1 | Self::Q6K | Self::Q5_1 => 2 * GROUP,
            Self::Q8_0 => GROUP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_1 => "q4_1",
            Self::Q8_0 => "q8_0",
            Self::Q6K => "q6k",
            Self::Q5_1 => "q5_1",
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A `(rows, cols)` weight matrix in the packed layout.
#[derive(Clone)]
pub struct PackedMatrix {
    format: PackedFormat,
    rows: usize,
    cols: usize,
    quants: Vec<Line>,
    scales: Vec<u16>,
    /// The file's format when it was rewritten into `format` at load (`"q4k"`), else
    /// `format`'s name.
    source: &'static str,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed{:?}({}x{})", self.format, self.rows, self.cols)
    }
}

impl PackedMatrix {
    /// Repacks raw GGUF bytes (`rows * cols / 32` blocks, row after row); `None` when the
    /// sizes do not fit the format.
    pub fn from_gguf(format: PackedFormat, rows: usize, cols: usize, data: &[u8]) -> Option<Self> {
        let bb = format.gguf_block_bytes();
        if rows == 0 || !cols.is_multiple_of(QK) || data.len() != rows * cols / QK * bb {
            return None;
        }
        let nb = cols / QK;
        let groups = rows.div_ceil(GROUP);
        let qb = format.quant_bytes();
        let sc = format.scale_count();
        let mut quants = vec![Line([0; 64]); groups * nb * qb / 64];
        let mut scales = vec![0u16; groups * nb * sc];
        // SAFETY: `Line` is 64 plain bytes; the slice covers exactly the vector's memory.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(quants.as_mut_ptr() as *mut u8, quants.len() * 64)
        };
        for n in 0..rows {
            let (g, lane) = (n / GROUP, n % GROUP);
            for b in 0..nb {
                let src = &data[(n * nb + b) * bb..][..bb];
                let q = &mut bytes[(g * nb + b) * qb..][..qb];
                let s = &mut scales[(g * nb + b) * sc..][..sc];
                s[lane] = u16::from_le_bytes([src[0], src[1]]);
                match format {
                    PackedFormat::Q4_1 => {
                        s[GROUP + lane] = u16::from_le_bytes([src[2], src[3]]);
                        for p in 0..4 {
                            q[p * 64 + lane * 4..][..4].copy_from_slice(&src[4 + 4 * p..][..4]);
                        }
                    }
                    PackedFormat::Q8_0 => {
                        for j in 0..8 {
                            for (dst, &v) in q[j * 64 + lane * 4..][..4]
                                .iter_mut()
                                .zip(&src[2 + 4 * j..][..4])
                            {
                                *dst = v ^ 0x80;
                            }
                        }
                    }
                    PackedFormat::Q6K | PackedFormat::Q5_1 => {
                        s[GROUP + lane] = u16::from_le_bytes([src[2], src[3]]);
                        for j in 0..8 {
                            q[j * 64 + lane * 4..][..4].copy_from_slice(&src[4 + 4 * j..][..4]);
                        }
                    }
                }
            }
        }
        Some(Self {
            format,
            rows,
            cols,
            quants,
            scales,
            source: format.name(),
        })
    }

    pub fn format(&self) -> PackedFormat {
        self.format
    }

    /// Bytes the packed weights take in memory.
    pub fn bytes(&self) -> usize {
        self.quants.len() * std::mem::size_of::<Line>() + self.scales.len() * 2
    }

    /// The format of the weights as the file stored them, e.g. `"q4k"`.
    pub fn source_format(&self) -> &'static str {
        self.source
    }

    pub(crate) fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    pub(crate) fn blocks(&self) -> usize {
        self.cols / QK
    }

    /// Packed quants of group `g`, all blocks.
    pub(crate) fn group_quants(&self, g: usize) -> &[u8] {
        let len = self.blocks() * self.format.quant_bytes();
        // SAFETY: `Line` is 64 plain bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.quants.as_ptr() as *const u8, self.quants.len() * 64)
        };
        &bytes[g * len..(g + 1) * len]
    }

    /// f16 scale bits of group `g`, all blocks.
    pub(crate) fn group_scales(&self, g: usize) -> &[u16] {
        let len = self.blocks() * self.format.scale_count();
        &self.scales[g * len..(g + 1) * len]
    }

    /// The raw GGUF blocks again (the inverse of [`Self::from_gguf`]), for backends that take
    /// GGUF data (candle's CUDA quantized matmul).
    pub fn to_gguf(&self) -> Vec<u8> {
        let (nb, bb) = (self.blocks(), self.format.gguf_block_bytes());
        let (qb, sc) = (self.format.quant_bytes(), self.format.scale_count());
        let mut out = vec![0u8; self.rows * nb * bb];
        for n in 0..self.rows {
            let (g, lane) = (n / GROUP, n % GROUP);
            let (quants, scales) = (self.group_quants(g), self.group_scales(g));
            for b in 0..nb {
                let dst = &mut out[(n * nb + b) * bb..][..bb];
                let (q, s) = (&quants[b * qb..][..qb], &scales[b * sc..][..sc]);
                dst[..2].copy_from_slice(&s[lane].to_le_bytes());
                match self.format {
                    PackedFormat::Q4_1 => {
                        dst[2..4].copy_from_slice(&s[GROUP + lane].to_le_bytes());
                        for p in 0..4 {
                            dst[4 + 4 * p..][..4].copy_from_slice(&q[p * 64 + lane * 4..][..4]);
                        }
                    }
                    PackedFormat::Q8_0 => {
                        for j in 0..8 {
                            for (d, &v) in dst[2 + 4 * j..][..4]
                                .iter_mut()
                                .zip(&q[j * 64 + lane * 4..][..4])
                            {
                                *d = v ^ 0x80;
                            }
                        }
                    }
                    PackedFormat::Q6K | PackedFormat::Q5_1 => {
                        dst[2..4].copy_from_slice(&s[GROUP + lane].to_le_bytes());
                        for j in 0..8 {
                            dst[4 + 4 * j..][..4].copy_from_slice(&q[j * 64 + lane * 4..][..4]);
                        }
                    }
                }
            }
        }
        out
    }

    /// The weights as f32, `(rows, cols)` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (n, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(n, row);
        }
        out
    }

    /// Row `n` (`< rows`) as f32 into `row` (`cols` long): the same values as [`Self::dequantize`].
    pub fn dequantize_row_into(&self, n: usize, row: &mut [f32]) {
        let nb = self.blocks();
        let (qb, sc) = (self.format.quant_bytes(), self.format.scale_count());
        let (g, lane) = (n / GROUP, n % GROUP);
        let (quants, scales) = (self.group_quants(g), self.group_scales(g));
        for b in 0..nb {
            let q = &quants[b * qb..][..qb];
            let s = &scales[b * sc..][..sc];
            let d = f16::from_bits(s[lane]).to_f32();
            let dst = &mut row[b * QK..][..QK];
            match self.format {
                PackedFormat::Q4_1 => {
                    let m = f16::from_bits(s[GROUP + lane]).to_f32();
                    for (i, v) in dst.iter_mut().enumerate() {
                        *v = q4_1_value(q, lane, i) as f32 * d + m;
                    }
                }
                PackedFormat::Q8_0 => {
                    for (i, v) in dst.iter_mut().enumerate() {
                        *v = (q8_0_value(q, lane, i) as i32 - 128) as f32 * d;
                    }
                }
                PackedFormat::Q6K => {
                    let d_hi = f16::from_bits(s[GROUP + lane]).to_f32();
                    for (i, v) in dst.iter_mut().enumerate() {
                        let scale = if i < QK / 2 { d } else { d_hi };
                        *v = (q8_0_value(q, lane, i) as i32 - 32) as f32 * scale;
                    }
                }
                PackedFormat::Q5_1 => {
                    let m = f16::from_bits(s[GROUP + lane]).to_f32();
                    for (i, v) in dst.iter_mut().enumerate() {
                        *v = q8_0_value(q, lane, i) as f32 * d + m;
                    }
                }
            }
        }
    }
}

/// Value `i` (0..32) of `lane`'s block in a packed Q4_1 (group, block).
#[inline]
fn q4_1_value(q: &[u8], lane: usize, i: usize) -> u8 {
    let byte = q[(i % 16 / 4) * 64 + lane * 4 + i % 4];
    if i < 16 {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

/// Byte `i` (0..32) of `lane`'s block in a packed Q8_0 (value + 128), Q6K (value + 32) or
/// Q5_1 (value) (group, block).
#[inline]
fn q8_0_value(q: &[u8], lane: usize, i: usize) -> u8 {
    q[(i / 4) * 64 + lane * 4 + i % 4]
}

/// The reference kernel: `R` activation rows against one 16-row group, one value at a time,
/// with the same per-block fused multiply-adds as the SIMD kernels.
pub(crate) fn tile_scalar<const R: usize>(
    format: PackedFormat,
    quants: &[u8],
    scales: &[u16],
    acts: [&[BlockQ8_1]; R],
) -> [[f32; GROUP]; R] {
    let (qb, sc) = (format.quant_bytes(), format.scale_count());
    let mut out = [[0f32; GROUP]; R];
    for b in 0..quants.len() / qb {
        let q = &quants[b * qb..][..qb];
        let s = &scales[b * sc..][..sc];
        for (r, row) in acts.iter().enumerate() {
            let a = &row[b];
            for lane in 0..GROUP {
                let d = f16::from_bits(s[lane]).to_f32();
                let acc = &mut out[r][lane];
                match format {
                    PackedFormat::Q4_1 => {
                        let isum: i32 = (0..QK)
                            .map(|i| q4_1_value(q, lane, i) as i32 * a.qs[i] as i32)
                            .sum();
                        let m = f16::from_bits(s[GROUP + lane]).to_f32();
                        *acc = (isum as f32).mul_add(d * a.d, *acc);
                        *acc = m.mul_add(a.s, *acc);
                    }
                    PackedFormat::Q8_0 => {
                        let isum: i32 = a.offset
                            + (0..QK)
                                .map(|i| q8_0_value(q, lane, i) as i32 * a.qs[i] as i32)
                                .sum::<i32>();
                        *acc = (isum as f32).mul_add(d * a.d, *acc);
                    }
                    PackedFormat::Q6K => {
                        let (lo_bias, hi_bias) = a.q6k_biases();
                        let half = |range: std::ops::Range<usize>| -> i32 {
                            range
                                .map(|i| q8_0_value(q, lane, i) as i32 * a.qs[i] as i32)
                                .sum()
                        };
                        let d_hi = f16::from_bits(s[GROUP + lane]).to_f32();
                        let (lo, hi) = (lo_bias + half(0..QK / 2), hi_bias + half(QK / 2..QK));
                        *acc = (lo as f32).mul_add(d * a.d, *acc);
                        *acc = (hi as f32).mul_add(d_hi * a.d, *acc);
                    }
                    PackedFormat::Q5_1 => {
                        let isum: i32 = (0..QK)
                            .map(|i| q8_0_value(q, lane, i) as i32 * a.qs[i] as i32)
                            .sum();
                        let m = f16::from_bits(s[GROUP + lane]).to_f32();
                        *acc = (isum as f32).mul_add(d * a.d, *acc);
                        *acc = m.mul_add(a.s, *acc);
                    }
                }
            }
        }
    }
    out
}
