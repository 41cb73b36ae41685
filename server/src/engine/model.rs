//! What the engine needs from a model: a batched forward over paged caches, and the sizes that
//! bound what a request may ask for.

use epas_model::BlockPool;
use epas_model::{EpasLlama, KvDtype, SequenceStep};

/// A model the engine can run steps of.
pub trait StepModel: Send + Sync {
    fn num_layers(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// Values in one layer's K or V row of one position.
    fn kv_width(&self) -> usize;
    /// Longest sequence (prompt plus output) the model can hold.
    fn max_context(&self) -> usize;
    /// A pool of `blocks` KV blocks this model's forward can read and write.
    fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> epas_model::Result<BlockPool>;
    /// Runs every step's new tokens, appends their K/V to its cache, and returns the logits
    /// each step asks for (`Logits::Last`: its last new position; `Logits::All`: every new
    /// position, one row of `vocab_size` values after another). On error no cache is changed.
    fn forward(&self, steps: &mut [SequenceStep<'_>]) -> epas_model::Result<Vec<Option<Vec<f32>>>>;
}

impl StepModel for EpasLlama {
    fn num_layers(&self) -> usize {
        self.config().num_layers
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn kv_width(&self) -> usize {
        self.config().kv_dim()
    }

    fn max_context(&self) -> usize {
        EpasLlama::max_context(self)
    }

    fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> epas_model::Result<BlockPool> {
        EpasLlama::block_pool(self, blocks, block_size, dtype)
    }

    fn forward(&self, steps: &mut [SequenceStep<'_>]) -> epas_model::Result<Vec<Option<Vec<f32>>>> {
        EpasLlama::forward(self, steps)?
            .into_iter()
            .map(|logits| {
                logits
                    .map(|l| {
                        Ok(l.to_dtype(candle_core::DType::F32)?
                            .flatten_all()?
                            .to_vec1::<f32>()?)
                    })
                    .transpose()
            })
            .collect()
    }
}
