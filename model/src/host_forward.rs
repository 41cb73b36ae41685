//! The forward on the host: this crate's SIMD kernels over [`HostWeights`], on slices. Rows are
//! ordered by sharing depth so that, at every layer, the rows that still compute Q/K form a
//! contiguous prefix and their projections run on one slice.

use candle_core::{DType, Tensor};

use crate::attention::{AttentionShape, ProbsSource, SequenceAttention};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::host_weights::HostWeights;
use crate::linear::project;
use crate::model::{
    computing_prefix, depth_order, split_rows, Logits, SequenceStep, SharedAttention,
};
use crate::rope::RopeTable;
use crate::vector_ops::{add_in_place, rms_norm_rows, silu_mul_in_place};

/// What the source layer leaves for the sharing layers of one sequence.
struct SourceActivations {
    q: Vec<f32>,
    probs: Option<Vec<f32>>,
}

/// The model's weights, shape and options for one forward on the host.
pub(crate) struct HostForward<'a> {
    pub weights: &'a HostWeights,
    pub config: &'a LlamaConfig,
    pub rope: &'a RopeTable,
    pub shared: SharedAttention,
    /// False in `no-sharing` builds: every layer computes Q/K.
    pub sharing: bool,
}

impl HostForward<'_> {
    /// Runs a validated step whose room is reserved.
    pub(crate) fn run(&self, steps: &mut [SequenceStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        let c = self.config;
        let (q_dim, kv_dim) = (c.hidden_size, c.kv_dim());
        let eps = c.rms_norm_eps as f32;
        let (w, shape) = (self.weights, self.shape());
        let order = depth_order(steps, self.sharing);
        let mut offsets = Vec::with_capacity(order.len());
        let mut ids = Vec::new();
        for &i in &order {
            offsets.push(ids.len());
            ids.extend_from_slice(steps[i].tokens);
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, n, self.weights.norm.device())?;
        let mut x = to_vec(&w.embed.lookup(&ids)?)?;
        let mut source: Vec<Option<SourceActivations>> = (0..steps.len()).map(|_| None).collect();

        for (l, layer) in w.layers.iter().enumerate() {
            let h = rms_norm_rows(&x, &to_vec(&layer.attn_norm)?, eps);
            let computing = computing_prefix(steps, &order, l, self.sharing);
            let n_compute = if computing == order.len() {
                n
            } else {
                offsets[computing]
            };
            let mut proj = project(
                &h,
                n,
                &[
                    (&layer.wv, n),
                    (&layer.wq, n_compute),
                    (&layer.wk, n_compute),
                ],
            )?;
            let (mut k, mut q, values) = (pop(&mut proj)?, pop(&mut proj)?, pop(&mut proj)?);
            let mut keep: Vec<Option<Vec<f32>>> = Vec::with_capacity(order.len());
            for (slot, &i) in order.iter().enumerate() {
                let step = &mut steps[i];
                let (t, start, off) = (step.tokens.len(), step.cache.len(), offsets[slot]);
                let v_rows = &values[off * kv_dim..(off + t) * kv_dim];
                let mut kept = None;
                if slot < computing {
                    let q_rows = &mut q[off * q_dim..(off + t) * q_dim];
                    let k_rows = &mut k[off * kv_dim..(off + t) * kv_dim];
                    self.rope.rotate_rows(q_rows, q_dim, start);
                    self.rope.rotate_rows(k_rows, kv_dim, start);
                    step.cache.append(l, Some(k_rows), v_rows);
                    let probs_len = shape.probs_len(t, start);
                    let reuse = match self.shared {
                        SharedAttention::ReuseProbabilities { max_probs_floats } => {
                            probs_len <= max_probs_floats
                        }
                        SharedAttention::Recompute => false,
                    };
                    if self.sharing && reuse && step.cache.plan().source_layer() == Some(l) {
                        kept = Some(vec![0f32; probs_len]);
                    }
                } else {
                    step.cache.append(l, None, v_rows);
                }
                keep.push(kept);
            }
            let mut attn = vec![0f32; n * q_dim];
            self.attend_layer(
                steps, &order, &offsets, l, computing, &q, &source, &mut keep, &mut attn,
            )?;
            for (slot, &i) in order.iter().enumerate().take(computing) {
                if self.sharing && steps[i].cache.plan().source_layer() == Some(l) {
                    let (t, off) = (steps[i].tokens.len(), offsets[slot]);
                    source[i] = Some(SourceActivations {
                        q: q[off * q_dim..(off + t) * q_dim].to_vec(),
                        probs: keep[slot].take(),
                    });
                }
            }
            add_in_place(&mut x, &pop(&mut project(&attn, n, &[(&layer.wo, n)])?)?);
            let h = rms_norm_rows(&x, &to_vec(&layer.mlp_norm)?, eps);
            let mut gate_up = project(&h, n, &[(&layer.gate, n), (&layer.up, n)])?;
            let up = pop(&mut gate_up)?;
            let mut gate = pop(&mut gate_up)?;
            silu_mul_in_place(&mut gate, &up);
            add_in_place(&mut x, &pop(&mut project(&gate, n, &[(&layer.down, n)])?)?);
        }
        self.logits(steps, &order, &offsets, &x)
    }

    /// Attention of every sequence at layer `l` in one parallel region: compute rows from their
    /// own Q and keys, sharing rows from their source layer's probabilities (or its Q and keys
    /// when those were not kept).
    #[allow(clippy::too_many_arguments)]
    fn attend_layer(
        &self,
        steps: &[SequenceStep<'_>],
        order: &[usize],
        offsets: &[usize],
        l: usize,
        computing: usize,
        q: &[f32],
        source: &[Option<SourceActivations>],
        keep: &mut [Option<Vec<f32>>],
        attn: &mut [f32],
    ) -> Result<()> {
        let q_dim = self.config.hidden_size;
        let mut rest = attn;
        let mut seqs = Vec::with_capacity(order.len());
        for ((slot, &i), kept) in order.iter().enumerate().zip(keep.iter_mut()) {
            let step = &steps[i];
            let (t, start, off) = (step.tokens.len(), step.cache.len(), offsets[slot]);
            let (out, tail) = rest.split_at_mut(t * q_dim);
            rest = tail;
            let probs = if slot < computing {
                let keys = step
                    .cache
                    .keys(l)
                    .ok_or_else(|| ModelError::Batch(format!("compute layer {l} holds no keys")))?;
                ProbsSource::Compute {
                    q: &q[off * q_dim..(off + t) * q_dim],
                    keys,
                }
            } else {
                let src = source[i].as_ref().ok_or_else(|| {
                    ModelError::Batch(format!("layer {l} shares but its source did not run"))
                })?;
                match &src.probs {
                    Some(p) => ProbsSource::Reuse(p),
                    None => {
                        let src_layer = step.cache.plan().source_layer().unwrap_or(0);
                        let keys = step.cache.keys(src_layer).ok_or_else(|| {
                            ModelError::Batch("source layer holds no keys".into())
                        })?;
                        ProbsSource::Compute { q: &src.q, keys }
                    }
                }
            };
            seqs.push(SequenceAttention {
                t,
                start,
                probs,
                values: step.cache.values(l),
                keep_probs: kept.as_deref_mut(),
                out,
            });
        }
        self.shape().attend(&mut seqs);
        Ok(())
    }

    /// Final norm and LM head over only the rows whose logits were asked for.
    fn logits(
        &self,
        steps: &[SequenceStep<'_>],
        order: &[usize],
        offsets: &[usize],
        x: &[f32],
    ) -> Result<Vec<Option<Tensor>>> {
        let hidden = self.config.hidden_size;
        let mut rows: Vec<f32> = Vec::new();
        let mut ranges = vec![None; steps.len()];
        let mut count = 0;
        for (slot, &i) in order.iter().enumerate() {
            let (t, off) = (steps[i].tokens.len(), offsets[slot]);
            let wanted = match steps[i].logits {
                Logits::Skip => continue,
                Logits::Last => (off + t - 1)..(off + t),
                Logits::All => off..(off + t),
            };
            ranges[i] = Some((count, wanted.len()));
            count += wanted.len();
            rows.extend_from_slice(&x[wanted.start * hidden..wanted.end * hidden]);
        }
        if count == 0 {
            return Ok(vec![None; steps.len()]);
        }
        let normed = rms_norm_rows(
            &rows,
            &to_vec(&self.weights.norm)?,
            self.config.rms_norm_eps as f32,
        );
        let logits = pop(&mut project(
            &normed,
            count,
            &[(&self.weights.lm_head, count)],
        )?)?;
        let vocab = logits.len() / count;
        let logits = Tensor::from_vec(logits, (count, vocab), self.weights.norm.device())?;
        split_rows(&logits, ranges)
    }

    fn shape(&self) -> AttentionShape {
        AttentionShape {
            num_heads: self.config.num_heads,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim(),
        }
    }
}

fn pop(outputs: &mut Vec<Vec<f32>>) -> Result<Vec<f32>> {
    outputs
        .pop()
        .ok_or_else(|| ModelError::Batch("a projection returned nothing".into()))
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
