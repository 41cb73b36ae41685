//! Every kernel level of every block format against the scalar reference and dense math.

use half::f16;

use super::matrix::{BlockFormat, QuantMatrix};
use super::q8::{quantize_q8_1, QK};
use super::{kernel_level, KernelLevel, Q41, Q80};

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

fn random_blocks<F: BlockFormat>(rows: usize, cols: usize, seed: &mut u64) -> QuantMatrix<F> {
    let mut data = Vec::new();
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32((lcg(seed) % 1000) as f32 * 1e-5 + 1e-4);
        data.extend(d.to_le_bytes());
        if F::BLOCK_BYTES == 20 {
            let m = f16::from_f32(-((lcg(seed) % 1000) as f32) * 1e-4);
            data.extend(m.to_le_bytes());
            data.extend((0..16).map(|_| lcg(seed) as u8));
        } else {
            // -128 never occurs in GGUF Q8_0 (quantization clamps to +-127).
            data.extend(
                (0..32)
                    .map(|_| (lcg(seed) % 255) as u8 as i8 as u8 ^ 0x80)
                    .map(|b| if b == 0x80 { 0x81 } else { b }),
            );
        }
    }
    QuantMatrix::from_bytes(rows, cols, data).unwrap()
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

fn check<F: BlockFormat>() {
    let mut seed = 3;
    for &(n, k, m) in &[(37, 64, 1), (19, 96, 5), (64, 576, 33), (8, 1536, 70)] {
        let w = random_blocks::<F>(n, k, &mut seed);
        let x: Vec<f32> = (0..m * k)
            .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let acts = quantize_q8_1(&x, k);
        let dense = w.dequantize();
        let nb = k / QK;
        for level in levels() {
            let got = w.matmul_with(level, &x, m);
            for r in 0..m {
                for c in 0..n {
                    let reference = F::dot_scalar(w.row(c), &acts[r * nb..(r + 1) * nb]);
                    let v = got[r * n + c];
                    // Same integers, another float summation order.
                    assert!(
                        (v - reference).abs() <= 1e-4 * (1.0 + reference.abs()),
                        "{} {level:?} {n}x{k}x{m} [{r},{c}] {v} vs {reference}",
                        F::NAME
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
fn q4_1_kernels_match_the_scalar_reference_on_random_inputs() {
    check::<Q41>();
}

#[test]
fn q8_0_kernels_match_the_scalar_reference_on_random_inputs() {
    check::<Q80>();
}

#[test]
fn a_row_gives_the_same_result_alone_and_in_a_batch() {
    let mut seed = 9;
    let w = random_blocks::<Q41>(24, 128, &mut seed);
    let x: Vec<f32> = (0..9 * 128)
        .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let batch = w.matmul(&x, 9);
    for r in 0..9 {
        let alone = w.matmul(&x[r * 128..(r + 1) * 128], 1);
        assert_eq!(&batch[r * 24..(r + 1) * 24], &alone[..]);
    }
}
