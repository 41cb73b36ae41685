//! Rotary position embeddings in the HF layout (each head's first half rotates with its second).
//! GGUF checkpoints store Q/K rows interleaved; the loader permutes them into this layout.

use crate::config::LlamaConfig;

/// Precomputed cos/sin for positions `0..max_positions`.
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    max_positions: usize,
}

/// The unscaled inverse frequencies `theta^(-2i/head_dim)`, `head_dim / 2` of them.
pub(crate) fn base_inverse_frequencies(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
        .collect()
}

/// The inverse frequencies a model of `config` rotates with: the base ones, scaled.
pub(crate) fn inverse_frequencies(config: &LlamaConfig) -> Vec<f32> {
    let base = base_inverse_frequencies(config.head_dim(), config.rope_theta);
    config.rope_scaling.apply(&base)
}

impl RopeTable {
    /// The table of a model of `config` for positions `0..max_positions`.
    pub fn for_config(config: &LlamaConfig, max_positions: usize) -> Self {
        Self::new(inverse_frequencies(config), max_positions)
    }

    /// The table of `inv_freq` (one per rotated pair) for positions `0..max_positions`.
    pub fn new(inv_freq: Vec<f32>, max_positions: usize) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self {
            half,
            cos,
            sin,
            max_positions,
        }
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// cos and sin of positions `0..positions`, `head_dim / 2` values per position.
    pub fn cos_sin(&self, positions: usize) -> (&[f32], &[f32]) {
        let n = positions.min(self.max_positions) * self.half;
        (&self.cos[..n], &self.sin[..n])
    }

    /// Rotates one head vector (`2 * half` values) in place for position `pos`.
    #[inline]
    pub fn rotate(&self, head: &mut [f32], pos: usize) {
        let h = self.half;
        let cos = &self.cos[pos * h..(pos + 1) * h];
        let sin = &self.sin[pos * h..(pos + 1) * h];
        let (a, b) = head.split_at_mut(h);
        for i in 0..h {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }

    /// Rotates every head of `rows` (`n` rows of `heads * head_dim`), row `r` at `start + r`.
    pub fn rotate_rows(&self, rows: &mut [f32], row_width: usize, start: usize) {
        let hd = 2 * self.half;
        for (r, row) in rows.chunks_exact_mut(row_width).enumerate() {
            for head in row.chunks_exact_mut(hd) {
                self.rotate(head, start + r);
            }
        }
    }
}

/// Maps GGUF's interleaved Q/K rows back to the HF layout: for each head, HF row
/// `a * head_dim / 2 + i` is GGUF row `2 * i + a`. Returns, for every HF row, its GGUF row.
pub(crate) fn gguf_to_hf_row_order(num_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(num_heads * head_dim);
    for h in 0..num_heads {
        for a in 0..2 {
            for i in 0..half {
                order.push(h * head_dim + 2 * i + a);
            }
        }
    }
    order
}

#[cfg(test)]
mod reference_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let t = RopeTable::new(base_inverse_frequencies(8, 10000.0), 16);
        let mut v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = v;
        t.rotate(&mut v, 0);
        assert_eq!(v, orig);
        t.rotate(&mut v, 7);
        let n0: f32 = orig.iter().map(|x| x * x).sum();
        let n1: f32 = v.iter().map(|x| x * x).sum();
        assert!((n0 - n1).abs() < 1e-3);
    }

    #[test]
    fn dot_product_depends_only_on_relative_position() {
        let t = RopeTable::new(base_inverse_frequencies(4, 10000.0), 64);
        let q = [0.3, -1.2, 0.5, 2.0];
        let k = [1.1, 0.4, -0.7, 0.9];
        let dot_at = |pq: usize, pk: usize| {
            let (mut a, mut b) = (q, k);
            t.rotate(&mut a, pq);
            t.rotate(&mut b, pk);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(10, 7) - dot_at(33, 30)).abs() < 1e-4);
    }

    #[test]
    fn gguf_order_is_a_permutation() {
        let mut o = gguf_to_hf_row_order(3, 8);
        assert_eq!(&o[..8], &[0, 2, 4, 6, 1, 3, 5, 7]);
        o.sort();
        assert_eq!(o, (0..24).collect::<Vec<_>>());
    }
}
