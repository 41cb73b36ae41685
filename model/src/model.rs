//! The EPAS LLaMA: one forward for every caller. Each sequence of a batch carries its own
//! sharing plan; rows are ordered by sharing depth so that, at every layer, the rows that still
//! compute Q/K form a contiguous prefix and their projections run on one slice.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::attention::{AttentionShape, ProbsSource, SequenceAttention};
use crate::config::ModelInfo;
use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, KvDtype, SequenceCache};
use crate::linear::{project, Embedding, Linear};
use crate::paged::{BlockPool, PagedSequence};
use crate::rope::RopeTable;
use crate::sharing::SharingPlan;
use crate::device_forward::{DeviceWeights, DeviceForward, DeviceModel};
use crate::vector_ops::{add_in_place, rms_norm_rows, silu_mul_in_place};

/// False in builds with the `no-sharing` feature: the forward then ignores sharing plans (every
/// layer computes Q/K for every sequence), which measures what the sharing machinery costs at
/// ratio 0. Never used for serving.
const SHARING: bool = !cfg!(feature = "no-sharing");

/// Weights of one decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub mlp_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// How sharing layers obtain their attention probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedAttention {
    /// Keep the source layer's `P` and compute only `P V` (skips `Q K^T` and softmax), unless `P`
    /// of one sequence would exceed `max_probs_floats`, then recompute.
    ReuseProbabilities { max_probs_floats: usize },
    /// Recompute `softmax(Q K^T)` from the source layer's Q and K in every sharing layer.
    Recompute,
}

/// 2^28 values: a group's keys take 1 GiB in f32, for one layer at a time.
const DEFAULT_MAX_GROUP_VALUES: usize = 1 << 28;

impl Default for SharedAttention {
    fn default() -> Self {
        Self::ReuseProbabilities {
            // 48M floats (192 MB): P of a 2048-token prefill, or a 512-token chunk at the
            // end of an 8192-token context, stays reusable.
            max_probs_floats: 48 << 20,
        }
    }
}

/// Which logits a sequence wants from a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new position (generation).
    Last,
    /// Every new position (perplexity).
    All,
    /// None (a prefill chunk that is not the prompt's last).
    Skip,
}

/// One sequence's part of a forward: new tokens appended after what its cache holds.
pub struct SequenceStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut dyn KvCache,
    pub logits: Logits,
}

/// What the source layer leaves for the sharing layers of one sequence.
struct SourceActivations {
    q: Vec<f32>,
    probs: Option<Vec<f32>>,
}

/// A loaded EPAS LLaMA.
#[derive(Debug, Clone)]
pub struct EpasLlama {
    pub info: ModelInfo,
    pub embed: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    rope: RopeTable,
    shape: AttentionShape,
    shared_attention: SharedAttention,
    kv_dtype: KvDtype,
    /// Tensor forward: most values one decode attention group gathers (see `device_forward`).
    max_group_values: usize,
    device: Device,
    /// Weights on a device for the tensor forward ([`Self::on_device`]); `None`: host kernels.
    tensor: Option<Arc<DeviceModel>>,
}

impl EpasLlama {
    pub fn new(
        info: ModelInfo,
        embed: Embedding,
        layers: Vec<DecoderLayer>,
        norm: Tensor,
        lm_head: Linear,
    ) -> Result<Self> {
        let c = &info.config;
        c.validate()?;
        if layers.len() != c.num_layers {
            return Err(ModelError::Config(format!(
                "{} layers loaded, the config says {}",
                layers.len(),
                c.num_layers
            )));
        }
        let rope = RopeTable::for_config(c, c.max_position_embeddings);
        let shape = AttentionShape {
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim(),
        };
        let device = norm.device().clone();
        Ok(Self {
            info,
            embed,
            layers,
            norm,
            lm_head,
            rope,
            shape,
            shared_attention: SharedAttention::default(),
            kv_dtype: KvDtype::F32,
            max_group_values: DEFAULT_MAX_GROUP_VALUES,
            device,
            tensor: None,
        })
    }

