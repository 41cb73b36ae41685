//! Recovers Llama-3 RoPE parameters from a GGUF `rope_freqs` table. llama.cpp's converter turns
//! HF's `rope_scaling` into that table and drops the parameters, which an HF `config.json` (the
//! trainer's output) needs back.
//!
//! The table fixes the factor (its largest divisor) and, through the smoothed band, the two
//! band-edge wavelengths `original / low_freq_factor` and `original / high_freq_factor`: one
//! degree of freedom is left, taken as `low_freq_factor = 1` (every Llama 3.x). A candidate is
//! kept only if it reproduces the whole table.

use crate::rope_scaling::Llama3Scaling;

/// Relative agreement asked of a recomputed divisor (the file stores them as f32).
const TOLERANCE: f64 = 1e-5;

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs())
}

/// `x` rounded to 4 decimals when that moves it by less than [`TOLERANCE`].
fn tidy(x: f64) -> f64 {
    let rounded = (x * 1e4).round() / 1e4;
    if near(x, rounded) {
        rounded
    } else {
        x
    }
}

/// The Llama-3 parameters whose divisors of `inv_freq` are `factors`, if some are.
pub(super) fn llama3_from_factors(factors: &[f32], inv_freq: &[f32]) -> Option<Llama3Scaling> {
    let factor = tidy(factors.iter().copied().fold(f32::MIN, f32::max) as f64);
    if factor <= 1.0 {
        return None;
    }
    // In the band, 1 / divisor = (1 - s) / factor + s with s = (original / wavelen - low) /
    // (high - low): a line in 1 / wavelen.
    let band: Vec<(f64, f64)> = factors
        .iter()
        .zip(inv_freq)
        .map(|(&f, &w)| (f as f64, w as f64))
        .filter(|&(f, _)| !near(f, 1.0) && !near(f, factor))
        .map(|(f, w)| {
            let s = (1.0 / f - 1.0 / factor) / (1.0 - 1.0 / factor);
            (w / (2.0 * std::f64::consts::PI), s)
        })
        .collect();
    if band.len() < 2 {
        return None;
    }
    let n = band.len() as f64;
    let mean_u = band.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_s = band.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = band.iter().map(|p| (p.0 - mean_u).powi(2)).sum();
    let slope = band
        .iter()
        .map(|p| (p.0 - mean_u) * (p.1 - mean_s))
        .sum::<f64>()
        / spread;
    let intercept = mean_s - slope * mean_u;
    // With low = 1: intercept = -1 / (high - 1), slope = original / (high - 1).
    if !(slope > 0.0 && intercept < 0.0) {
        return None;
    }
    let width = -1.0 / intercept;
    let original = (slope * width).round();
    if original < 1.0 {
        return None;
    }
    let high = 1.0 + width;
    [tidy(high), high]
        .into_iter()
        .map(|high_freq_factor| Llama3Scaling {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor,
            original_max_position_embeddings: original as usize,
        })
        .find(|p| {
            let ours = p.frequency_factors(inv_freq);
            ours.iter()
                .zip(factors)
                .all(|(&a, &b)| near(a as f64, b as f64))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rope::base_inverse_frequencies;

    /// The parameters recovered from the table `(factor, low, high, original)` gives at
    /// `head_dim`, theta 500000.
    fn round_trip(p: (f64, f64, f64, usize), head_dim: usize) -> Option<Llama3Scaling> {
        let original = Llama3Scaling {
            factor: p.0,
            low_freq_factor: p.1,
            high_freq_factor: p.2,
            original_max_position_embeddings: p.3,
        };
        let inv = base_inverse_frequencies(head_dim, 500_000.0);
        llama3_from_factors(&original.frequency_factors(&inv), &inv)
    }

    #[test]
    fn llama_3_2_parameters_come_back_from_their_table() {
        let back = round_trip((32.0, 1.0, 4.0, 8192), 64).unwrap();
        let p = (back.factor, back.low_freq_factor, back.high_freq_factor);
        assert_eq!(
            (p, back.original_max_position_embeddings),
            ((32.0, 1.0, 4.0), 8192)
        );
    }

    #[test]
    fn other_low_freq_factors_come_back_as_parameters_of_the_same_table() {
        let back = round_trip((8.0, 2.0, 8.0, 16384), 128).unwrap();
        assert_eq!(back.original_max_position_embeddings, 8192);
        assert_eq!((back.low_freq_factor, back.high_freq_factor), (1.0, 4.0));
    }

    #[test]
    fn tables_of_another_form_are_not_taken_for_llama3() {
        let inv = base_inverse_frequencies(64, 500_000.0);
        let ramp: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.25).collect();
        assert_eq!(llama3_from_factors(&ramp, &inv), None);
        assert_eq!(llama3_from_factors(&[1.0; 32], &inv), None);
    }
}
