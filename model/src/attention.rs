//! Causal attention of new query positions against a sequence's cached K/V, split in two
//! steps so that sharing layers can reuse the probabilities of their source layer.

use crate::attention_kernels;
use crate::kernels::{DisjointMut, SpinPool};
use crate::kv_cache::Rows;

/// Heads and widths of the attention computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Query rows per parallel task: long prompts split across threads, decode rows stay whole.
const QUERY_CHUNK: usize = 32;

/// Tasks per thread below which attention splits work by single heads.
const TASKS_PER_THREAD: usize = 4;

/// Where a sequence's attention probabilities come from.
pub(crate) enum ProbsSource<'a> {
    /// `softmax(Q K^T / sqrt(d))` from `q` (`(t, heads * head_dim)`, post-RoPE) and `keys`
    /// (at least `start + t` rows of `kv_heads * head_dim`).
    Compute { q: &'a [f32], keys: Rows<'a> },
    /// Probabilities computed by an earlier layer, laid out as [`AttentionShape::probs_len`].
    Reuse(&'a [f32]),
}

/// One sequence's attention in one layer: `t` new queries after `start` cached positions.
pub(crate) struct SequenceAttention<'a> {
    pub t: usize,
    pub start: usize,
    pub probs: ProbsSource<'a>,
    /// At least `start + t` rows of `kv_heads * head_dim`.
    pub values: Rows<'a>,
    /// Receives `P`, `(heads, t, start + t)` with masked entries 0, when given (a source layer
    /// keeps it for its sharing layers). Must be zeroed.
    pub keep_probs: Option<&'a mut [f32]>,
    /// `(t, heads * head_dim)`.
    pub out: &'a mut [f32],
}

impl AttentionShape {
    fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Number of floats of `P` for `t` queries after `start` cached positions.
    pub(crate) fn probs_len(&self, t: usize, start: usize) -> usize {
        self.num_heads * t * (start + t)
    }

    /// Causal attention of every sequence, in one parallel region of (sequence, heads, query
    /// chunk) tasks. A task takes all query heads of one K/V head when there are enough tasks
    /// to keep the threads busy (each key and value row then comes from memory once and from
    /// cache for the other heads), single heads otherwise. Each output value depends only on
    /// its own sequence.
    pub(crate) fn attend(&self, seqs: &mut [SequenceAttention<'_>]) {
        assert!(
            self.num_kv_heads > 0 && self.num_heads.is_multiple_of(self.num_kv_heads),
            "query heads must be a multiple of K/V heads"
        );
        let chunks: usize = seqs.iter().map(|s| s.t.div_ceil(QUERY_CHUNK)).sum();
        let heads_per_task =
            if chunks * self.num_kv_heads >= TASKS_PER_THREAD * SpinPool::global().threads() {
                self.group()
            } else {
                1
            };
        let mut tasks = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            assert_eq!(
                seq.out.len(),
                seq.t * self.q_dim(),
                "attention output shape"
            );
            match &seq.probs {
                ProbsSource::Compute { q, .. } => assert_eq!(q.len(), seq.t * self.q_dim()),
                ProbsSource::Reuse(p) => assert_eq!(p.len(), self.probs_len(seq.t, seq.start)),
            }
            if let Some(keep) = &seq.keep_probs {
                assert_eq!(keep.len(), self.probs_len(seq.t, seq.start));
            }
            for h in (0..self.num_heads).step_by(heads_per_task) {
                for i0 in (0..seq.t).step_by(QUERY_CHUNK) {
                    tasks.push((s, h, i0, (i0 + QUERY_CHUNK).min(seq.t)));
                }
            }
        }
        // Tasks write disjoint (head, query row) parts of the outputs and the kept P.
        let ptrs: Vec<(DisjointMut<f32>, Option<DisjointMut<f32>>)> = seqs
            .iter_mut()
            .map(|s| {
                let keep = s.keep_probs.as_deref_mut().map(DisjointMut::new);
                (DisjointMut::new(s.out), keep)
            })
            .collect();
        let (seqs, ptrs, tasks) = (&*seqs, &ptrs, &tasks);
        SpinPool::global().run(tasks.len(), &|task| {
            let (s, h0, i0, i1) = tasks[task];
            for h in h0..h0 + heads_per_task {
                self.head_task(&seqs[s], &ptrs[s], h, i0, i1);
            }
        });
    }

