//! Row-wise f32 operations of the forward pass on plain slices (no tensor allocation per op).

/// RMS norm of each `weight.len()`-wide row of `x`: `x / sqrt(mean(x^2) + eps) * weight`.
pub(crate) fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    let mut out = vec![0f32; x.len()];
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let inv = inv_rms(row, eps);
        for ((d, v), w) in dst.iter_mut().zip(row).zip(weight) {
            *d = v * inv * w;
        }
    }
    out
}

/// `1 / sqrt(mean(row^2) + eps)`, the RMS norm's scale (shared with the trainer's op).
pub fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let sum2: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (sum2 / row.len() as f32 + eps).sqrt()
}

/// `gate = silu(gate) * up`, element-wise.
pub(crate) fn silu_mul_in_place(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_approx(-*g)) * u;
    }
}

/// `x += y`, element-wise.
pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `e^x` to about 2 ulp without a library call, so softmax loops vectorize: `2^k e^r` with
/// `r = x - k ln 2`, `|r| <= ln 2 / 2`, and Cephes' degree-6 polynomial for `e^r`.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E).round_ties_even();
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // `k as i32` through the float's bits: adding 1.5 * 2^23 puts the integer `k` in the low
    // mantissa bits, which vectorizes where the saturating cast does not (same value for every
    // `k` the clamp allows).
    let k_int = (k + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    e * f32::from_bits(((k_int + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_approx(x), (x as f64).exp());
            assert!(
                ((got as f64 - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(f32::NAN).is_nan());
        assert!(exp_approx(-1000.0) < 1e-37);
    }

    #[test]
    fn rms_norm_matches_its_definition() {
        let x = [1.0, -2.0, 3.0, 0.5, 0.0, 4.0];
        let w = [0.5, 2.0, 1.0];
        let got = rms_norm_rows(&x, &w, 1e-5);
        for (r, row) in x.chunks(3).enumerate() {
            let rms = (row.iter().map(|v| v * v).sum::<f32>() / 3.0 + 1e-5).sqrt();
            for c in 0..3 {
                assert!((got[r * 3 + c] - row[c] / rms * w[c]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn silu_mul_and_add() {
        let mut g = [0.0, 1.0, -3.0];
        silu_mul_in_place(&mut g, &[2.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!((g[2] - -3.0 / (1.0 + 3f32.exp())).abs() < 1e-6);
        let mut x = [1.0, 2.0];
        add_in_place(&mut x, &[0.5, -2.0]);
        assert_eq!(x, [1.5, 0.0]);
    }
}
