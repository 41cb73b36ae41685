//! Engine limits and sizes.

use epas_model::KvDtype;

use super::speculative::SpeculativeConfig;

/// How the engine batches and how much KV cache it preallocates.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Sequences that hold a KV cache and run in the same step, at most.
    pub max_batch_size: usize,
    /// Tokens (decode rows plus prefill chunks) in one step, at most: long prompts are prefilled
    /// in chunks so that running decodes keep moving.
    pub max_batch_tokens: usize,
    /// Prompt tokens (prefill chunks) a step takes at most while some sequence is decoding, so
    /// that arriving prompts lengthen the running streams' inter-token gaps by a bounded
    /// amount; the rest of `max_batch_tokens` stays for decode rows. A step with nothing
    /// decoding prefills up to `max_batch_tokens`.
    pub max_prefill_while_decoding: usize,
    /// Requests waiting for admission, at most; more are refused as overloaded.
    pub max_waiting: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// Size of the preallocated KV block pool.
    pub kv_cache: KvCacheSize,
    /// Reuse full KV blocks of earlier requests with the same prompt prefix and sharing ratio.
    pub prefix_cache: bool,
    /// Element type of cached K/V rows.
    pub kv_dtype: KvDtype,
    /// Draft tokens by prompt lookup and check them in the same forward; `None`: off.
    pub speculative: Option<SpeculativeConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_batch_tokens: 512,
            max_prefill_while_decoding: 128,
            max_waiting: 256,
            block_size: 16,
            kv_cache: KvCacheSize::Tokens(32768),
            prefix_cache: true,
            kv_dtype: KvDtype::F32,
            speculative: None,
        }
    }
}

/// How large the KV block pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// This many blocks (each `block_size` rows of one layer's K or V).
    Blocks(usize),
    /// Room for this many positions of sequences with no sharing layer (sharing sequences fit
    /// more, as they keep no K in their sharing layers).
    Tokens(usize),
    /// This many bytes of rows (of the configured K/V dtype).
    Bytes(usize),
}

impl EngineConfig {
    /// Pool blocks for a model of `num_layers` layers with K/V rows of `row_width` values.
    pub fn kv_blocks(&self, num_layers: usize, row_width: usize) -> usize {
        match self.kv_cache {
            KvCacheSize::Blocks(n) => n,
            KvCacheSize::Tokens(t) => t.div_ceil(self.block_size) * 2 * num_layers,
            KvCacheSize::Bytes(b) => b / (self.block_size * row_width * self.kv_dtype.size()),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("max_batch_size", self.max_batch_size),
            ("max_batch_tokens", self.max_batch_tokens),
            (
                "max_prefill_while_decoding",
                self.max_prefill_while_decoding,
            ),
            ("block_size", self.block_size),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if let Some(s) = &self.speculative {
            s.validate()?;
        }
        Ok(())
    }
}
