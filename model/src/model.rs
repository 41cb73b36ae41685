//! The EPAS LLaMA: one model for every caller, its weights on a backend (host memory and this
//! crate's kernels, or a device and tensor ops); one forward over a batch in which each sequence
//! carries its own sharing plan. The caches follow the backend.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelInfo;
use crate::device_forward::{DeviceForward, DeviceModel, DeviceWeights};
use crate::error::{ModelError, Result};
use crate::host_forward::HostForward;
use crate::host_weights::HostWeights;
use crate::kv_cache::{KvCache, KvDtype, SequenceCache};
use crate::paged::{BlockPool, PagedSequence};
use crate::rope::RopeTable;
use crate::sharing::SharingPlan;

/// False in builds with the `no-sharing` feature: the forward then ignores sharing plans (every
/// layer computes Q/K for every sequence), which measures what the sharing machinery costs at
/// ratio 0. Never used for serving.
const SHARING: bool = !cfg!(feature = "no-sharing");

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

/// Where a model's weights live and which forward runs them.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Host memory, run by this crate's SIMD kernels.
    Host(HostWeights),
    /// A device (CUDA, or the CPU to check this path), run as candle tensor ops.
    Device(Arc<DeviceModel>),
}

/// A loaded EPAS LLaMA.
#[derive(Debug, Clone)]
pub struct EpasLlama {
    pub info: ModelInfo,
    rope: RopeTable,
    shared_attention: SharedAttention,
    kv_dtype: KvDtype,
    /// On a device: most values one decode attention group gathers (see `device_forward`).
    max_group_values: usize,
    backend: Backend,
}

impl EpasLlama {
    /// A model on the host.
    pub fn new(info: ModelInfo, weights: HostWeights) -> Result<Self> {
        let c = &info.config;
        c.validate()?;
        if weights.layers.len() != c.num_layers {
            return Err(ModelError::Config(format!(
                "{} layers loaded, the config says {}",
                weights.layers.len(),
                c.num_layers
            )));
        }
        let rope = RopeTable::for_config(c, c.max_position_embeddings);
        Ok(Self {
            info,
            rope,
            shared_attention: SharedAttention::default(),
            kv_dtype: KvDtype::F32,
            max_group_values: DEFAULT_MAX_GROUP_VALUES,
            backend: Backend::Host(weights),
        })
    }

    pub fn config(&self) -> &crate::config::LlamaConfig {
        &self.info.config
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The weights in host memory; an error for a model placed on a device.
    pub fn host_weights(&self) -> Result<&HostWeights> {
        match &self.backend {
            Backend::Host(weights) => Ok(weights),
            Backend::Device(_) => Err(ModelError::WeightsOnDevice),
        }
    }

    pub fn host_weights_mut(&mut self) -> Result<&mut HostWeights> {
        match &mut self.backend {
            Backend::Host(weights) => Ok(weights),
            Backend::Device(_) => Err(ModelError::WeightsOnDevice),
        }
    }

    /// The model running its forward as tensor ops on `device` with activations in `dtype`
    /// (f32, f16 or bf16) and quantized matrices dequantized to it or kept as GGUF blocks
    /// (`weights`). This is how it runs on CUDA; on the CPU it is the slower reference of the
    /// host kernels. The host weights are consumed as they are copied: the device model does
    /// not keep them. Caches must then come from [`Self::block_pool`] or [`Self::new_cache`].
    pub fn on_device(
        mut self,
        device: &Device,
        dtype: DType,
        weights: DeviceWeights,
    ) -> Result<Self> {
        let Backend::Host(host) = self.backend else {
            return Err(ModelError::WeightsOnDevice);
        };
        let model =
            DeviceModel::from_host(host, &self.info.config, &self.rope, device, dtype, weights)?;
        self.backend = Backend::Device(Arc::new(model));
        Ok(self)
    }

    /// A block pool for caches this model can run: host blocks, or one arena on the model's
    /// device.
    pub fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> Result<BlockPool> {
        let width = self.config().kv_dim();
        match &self.backend {
            Backend::Host(_) => BlockPool::new(blocks, block_size, width, dtype),
            Backend::Device(model) => {
                BlockPool::on_device(blocks, block_size, width, dtype, model.device())
            }
        }
    }

    /// A cache for one sequence of up to `tokens` positions under `plan`: contiguous on the
    /// host, or its own pool on the model's device.
    pub fn new_cache(&self, plan: SharingPlan, tokens: usize) -> Result<Box<dyn KvCache>> {
        match &self.backend {
            Backend::Host(_) => Ok(Box::new(SequenceCache::with_dtype(
                self.config(),
                plan,
                tokens,
                self.kv_dtype,
            ))),
            Backend::Device(_) => {
                let pool = self.pool_for(&[(plan, tokens)])?;
                Ok(Box::new(PagedSequence::new(pool, plan)))
            }
        }
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
            let device_cache = s.cache.arena().is_some();
            if device_cache != matches!(self.backend, Backend::Device(_)) {
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
        let c = self.config();
        match &self.backend {
            Backend::Host(weights) => HostForward {
                weights,
                config: c,
                rope: &self.rope,
                shared: self.shared_attention,
                sharing: SHARING,
            }
            .run(steps),
            Backend::Device(model) => DeviceForward {
                model,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim(),
                eps: c.rms_norm_eps as f32,
                shared: self.shared_attention,
                sharing: SHARING,
                max_group_values: self.max_group_values,
            }
            .run(steps),
        }
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
