//! KV caches. A sequence stores K only for the layers that compute it; sharing layers attend
//! with the source layer's keys. [`SequenceCache`] is one contiguous buffer per layer;
//! [`crate::paged::PagedSequence`] keeps the same rows in fixed-size blocks from a shared pool.

use crate::config::LlamaConfig;
use crate::error::Result;
pub use crate::kv_buffer::KvDtype;
pub(crate) use crate::kv_buffer::{KvBuffer, KvSlice};
use crate::sharing::SharingPlan;

/// Rows of one layer's K or V: chunks of whole rows, every chunk but the last holding exactly
/// `rows_per_chunk` rows of `width` values.
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    pub chunks: Vec<KvSlice<'a>>,
    pub rows_per_chunk: usize,
    pub width: usize,
}

impl<'a> Rows<'a> {
    pub fn contiguous(data: KvSlice<'a>, width: usize) -> Self {
        Self {
            chunks: vec![data],
            rows_per_chunk: usize::MAX,
            width,
        }
    }

    /// Calls `f(j, rows)` for rows `0..count` in order, each call with a contiguous run of
    /// whole rows starting at row `j`.
    #[inline]
    pub fn for_each_run(&self, count: usize, mut f: impl FnMut(usize, KvSlice<'a>)) {
        let mut j = 0;
        for chunk in &self.chunks {
            if j == count {
                return;
            }
            let n = (chunk.len() / self.width).min(count - j);
            f(j, chunk.slice(0..n * self.width));
            j += n;
        }
        debug_assert_eq!(j, count, "fewer rows cached than attended");
    }
}

/// What the forward needs from a sequence's cache.
pub trait KvCache: Send {
    fn plan(&self) -> &SharingPlan;
    /// Positions already cached (committed).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fails when the cache cannot hold `tokens` more positions (a full block pool).
    fn reserve(&mut self, tokens: usize) -> Result<()>;
    /// Writes the rows of positions `len()..len() + t` of one layer; `keys` is ignored for
    /// sharing layers. Room must have been reserved.
    fn append(&mut self, layer: usize, keys: Option<&[f32]>, values: &[f32]);
    /// Keys of a compute layer, including rows appended but not committed. `None` for sharing
    /// layers.
    fn keys(&self, layer: usize) -> Option<Rows<'_>>;
    fn values(&self, layer: usize) -> Rows<'_>;
    /// Marks `tokens` appended positions as cached.
    fn commit(&mut self, tokens: usize);
    /// Forgets rows appended since the last commit.
    fn rollback(&mut self);
    /// The cache's rows when they live in a device pool's arena (the tensor forward reads and
    /// writes them there); `None` for host caches.
    fn arena(&self) -> Option<&dyn ArenaKv> {
        None
    }
}

/// A cache whose rows live in one arena tensor ([`crate::paged::BlockPool::on_device`]).
pub trait ArenaKv {
    fn arena(&self) -> &candle_core::Tensor;
    /// Identifies the pool: the sequences of one forward must share it.
    fn pool_id(&self) -> usize;
    /// Rows per block: block `b` of the arena is rows `b * block_size..(b + 1) * block_size`.
    fn block_size(&self) -> usize;
    /// Appends to `out` the arena block of each of the first `blocks` blocks of one layer's keys
    /// (`keys`) or values.
    fn arena_blocks(
        &self,
        layer: usize,
        keys: bool,
        blocks: usize,
        out: &mut Vec<u32>,
    ) -> Result<()>;
    /// Appends to `out` the arena row of every position in `positions` of one layer's keys
    /// (`keys`) or values. Positions must lie in reserved room; sharing layers have no keys.
    fn arena_rows(
        &self,
        layer: usize,
        keys: bool,
        positions: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<()>;
}

/// Bytes of K/V a sequence under `plan` holds per token.
pub fn kv_bytes_per_token(config: &LlamaConfig, plan: &SharingPlan, dtype: KvDtype) -> usize {
    let compute = plan.num_layers() - plan.sharing_layers();
    (compute + plan.num_layers()) * config.kv_dim() * dtype.size()
}

/// K and V rows of one sequence, `kv_dim` floats per position and layer. Sharing layers keep no
/// K: they attend with the source layer's keys.
#[derive(Debug, Clone)]
pub struct SequenceCache {
    plan: SharingPlan,
    kv_dim: usize,
    len: usize,
    keys: Vec<Option<KvBuffer>>,
    values: Vec<KvBuffer>,
}

impl SequenceCache {
    pub fn new(config: &LlamaConfig, plan: SharingPlan) -> Self {
        Self::with_capacity(config, plan, 0)
    }