    pub fn config(&self) -> &crate::config::LlamaConfig {
        &self.info.config
    }

    /// Bytes the host weights take in memory (a tied LM head packed for the kernels counts
    /// apart from the embedding table it was made from).
    pub fn weight_bytes(&self) -> usize {
        use crate::linear::tensor_bytes;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|w| w.bytes())
                    .sum::<usize>()
                    + tensor_bytes(&l.attn_norm)
                    + tensor_bytes(&l.mlp_norm)
            })
            .sum();
        self.embed.bytes() + layers + tensor_bytes(&self.norm) + self.lm_head.bytes()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model running its forward as tensor ops on `device` with activations in `dtype`
    /// (f32, f16 or bf16) and quantized matrices dequantized to it or kept as GGUF blocks
    /// (`weights`). This is how it runs on CUDA; on the CPU it is the slower reference of the
    /// host kernels. Caches must then come from [`Self::block_pool`] or [`Self::new_cache`].
    pub fn on_device(
        mut self,
        device: &Device,
        dtype: DType,
        weights: DeviceWeights,
    ) -> Result<Self> {
        self.tensor = Some(Arc::new(DeviceModel::from_host(
            &self, device, dtype, weights,
        )?));
        self.device = device.clone();
        Ok(self)
    }

    /// The compute dtype of the tensor forward; `None` when the host kernels run.
    pub fn tensor_dtype(&self) -> Option<DType> {
        self.tensor.as_ref().map(|t| t.dtype())
    }

    /// A block pool for caches this model can run: host blocks, or one arena on the model's
    /// device for the tensor forward.
    pub fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> Result<BlockPool> {
        let width = self.config().kv_dim();
        match &self.tensor {
            None => BlockPool::new(blocks, block_size, width, dtype),
            Some(t) => BlockPool::on_device(blocks, block_size, width, dtype, t.device()),
        }
    }

    /// A cache for one sequence of up to `tokens` positions under `plan`: contiguous on the
    /// host, or its own device pool for the tensor forward.
    pub fn new_cache(&self, plan: SharingPlan, tokens: usize) -> Result<Box<dyn KvCache>> {
        if self.tensor.is_none() {
            return Ok(Box::new(SequenceCache::with_dtype(
                self.config(),
                plan,
                tokens,
                self.kv_dtype,
            )));
        }
        let pool = self.pool_for(&[(plan, tokens)])?;
        Ok(Box::new(PagedSequence::new(pool, plan)))
    }

    /// A pool (16-row blocks, the model's K/V dtype) just large enough for sequences of the
    /// given plans and lengths, for callers outside the serving engine.
    pub fn pool_for(&self, sequences: &[(SharingPlan, usize)]) -> Result<BlockPool> {
        const BLOCK: usize = 16;
        let blocks = sequences
            .iter()
            .map(|(plan, tokens)| PagedSequence::blocks_for(plan, *tokens, BLOCK))
            .sum();
        self.block_pool(blocks, BLOCK, self.kv_dtype)
    }

    /// Runs every kind of step once, so a device compiles and loads its kernels before the
    /// first request: two sequences (no sharing, and half the layers sharing) prefill together,
    /// then decode two tokens together. The caches are dropped.
    pub fn warm_up(&self) -> Result<()> {
        let layers = self.config().num_layers;
        let plans = [
            SharingPlan::none(layers),
            SharingPlan::with_sharing_layers(layers, layers / 2)?,
        ];
        let pool = self.pool_for(&plans.map(|p| (p, 5)))?;
        let mut caches: Vec<PagedSequence> = plans
            .iter()
            .map(|p| PagedSequence::new(pool.clone(), *p))
            .collect();
        for tokens in [&[1u32, 2, 3][..], &[4], &[5]] {
            let mut steps: Vec<SequenceStep<'_>> = caches
                .iter_mut()
                .map(|cache| SequenceStep {
                    tokens,
                    cache,
                    logits: Logits::Last,
                })
                .collect();
            self.forward(&mut steps)?;
        }
        Ok(())
    }

    pub(crate) fn rope_tables(&self) -> (&[f32], &[f32]) {
        self.rope.cos_sin(self.rope.max_positions())
    }

    /// Longest sequence (prompt plus generated tokens) the model can hold.
    pub fn max_context(&self) -> usize {
        self.rope.max_positions()
    }

    pub fn set_shared_attention(&mut self, mode: SharedAttention) {
        self.shared_attention = mode;
    }

    pub fn shared_attention(&self) -> SharedAttention {
        self.shared_attention
    }

    /// On a device: decode sequences attend in groups whose gathered keys hold at most this
    /// many values (members x padded length x the larger of kv_dim and the query heads); a
    /// larger batch runs as several groups. Bounds one layer's attention memory; never above
    /// the 2^31 elements candle's CUDA kernels index.
    pub fn set_max_group_values(&mut self, values: usize) {
        self.max_group_values = values.max(1);
    }

    /// Element type of the K/V caches this model's callers make (f32 unless set).
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    pub fn set_kv_dtype(&mut self, dtype: KvDtype) {
        self.kv_dtype = dtype;
    }

    /// Runs new tokens of every sequence through the model, appends their K/V to each cache
    /// and returns the logits each asked for, `(positions, vocab)`, in the order of `steps`.
    /// On error no cache is changed.
    pub fn forward(&self, steps: &mut [SequenceStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        self.validate(steps)?;
        for s in steps.iter_mut() {
            s.cache.reserve(s.tokens.len())?;
        }
        let result = self.forward_validated(steps);
        match &result {
            Ok(_) => steps
                .iter_mut()
                .for_each(|s| s.cache.commit(s.tokens.len())),
            Err(_) => steps.iter_mut().for_each(|s| s.cache.rollback()),
        }
        result
    }

    fn validate(&self, steps: &[SequenceStep<'_>]) -> Result<()> {
        let c = self.config();
        if steps.is_empty() {
            return Err(ModelError::Batch("no sequences".into()));
        }
        for s in steps {
            if s.tokens.is_empty() {
                return Err(ModelError::EmptyPrompt);
            }
            let total = s.cache.len() + s.tokens.len();
            if total > self.max_context() {
                return Err(ModelError::ContextExceeded {
                    tokens: total,
                    context: self.max_context(),
                });
            }
            if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: c.vocab_size,
                });
            }
            if s.cache.arena().is_some() != self.tensor.is_some() {
                return Err(ModelError::Batch(
                    "cache storage does not match the model: device models need device-pool \
                     caches, host models host caches"
                        .into(),
                ));
            }
            if s.cache.plan().num_layers() != c.num_layers {
                return Err(ModelError::Batch(format!(
                    "cache made for {} layers, model has {}",
                    s.cache.plan().num_layers(),
                    c.num_layers
                )));
            }
        }
        Ok(())
    }

    fn forward_validated(&self, steps: &mut [SequenceStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        if let Some(tensor) = &self.tensor {
            let c = self.config();
            return DeviceForward {
                model: tensor,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim(),
                eps: c.rms_norm_eps as f32,
                shared: self.shared_attention,
                sharing: SHARING,
                max_group_values: self.max_group_values,
            }
            .run(steps);
        }
        let c = self.config();
        let (q_dim, kv_dim) = (c.hidden_size, c.kv_dim());
        let eps = c.rms_norm_eps as f32;
        let order = depth_order(steps, SHARING);
        let mut offsets = Vec::with_capacity(order.len());
        let mut ids = Vec::new();
        for &i in &order {
            offsets.push(ids.len());
            ids.extend_from_slice(steps[i].tokens);
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, n, &self.device)?;
        let mut x = to_vec(&self.embed.lookup(&ids)?)?;
        let mut source: Vec<Option<SourceActivations>> = (0..steps.len()).map(|_| None).collect();

        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm_rows(&x, &to_vec(&layer.attn_norm)?, eps);
            let computing = computing_prefix(steps, &order, l, SHARING);
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
                    let probs_len = self.shape.probs_len(t, start);
                    let reuse = match self.shared_attention {
                        SharedAttention::ReuseProbabilities { max_probs_floats } => {
                            probs_len <= max_probs_floats
                        }
                        SharedAttention::Recompute => false,
                    };
                    if SHARING && reuse && step.cache.plan().source_layer() == Some(l) {
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
                if SHARING && steps[i].cache.plan().source_layer() == Some(l) {
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
        let q_dim = self.config().hidden_size;
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
        self.shape.attend(&mut seqs);
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
        let hidden = self.config().hidden_size;
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
            &to_vec(&self.norm)?,
            self.config().rms_norm_eps as f32,
        );
        let logits = pop(&mut project(&normed, count, &[(&self.lm_head, count)])?)?;
        let vocab = logits.len() / count;
        let logits = Tensor::from_vec(logits, (count, vocab), &self.device)?;
        split_rows(&logits, ranges)
    }

    /// Logits of every position of `tokens` for a fresh sequence under `plan` (no cache kept).
    pub fn forward_sequence(&self, tokens: &[u32], plan: SharingPlan) -> Result<Tensor> {
        let mut cache = self.new_cache(plan, tokens.len())?;
        let mut steps = [SequenceStep {
            tokens,
            cache: cache.as_mut(),
            logits: Logits::All,
        }];
        let mut out = self.forward(&mut steps)?;
        out.pop()
            .flatten()
            .ok_or_else(|| ModelError::Batch("no logits returned".into()))
    }
}

/// The steps' indices, shallow sharing first (when `sharing`): the rows computing Q/K at any
/// layer are then a prefix of the batch.
pub(crate) fn depth_order(steps: &[SequenceStep<'_>], sharing: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..steps.len()).collect();
    if sharing {
        order.sort_by_key(|&i| steps[i].cache.plan().sharing_layers());
    }
    order
}

/// How many sequences of `order` (from [`depth_order`]) compute Q/K at `layer`.
pub(crate) fn computing_prefix(
    steps: &[SequenceStep<'_>],
    order: &[usize],
    layer: usize,
    sharing: bool,
) -> usize {
    if !sharing {
        return order.len();
    }
    order
        .iter()
        .take_while(|&&i| steps[i].cache.plan().computes(layer))
        .count()
}

/// Each sequence's `(first row, rows)` of `logits`, or `None`.
pub(crate) fn split_rows(
    logits: &Tensor,
    ranges: Vec<Option<(usize, usize)>>,
) -> Result<Vec<Option<Tensor>>> {
    ranges
        .into_iter()
        .map(|r| {
            r.map(|(start, len)| Ok(logits.narrow(0, start, len)?))
                .transpose()
        })
        .collect()
}

fn pop(outputs: &mut Vec<Vec<f32>>) -> Result<Vec<f32>> {
    outputs
        .pop()
        .ok_or_else(|| ModelError::Batch("a projection returned nothing".into()))
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl EpasLlama {
    /// Replaces every quantized linear layer by its dense f32 form (more memory, f32 accuracy).
    pub fn dequantize_weights(&mut self) -> Result<()> {
        let dense = |l: &Linear| -> Result<Linear> { Linear::dense(l.dequantized()?) };
        for layer in &mut self.layers {
            for l in [
                &mut layer.wq,
                &mut layer.wk,
                &mut layer.wv,
                &mut layer.wo,
                &mut layer.gate,
                &mut layer.up,
                &mut layer.down,
            ] {
                *l = dense(l)?;
            }
        }
        self.lm_head = dense(&self.lm_head)?;
        self.info.weight_format = "f32".into();
        Ok(())
    }
}
