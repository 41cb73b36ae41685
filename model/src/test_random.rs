//! Deterministic pseudo-random numbers for unit tests.

/// Next value of a 64-bit LCG, as an f32 in [-1, 1).
pub fn uniform(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
}
