//! A model for scheduler tests: it reserves and commits cache positions as the real forward
//! does, predicts a token that depends only on the previous token and its position (so output
//! is known in advance and does not depend on the batch), fails every batch holding a poisoned
//! token, and panics on another.

use epas_model::BlockPool;
use epas_model::{KvDtype, Logits, ModelError, SequenceStep};

use crate::engine::StepModel;

/// A prompt holding this token fails every forward it is part of.
pub const POISON: u32 = 7;
/// A prompt holding this token makes the forward panic.
pub const PANIC: u32 = 9;

pub struct FakeModel {
    pub layers: usize,
    pub vocab: usize,
    pub context: usize,
    /// Predictions that depend on the last token only, so text soon repeats itself and
    /// drafted tokens are right; otherwise they also depend on the position.
    pub repetitive: bool,
}

impl FakeModel {
    /// The token predicted after `last` at position `position`.
    pub fn next(&self, last: u32, position: usize) -> u32 {
        let position = if self.repetitive { 0 } else { position };
        100 + ((last as usize * 31 + position * 17) % 200) as u32
    }

    /// What a request generates alone: `max_tokens` predictions after `prompt`.
    pub fn continuation(&self, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
        let mut tokens = prompt.to_vec();
        for _ in 0..max_tokens {
            let last = *tokens.last().expect("prompts are not empty");
            tokens.push(self.next(last, tokens.len() - 1));
        }
        tokens.split_off(prompt.len())
    }
}

impl StepModel for FakeModel {
    fn num_layers(&self) -> usize {
        self.layers
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn kv_width(&self) -> usize {
        2
    }

    fn max_context(&self) -> usize {
        self.context
    }

    fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> epas_model::Result<BlockPool> {
        BlockPool::new(blocks, block_size, self.kv_width(), dtype)
    }

    fn forward(&self, steps: &mut [SequenceStep<'_>]) -> epas_model::Result<Vec<Option<Vec<f32>>>> {
        if steps.iter().any(|s| s.tokens.contains(&PANIC)) {
            panic!("the fake model met its panic token");
        }
        if steps.iter().any(|s| s.tokens.contains(&POISON)) {
            return Err(ModelError::Batch("a poisoned token".into()));
        }
        for s in steps.iter_mut() {
            let total = s.cache.len() + s.tokens.len();
            if total > self.context {
                return Err(ModelError::ContextExceeded {
                    tokens: total,
                    context: self.context,
                });
            }
            s.cache.reserve(s.tokens.len())?;
        }
        let outputs = steps
            .iter()
            .map(|s| {
                let start = s.cache.len();
                let positions = match s.logits {
                    Logits::Skip => return None,
                    Logits::Last => s.tokens.len() - 1..s.tokens.len(),
                    Logits::All => 0..s.tokens.len(),
                };
                let mut logits = vec![0.0; positions.len() * self.vocab];
                for (row, i) in positions.enumerate() {
                    let next = self.next(s.tokens[i], start + i) as usize;
                    logits[row * self.vocab + next] = 10.0;
                }
                Some(logits)
            })
            .collect();
        for s in steps.iter_mut() {
            s.cache.commit(s.tokens.len());
        }
        Ok(outputs)
    }
}
