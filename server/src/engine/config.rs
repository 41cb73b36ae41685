//! Engine limits and sizes.

/// How the engine batches and how much KV cache it preallocates.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Sequences that hold a KV cache and run in the same step, at most.
    pub max_batch_size: usize,
    /// Tokens (decode rows plus prefill chunks) in one step, at most: long prompts are prefilled
    /// in chunks so that running decodes keep moving.
    pub max_batch_tokens: usize,
    /// Requests waiting for admission, at most; more are refused as overloaded.
    pub max_waiting: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// Blocks in the pool (each holds `block_size` rows of one layer's K or V).
    pub kv_blocks: usize,
    /// Reuse full KV blocks of earlier requests with the same prompt prefix and sharing ratio.
    pub prefix_cache: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_batch_tokens: 512,
            max_waiting: 256,
            block_size: 16,
            kv_blocks: 4096,
            prefix_cache: true,
        }
    }
}

impl EngineConfig {
    /// Pool blocks needed to hold `tokens` positions of a sequence with no sharing layer, for
    /// a model of `num_layers` layers: sizing by `--kv-cache-tokens`.
    pub fn blocks_for_tokens(&self, tokens: usize, num_layers: usize) -> usize {
        tokens.div_ceil(self.block_size) * 2 * num_layers
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("max_batch_size", self.max_batch_size),
            ("max_batch_tokens", self.max_batch_tokens),
            ("block_size", self.block_size),
            ("kv_blocks", self.kv_blocks),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}
