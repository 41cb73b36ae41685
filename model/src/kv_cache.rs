//! Per-sequence KV cache that stores K only for the layers that compute it.

use crate::config::LlamaConfig;
use crate::sharing::SharingPlan;

/// K and V rows of one sequence, `kv_dim` floats per position and layer. Sharing layers keep no
/// K: they attend with the source layer's keys.
#[derive(Debug, Clone)]
pub struct SequenceCache {
    plan: SharingPlan,
    kv_dim: usize,
    len: usize,
    keys: Vec<Option<Vec<f32>>>,
    values: Vec<Vec<f32>>,
}

impl SequenceCache {
    pub fn new(config: &LlamaConfig, plan: SharingPlan) -> Self {
        Self::with_capacity(config, plan, 0)
    }

    /// A cache with room for `tokens` positions before it reallocates.
    pub fn with_capacity(config: &LlamaConfig, plan: SharingPlan, tokens: usize) -> Self {
        let kv_dim = config.kv_dim();
        let cap = tokens * kv_dim;
        let keys = (0..config.num_layers)
            .map(|l| plan.computes(l).then(|| Vec::with_capacity(cap)))
            .collect();
        let values = (0..config.num_layers)
            .map(|_| Vec::with_capacity(cap))
            .collect();
        Self {
            plan,
            kv_dim,
            len: 0,
            keys,
            values,
        }
    }

    /// Bytes the cache needs per token for `plan` (f32 storage).
    pub fn bytes_per_token(config: &LlamaConfig, plan: &SharingPlan) -> usize {
        let compute = plan.num_layers() - plan.sharing_layers();
        (compute + plan.num_layers()) * config.kv_dim() * std::mem::size_of::<f32>()
    }

    pub fn plan(&self) -> &SharingPlan {
        &self.plan
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by cached positions.
    pub fn bytes(&self) -> usize {
        let floats: usize = self.keys.iter().flatten().map(Vec::len).sum::<usize>()
            + self.values.iter().map(Vec::len).sum::<usize>();
        floats * std::mem::size_of::<f32>()
    }

    /// Keys of a compute layer: `rows * kv_dim` floats. `None` for sharing layers.
    pub fn keys(&self, layer: usize) -> Option<&[f32]> {
        self.keys[layer].as_deref()
    }

    pub fn values(&self, layer: usize) -> &[f32] {
        &self.values[layer]
    }

    /// Appends new rows of one layer. Rows beyond `len` are pending until [`Self::commit`].
    pub(crate) fn append(&mut self, layer: usize, keys: Option<&[f32]>, values: &[f32]) {
        debug_assert_eq!(values.len() % self.kv_dim, 0);
        if let (Some(dst), Some(src)) = (self.keys[layer].as_mut(), keys) {
            dst.extend_from_slice(src);
        }
        self.values[layer].extend_from_slice(values);
    }

    /// Marks `tokens` appended positions as cached.
    pub(crate) fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    /// Drops pending rows past `len` (after a failed forward).
    pub(crate) fn rollback(&mut self) {
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
        }
    }

    #[test]
    fn sharing_layers_store_no_keys() {
        let c = smollm2();
        let full = SequenceCache::bytes_per_token(&c, &SharingPlan::none(30));
        let half = SequenceCache::bytes_per_token(&c, &SharingPlan::new(30, 0.5).unwrap());
        assert_eq!(full, 60 * 192 * 4);
        // 15 K rows saved of 60 rows: 75% of the full cache, as EPAS.md says.
        assert_eq!(half * 4, full * 3);
        let cache = SequenceCache::new(&c, SharingPlan::new(30, 0.5).unwrap());
        assert!(cache.keys(14).is_some());
        assert!(cache.keys(15).is_none());
    }
}
