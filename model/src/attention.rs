//! Causal attention of new query positions against a sequence's cached K/V, split in two
//! steps so that sharing layers can reuse the probabilities of their source layer.

use crate::kernels::par_chunks_mut;
use crate::kv_cache::Rows;

/// Heads and widths of the attention computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Below this many scores the work runs on the calling thread: splitting costs more.
const PARALLEL_MIN_SCORES: usize = 4 * 1024;

impl AttentionShape {
    fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Number of floats of `P` for `t` queries after `start` cached positions.
    pub fn probs_len(&self, t: usize, start: usize) -> usize {
        self.num_heads * t * (start + t)
    }

    /// Attention probabilities `P = softmax(Q K^T / sqrt(d))` with a causal mask, laid out
    /// `(heads, t, start + t)`; masked entries are 0. `q` is `(t, heads * head_dim)`, `keys` holds
    /// `start + t` rows of `kv_heads * head_dim` (post-RoPE).
    pub fn probs(&self, q: &[f32], keys: &Rows<'_>, start: usize) -> Vec<f32> {
        let t = q.len() / self.q_dim();
        let total = start + t;
        let mut probs = vec![0f32; self.probs_len(t, start)];
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let head_job = |h: usize, p_head: &mut [f32]| {
            let kvh = h / self.group();
            for i in 0..t {
                let qi = &q[i * self.q_dim() + h * self.head_dim..][..self.head_dim];
                let row = &mut p_head[i * total..(i + 1) * total];
                let visible = start + i + 1;
                let mut max = f32::NEG_INFINITY;
                keys.for_each(visible, |j, key_row| {
                    let s = dot(qi, &key_row[kvh * self.head_dim..][..self.head_dim]) * scale;
                    row[j] = s;
                    max = max.max(s);
                });
                let mut sum = 0f32;
                for s in row[..visible].iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                for s in row[..visible].iter_mut() {
                    *s *= inv;
                }
            }
        };
        if probs.len() >= PARALLEL_MIN_SCORES {
            par_chunks_mut(&mut probs, t * total, head_job);
        } else {
            for (h, chunk) in probs.chunks_mut(t * total).enumerate() {
                head_job(h, chunk);
            }
        }
        probs
    }

    /// `P V` for `t` queries: `probs` as returned by [`Self::probs`], `values` holds at least
    /// `start + t` rows of `kv_dim`. Returns `(t, heads * head_dim)`.
    pub fn apply(&self, probs: &[f32], values: &Rows<'_>, t: usize, start: usize) -> Vec<f32> {
        let total = start + t;
        let hd = self.head_dim;
        let mut per_head = vec![0f32; self.num_heads * t * hd];
        let head_job = |h: usize, out: &mut [f32]| {
            let kvh = h / self.group();
            for i in 0..t {
                let p = &probs[(h * t + i) * total..][..start + i + 1];
                let o = &mut out[i * hd..(i + 1) * hd];
                values.for_each(p.len(), |j, value_row| {
                    axpy(p[j], &value_row[kvh * hd..][..hd], o);
                });
            }
        };
        if self.probs_len(t, start) >= PARALLEL_MIN_SCORES {
            par_chunks_mut(&mut per_head, t * hd, head_job);
        } else {
            for (h, chunk) in per_head.chunks_mut(t * hd).enumerate() {
                head_job(h, chunk);
            }
        }
        let mut out = vec![0f32; t * self.q_dim()];
        for h in 0..self.num_heads {
            for i in 0..t {
                out[i * self.q_dim() + h * hd..][..hd]
                    .copy_from_slice(&per_head[(h * t + i) * hd..][..hd]);
            }
        }
        out
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler vectorise without reassociating floats itself.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// Textbook attention, one query at a time, for comparison.
    fn reference(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], start: usize) -> Vec<f32> {
        let t = q.len() / (s.num_heads * s.head_dim);
        let mut out = vec![0f32; q.len()];
        for i in 0..t {
            for h in 0..s.num_heads {
                let kvh = h * s.num_kv_heads / s.num_heads;
                let qi = &q[(i * s.num_heads + h) * s.head_dim..][..s.head_dim];
                let scores: Vec<f64> = (0..=start + i)
                    .map(|j| {
                        let kj = &k[(j * s.num_kv_heads + kvh) * s.head_dim..][..s.head_dim];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| (*a * *b) as f64)
                            .sum::<f64>()
                            / (s.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - m).exp() / z;
                    let vj = &v[(j * s.num_kv_heads + kvh) * s.head_dim..][..s.head_dim];
                    for d in 0..s.head_dim {
                        out[(i * s.num_heads + h) * s.head_dim + d] += (p * vj[d] as f64) as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_on_random_inputs_with_odd_sizes() {
        let mut seed = 7u64;
        for &(heads, kv_heads, hd, start, t) in &[
            (3, 1, 5, 0, 7),
            (9, 3, 64, 11, 1),
            (4, 4, 6, 3, 9),
            (6, 2, 16, 0, 300),
        ] {
            let s = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
            };
            let total = start + t;
            let q: Vec<f32> = (0..t * heads * hd).map(|_| lcg(&mut seed)).collect();
            let k: Vec<f32> = (0..total * kv_heads * hd).map(|_| lcg(&mut seed)).collect();
            let v: Vec<f32> = (0..total * kv_heads * hd).map(|_| lcg(&mut seed)).collect();
            // Keys in one buffer, values in blocks of 4 rows: both layouts must agree.
            let kv = kv_heads * hd;
            let keys = Rows::contiguous(&k, kv);
            let values = Rows {
                chunks: v.chunks(4 * kv).collect(),
                rows_per_chunk: 4,
                width: kv,
            };
            let p = s.probs(&q, &keys, start);
            let got = s.apply(&p, &values, t, start);
            let want = reference(&s, &q, &k, &v, start);
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max < 1e-5,
                "max diff {max} for {heads}/{kv_heads}/{hd}/{start}/{t}"
            );
            // Each probability row sums to 1 over the visible positions.
            for row in p.chunks(total) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5);
            }
        }
    }
}
