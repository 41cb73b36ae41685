//! Every kernel level of every packed format against a reference computed from the raw GGUF
//! blocks, and against dense math.

use half::f16;

use super::packed::{PackedFormat, PackedMatrix};
use super::packed_matmul::{matmul_jobs, MatmulJob};
use super::q8::{quantize_q8_1, BlockQ8_1, QK};
use super::{kernel_level, KernelLevel};

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

/// Random GGUF blocks of `format`, row after row.
fn random_gguf(format: PackedFormat, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32((lcg(seed) % 1000) as f32 * 1e-5 + 1e-4);
        data.extend(d.to_le_bytes());
        match format {
            PackedFormat::Q4_1 => {
                let m = f16::from_f32(-((lcg(seed) % 1000) as f32) * 1e-4);
                data.extend(m.to_le_bytes());
                data.extend((0..16).map(|_| lcg(seed) as u8));
            }
            // -128 never occurs in GGUF Q8_0 (quantization clamps to +-127).
            PackedFormat::Q8_0 => {
                data.extend((0..32).map(|_| ((lcg(seed) % 255) as i32 - 127) as i8 as u8))
            }
            PackedFormat::Q6K => {
                let d_hi = f16::from_f32((lcg(seed) % 1000) as f32 * -1e-5 - 1e-4);
                data.extend(d_hi.to_le_bytes());
                data.extend((0..32).map(|_| (lcg(seed) % 64) as u8));
            }
            PackedFormat::Q5_1 => {
                let m = f16::from_f32(-((lcg(seed) % 1000) as f32) * 1e-4);
                data.extend(m.to_le_bytes());
                data.extend((0..32).map(|_| (lcg(seed) % 32) as u8));
            }
        }
    }
    data
}

fn h(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// One output straight from GGUF row bytes: integer block sums, then the kernels' fused steps.
fn reference_dot(format: PackedFormat, row: &[u8], x: &[BlockQ8_1]) -> f32 {
    let mut acc = 0f32;
    for (block, a) in row.chunks_exact(format.gguf_block_bytes()).zip(x) {
        match format {
            PackedFormat::Q4_1 => {
                let mut isum = 0i32;
                for (j, q) in block[4..].iter().enumerate() {
                    isum +=
                        (q & 0x0F) as i32 * a.qs[j] as i32 + (q >> 4) as i32 * a.qs[j + 16] as i32;
                }
                acc = (isum as f32).mul_add(h(block, 0) * a.d, acc);
                acc = h(block, 2).mul_add(a.s, acc);
            }
            PackedFormat::Q8_0 => {
                let isum: i32 = block[2..]
                    .iter()
                    .zip(&a.qs)
                    .map(|(&q, &v)| q as i8 as i32 * v as i32)
                    .sum();
                acc = (isum as f32).mul_add(h(block, 0) * a.d, acc);
            }
            PackedFormat::Q6K => {
                for (half, at) in [(0..16, 0), (16..32, 2)] {
                    let isum: i32 = half
                        .map(|i| (block[4 + i] as i32 - 32) * a.qs[i] as i32)
                        .sum();
                    acc = (isum as f32).mul_add(h(block, at) * a.d, acc);
                }
            }
            PackedFormat::Q5_1 => {
                let isum: i32 = (0..32).map(|i| block[4 + i] as i32 * a.qs[i] as i32).sum();
                acc = (isum as f32).mul_add(h(block, 0) * a.d, acc);
                acc = h(block, 2).mul_add(a.s, acc);
            }
        }
    }
    acc
}

fn gguf_dequantize(format: PackedFormat, data: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    for block in data.chunks_exact(format.gguf_block_bytes()) {
        match format {
            PackedFormat::Q4_1 => {
                let (d, m) = (h(block, 0), h(block, 2));
                out.extend(block[4..].iter().map(|q| (q & 0x0F) as f32 * d + m));
                out.extend(block[4..].iter().map(|q| (q >> 4) as f32 * d + m));
            }
            PackedFormat::Q8_0 => {
                out.extend(block[2..].iter().map(|&q| q as i8 as f32 * h(block, 0)))
            }
            PackedFormat::Q6K => out.extend(
                block[4..]
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| (q as i32 - 32) as f32 * h(block, if i < 16 { 0 } else { 2 })),
            ),
            PackedFormat::Q5_1 => {
                let (d, m) = (h(block, 0), h(block, 2));
                out.extend(block[4..].iter().map(|&q| q as f32 * d + m));
            }
        }
    }
    out
}