    /// Head `h` of query rows `i0..i1` of one sequence.
    fn head_task(
        &self,
        seq: &SequenceAttention<'_>,
        ptrs: &(DisjointMut<f32>, Option<DisjointMut<f32>>),
        h: usize,
        i0: usize,
        i1: usize,
    ) {
        let total = seq.start + seq.t;
        let rows = i1 - i0;
        let mut scratch = Vec::new();
        let probs: &[f32] = match &seq.probs {
            ProbsSource::Reuse(p) => &p[(h * seq.t + i0) * total..(h * seq.t + i1) * total],
            ProbsSource::Compute { q, keys } => {
                let dst: &mut [f32] = match &ptrs.1 {
                    // SAFETY: rows i0..i1 of head h in P belong to this task only.
                    Some(keep) => unsafe {
                        std::slice::from_raw_parts_mut(
                            keep.ptr().add((h * seq.t + i0) * total),
                            rows * total,
                        )
                    },
                    None => {
                        scratch.resize(rows * total, 0f32);
                        &mut scratch
                    }
                };
                self.head_probs(q, keys, seq.start, h, i0..i1, dst);
                dst
            }
        };
        for (r, i) in (i0..i1).enumerate() {
            let p = &probs[r * total..][..seq.start + i + 1];
            // SAFETY: columns of head h in output row i belong to this task only.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    ptrs.0.ptr().add(i * self.q_dim() + h * self.head_dim),
                    self.head_dim,
                )
            };
            self.head_apply(p, &seq.values, h, out);
        }
    }

    /// Rows `queries` of head `h`'s probabilities into `dst` (`queries.len()` rows of
    /// `start + t`); entries past each row's visible positions are left untouched.
    fn head_probs(
        &self,
        q: &[f32],
        keys: &Rows<'_>,
        start: usize,
        h: usize,
        queries: std::ops::Range<usize>,
        dst: &mut [f32],
    ) {
        let hd = self.head_dim;
        let total = dst.len() / queries.len();
        let scale = 1.0 / (hd as f32).sqrt();
        let kv_off = h / self.group() * hd;
        for (r, i) in queries.enumerate() {
            let qi = &q[i * self.q_dim() + h * hd..][..hd];
            let row = &mut dst[r * total..][..start + i + 1];
            keys.for_each_run(row.len(), |j, run| {
                let n = run.len() / keys.width;
                attention_kernels::scores(qi, run, keys.width, kv_off, scale, &mut row[j..j + n]);
            });
            attention_kernels::softmax_in_place(row);
        }
    }

    /// `out = sum_j p[j] V[j]` over head `h`'s value columns.
    fn head_apply(&self, p: &[f32], values: &Rows<'_>, h: usize, out: &mut [f32]) {
        let hd = self.head_dim;
        let kv_off = h / self.group() * hd;
        let (mut stack, mut heap) = ([0f32; 256], Vec::new());
        let acc: &mut [f32] = if 2 * hd <= stack.len() {
            &mut stack[..2 * hd]
        } else {
            heap.resize(2 * hd, 0f32);
            &mut heap
        };
        values.for_each_run(p.len(), |j, run| {
            let n = run.len() / values.width;
            attention_kernels::apply(&p[j..j + n], j, run, values.width, kv_off, acc);
        });
        attention_kernels::finish_apply(acc, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvSlice;

    use crate::test_random::uniform as lcg;

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
            (9, 3, 64, 0, 96),
            (9, 3, 64, 5, 40),
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
            // Keys in one buffer, values in blocks of 4 rows: both layouts must agree. The f16
            // cache must match the reference on the same rounded values.
            let kv = kv_heads * hd;
            let round = |x: &[f32]| -> Vec<half::f16> {
                x.iter().map(|&v| half::f16::from_f32(v)).collect()
            };
            let (k16, v16) = (round(&k), round(&v));
            let widen = |x: &[half::f16]| -> Vec<f32> { x.iter().map(|v| v.to_f32()).collect() };
            let (k_rounded, v_rounded) = (widen(&k16), widen(&v16));
            let cases = [
                (
                    KvSlice::F32(&k),
                    v.chunks(4 * kv).map(KvSlice::F32).collect::<Vec<_>>(),
                    &k,
                    &v,
                ),
                (
                    KvSlice::F16(&k16),
                    v16.chunks(4 * kv).map(KvSlice::F16).collect(),
                    &k_rounded,
                    &v_rounded,
                ),
            ];
            for (keys, value_chunks, k_ref, v_ref) in cases {
                let keys = Rows::contiguous(keys, kv);
                let values = Rows {
                    chunks: value_chunks,
                    rows_per_chunk: 4,
                    width: kv,
                };
                let mut p = vec![0f32; s.probs_len(t, start)];
                let mut got = vec![0f32; t * heads * hd];
                s.attend(&mut [SequenceAttention {
                    t,
                    start,
                    probs: ProbsSource::Compute { q: &q, keys },
                    values: values.clone(),
                    keep_probs: Some(&mut p),
                    out: &mut got,
                }]);
                // Sharing layers apply the kept probabilities: the same output.
                let mut reused = vec![0f32; t * heads * hd];
                s.attend(&mut [SequenceAttention {
                    t,
                    start,
                    probs: ProbsSource::Reuse(&p),
                    values,
                    keep_probs: None,
                    out: &mut reused,
                }]);
                assert_eq!(got, reused);
                let want = reference(&s, &q, k_ref, v_ref, start);
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
    #[test]
    fn a_sequence_gets_the_same_bits_alone_and_among_many() {
        // Alone, a one-query sequence is split by single heads; among many, by K/V head groups.
        let s = AttentionShape {
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
        };
        let mut seed = 3u64;
        let kv = 3 * 64;
        let seqs: Vec<(Vec<f32>, Vec<half::f16>, Vec<half::f16>)> = (0..12)
            .map(|n| {
                let total = 20 + n;
                let q = (0..9 * 64).map(|_| lcg(&mut seed)).collect();
                let mut f16s = |len: usize| -> Vec<half::f16> {
                    (0..len)
                        .map(|_| half::f16::from_f32(lcg(&mut seed)))
                        .collect()
                };
                (q, f16s(total * kv), f16s(total * kv))
            })
            .collect();
        let attend = |which: &[usize]| -> Vec<Vec<f32>> {
            let mut outs = vec![vec![0f32; 9 * 64]; which.len()];
            let mut batch: Vec<SequenceAttention<'_>> = which
                .iter()
                .zip(outs.iter_mut())
                .map(|(&n, out)| {
                    let (q, k, v) = &seqs[n];
                    SequenceAttention {
                        t: 1,
                        start: k.len() / kv - 1,
                        probs: ProbsSource::Compute {
                            q,
                            keys: Rows {
                                chunks: k.chunks(16 * kv).map(KvSlice::F16).collect(),
                                rows_per_chunk: 16,
                                width: kv,
                            },
                        },
                        values: Rows {
                            chunks: v.chunks(16 * kv).map(KvSlice::F16).collect(),
                            rows_per_chunk: 16,
                            width: kv,
                        },
                        keep_probs: None,
                        out,
                    }
                })
                .collect();
            s.attend(&mut batch);
            drop(batch);
            outs
        };
        let all: Vec<usize> = (0..12).collect();
        let together = attend(&all);
        for n in all {
            assert_eq!(attend(&[n])[0], together[n], "sequence {n}");
        }
    }
}