    /// An f32 cache with room for `tokens` positions before it reallocates.
    pub fn with_capacity(config: &LlamaConfig, plan: SharingPlan, tokens: usize) -> Self {
        Self::with_dtype(config, plan, tokens, KvDtype::F32)
    }

    /// A cache storing `dtype` with room for `tokens` positions before it reallocates.
    pub fn with_dtype(
        config: &LlamaConfig,
        plan: SharingPlan,
        tokens: usize,
        dtype: KvDtype,
    ) -> Self {
        let kv_dim = config.kv_dim();
        let cap = tokens * kv_dim;
        let keys = (0..config.num_layers)
            .map(|l| {
                plan.computes(l)
                    .then(|| KvBuffer::with_capacity(dtype, cap))
            })
            .collect();
        let values = (0..config.num_layers)
            .map(|_| KvBuffer::with_capacity(dtype, cap))
            .collect();
        Self {
            plan,
            kv_dim,
            len: 0,
            keys,
            values,
        }
    }

    /// Bytes held by cached positions.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .flatten()
            .map(KvBuffer::bytes)
            .sum::<usize>()
            + self.values.iter().map(KvBuffer::bytes).sum::<usize>()
    }

    /// Whether layer `layer` stores keys.
    pub fn has_keys(&self, layer: usize) -> bool {
        self.keys[layer].is_some()
    }
}

impl KvCache for SequenceCache {
    fn plan(&self) -> &SharingPlan {
        &self.plan
    }

    fn len(&self) -> usize {
        self.len
    }

    fn reserve(&mut self, tokens: usize) -> Result<()> {
        let more = tokens * self.kv_dim;
        for k in self.keys.iter_mut().flatten() {
            k.reserve(more);
        }
        for v in &mut self.values {
            v.reserve(more);
        }
        Ok(())
    }

    fn append(&mut self, layer: usize, keys: Option<&[f32]>, values: &[f32]) {
        debug_assert_eq!(values.len() % self.kv_dim, 0);
        if let (Some(dst), Some(src)) = (self.keys[layer].as_mut(), keys) {
            dst.extend(src);
        }
        self.values[layer].extend(values);
    }

    fn keys(&self, layer: usize) -> Option<Rows<'_>> {
        self.keys[layer]
            .as_ref()
            .map(|k| Rows::contiguous(k.view(), self.kv_dim))
    }

    fn values(&self, layer: usize) -> Rows<'_> {
        Rows::contiguous(self.values[layer].view(), self.kv_dim)
    }

    fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    fn rollback(&mut self) {
        let keep = self.len * self.kv_dim;
        for k in self.keys.iter_mut().flatten() {
            k.truncate(keep);
        }
        for v in &mut self.values {
            v.truncate(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            rope_theta: 100000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            rope_scaling: Default::default(),
        }
    }

    #[test]
    fn sharing_layers_store_no_keys() {
        let c = smollm2();
        let full = kv_bytes_per_token(&c, &SharingPlan::none(30), KvDtype::F32);
        let half = kv_bytes_per_token(&c, &SharingPlan::new(30, 0.5).unwrap(), KvDtype::F32);
        assert_eq!(full, 60 * 192 * 4);
        // 15 K rows saved of 60 rows: 75% of the full cache, as EPAS.md says.
        assert_eq!(half * 4, full * 3);
        assert_eq!(
            kv_bytes_per_token(&c, &SharingPlan::none(30), KvDtype::F16) * 2,
            full
        );
        // What a cache holds agrees with the per-token figure, in both dtypes.
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let plan = SharingPlan::new(30, 0.5).unwrap();
            let mut cache = SequenceCache::with_dtype(&c, plan, 3, dtype);
            let rows = vec![0.5f32; 3 * 192];
            for l in 0..30 {
                cache.append(l, Some(&rows), &rows);
            }
            cache.commit(3);
            assert_eq!(cache.bytes(), 3 * kv_bytes_per_token(&c, &plan, dtype));
        }
        let cache = SequenceCache::new(&c, SharingPlan::new(30, 0.5).unwrap());
        assert!(cache.has_keys(14));
        assert!(!cache.has_keys(15));
    }
}