fn levels() -> Vec<KernelLevel> {
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

fn random_x(len: usize, seed: &mut u64) -> Vec<f32> {
    (0..len)
        .map(|_| (lcg(seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn check(format: PackedFormat) {
    let mut seed = 3;
    for &(n, k, m) in &[
        (37, 64, 1),
        (19, 96, 5),
        (64, 576, 33),
        (8, 1536, 70),
        (100, 32, 9),
    ] {
        let gguf = random_gguf(format, n, k, &mut seed);
        let w = PackedMatrix::from_gguf(format, n, k, &gguf).unwrap();
        assert_eq!(
            w.dequantize(),
            gguf_dequantize(format, &gguf),
            "{format:?} dequantize"
        );
        let x = random_x(m * k, &mut seed);
        let acts = quantize_q8_1(&x, k);
        let dense = w.dequantize();
        let (nb, bb) = (k / QK, format.gguf_block_bytes());
        for level in levels() {
            let got = w.matmul_with(level, &x, m);
            for r in 0..m {
                for c in 0..n {
                    let row = &gguf[c * nb * bb..(c + 1) * nb * bb];
                    let reference = reference_dot(format, row, &acts[r * nb..(r + 1) * nb]);
                    let v = got[r * n + c];
                    // Same integers, same fused float steps in the same order: same bits.
                    assert_eq!(
                        v.to_bits(),
                        reference.to_bits(),
                        "{format:?} {level:?} {n}x{k}x{m} [{r},{c}] {v} vs {reference}"
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

#[test]
fn q4_1_kernels_match_the_reference_on_random_inputs() {
    check(PackedFormat::Q4_1);
}

#[test]
fn q8_0_kernels_match_the_reference_on_random_inputs() {
    check(PackedFormat::Q8_0);
}

#[test]
fn q6_k_pair_kernels_match_the_reference_on_random_inputs() {
    check(PackedFormat::Q6K);
}

#[test]
fn q5_1_kernels_match_the_reference_on_random_inputs() {
    check(PackedFormat::Q5_1);
}

/// `block` builds block `i`'s GGUF bytes; 16 rows of 64 against activations at +-127 (all
/// positive: the largest pair sums of `vpmaddubsw` and nonzero half-block sums; alternating;
/// and in runs of three), every kernel level against the reference.
fn check_extreme(format: PackedFormat, block: impl Fn(usize) -> Vec<u8>) {
    let (n, k) = (16, 64);
    let gguf: Vec<u8> = (0..n * k / QK).flat_map(block).collect();
    let w = PackedMatrix::from_gguf(format, n, k, &gguf).unwrap();
    let patterns: [fn(usize) -> bool; 3] = [|_| true, |j| j % 2 == 0, |j| j % 6 < 3];
    let x: Vec<f32> = patterns
        .iter()
        .flat_map(|positive| (0..k).map(move |j| if positive(j) { 1.0 } else { -1.0 }))
        .collect();
    let rows = patterns.len();
    let acts = quantize_q8_1(&x, k);
    let (nb, row_bytes) = (k / QK, k / QK * format.gguf_block_bytes());
    for level in levels() {
        let got = w.matmul_with(level, &x, rows);
        for r in 0..rows {
            for c in 0..n {
                let row = &gguf[c * row_bytes..(c + 1) * row_bytes];
                let want = reference_dot(format, row, &acts[r * nb..(r + 1) * nb]);
                assert_eq!(got[r * n + c], want, "{format:?} {level:?} row {r}");
            }
        }
    }
}

#[test]
fn extreme_q6_k_values_stay_exact() {
    // Weights at 0 and 63 (-32 and +31 after the bias).
    check_extreme(PackedFormat::Q6K, |i| {
        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend(f16::from_f32(-0.5).to_le_bytes());
        b.extend((0..32).map(|j| if (i + j) % 3 == 0 { 0u8 } else { 63 }));
        b
    });
}

#[test]
fn extreme_q8_0_values_stay_exact() {
    // Every weight at +-127: the largest integer sums.
    check_extreme(PackedFormat::Q8_0, |i| {
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|j| if (i + j) % 3 == 0 { 0x81u8 } else { 0x7F }));
        b
    });
}

#[test]
fn extreme_q5_1_values_stay_exact() {
    // Weights at 0 and 31.
    check_extreme(PackedFormat::Q5_1, |i| {
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend(f16::from_f32(-7.5).to_le_bytes());
        b.extend((0..32).map(|j| if (i + j) % 3 == 0 { 0u8 } else { 31 }));
        b
    });
}

#[test]
fn a_row_gives_the_same_result_alone_and_in_a_batch() {
    let mut seed = 9;
    let gguf = random_gguf(PackedFormat::Q4_1, 24, 128, &mut seed);
    let w = PackedMatrix::from_gguf(PackedFormat::Q4_1, 24, 128, &gguf).unwrap();
    let x = random_x(9 * 128, &mut seed);
    let batch = w.matmul(&x, 9);
    for r in 0..9 {
        let alone = w.matmul(&x[r * 128..(r + 1) * 128], 1);
        assert_eq!(&batch[r * 24..(r + 1) * 24], &alone[..]);
    }
}

#[test]
fn one_region_of_several_matrices_equals_separate_products() {
    let mut seed = 5;
    let (k, m) = (96, 150);
    let shapes = [
        (PackedFormat::Q4_1, 40, m),
        (PackedFormat::Q8_0, 16, 70),
        (PackedFormat::Q6K, 21, 40),
        (PackedFormat::Q5_1, 17, 150),
        (PackedFormat::Q4_1, 3, 1),
    ];
    let mats: Vec<PackedMatrix> = shapes
        .iter()
        .map(|&(f, n, _)| {
            PackedMatrix::from_gguf(f, n, k, &random_gguf(f, n, k, &mut seed)).unwrap()
        })
        .collect();
    let x = random_x(m * k, &mut seed);
    let acts = quantize_q8_1(&x, k);
    let mut outs: Vec<Vec<f32>> = mats
        .iter()
        .zip(&shapes)
        .map(|(w, s)| vec![0f32; s.2 * w.rows()])
        .collect();
    let mut jobs: Vec<MatmulJob> = mats
        .iter()
        .zip(&shapes)
        .zip(outs.iter_mut())
        .map(|((matrix, s), out)| MatmulJob {
            matrix,
            rows: s.2,
            out,
        })
        .collect();
    matmul_jobs(&acts, &mut jobs);
    for ((w, s), out) in mats.iter().zip(&shapes).zip(&outs) {
        assert_eq!(out, &w.matmul(&x[..s.2 * k], s.2));
    }
}

#[test]
fn repacked_blocks_give_back_the_gguf_bytes() {
    let mut seed = 7;
    for format in [
        PackedFormat::Q4_1,
        PackedFormat::Q8_0,
        PackedFormat::Q6K,
        PackedFormat::Q5_1,
    ] {
        for rows in [1, 16, 37] {
            let data = random_gguf(format, rows, 96, &mut seed);
            let m = PackedMatrix::from_gguf(format, rows, 96, &data).unwrap();
            assert_eq!(m.to_gguf(), data, "{format:?} {rows} rows");
            // Whole 16-row groups take exactly the unpacked bytes; others are padded.
            let padded = rows.div_ceil(16) * 16 * data.len() / rows;
            assert_eq!(m.bytes(), padded, "{format:?} {rows} rows");
        }
    }
}

#[test]
fn sizes_that_do_not_fit_are_refused() {
    assert!(PackedMatrix::from_gguf(PackedFormat::Q4_1, 2, 40, &[0; 60]).is_none());
    assert!(PackedMatrix::from_gguf(PackedFormat::Q8_0, 2, 32, &[0; 67]).is_none());
    assert!(PackedMatrix::from_gguf(PackedFormat::Q8_0, 0, 32, &[]).is_none());
}
