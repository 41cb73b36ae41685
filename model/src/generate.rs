//! Single-sequence generation: prefill, then decode token by token with the KV cache.

use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};
use crate::model::{EpasLlama, Logits, SequenceStep};
use crate::sampler::{Sampler, SamplingParams};
use crate::sharing::SharingPlan;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model's context is full.
    Context,
}

/// Tokens and timings of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_time: Duration,
    pub decode_time: Duration,
}

/// Generates up to `max_tokens` after `prompt` under `plan`. `on_token` sees each new token and
/// may return `false` to stop early.
pub fn generate(
    model: &EpasLlama,
    prompt: &[u32],
    plan: SharingPlan,
    max_tokens: usize,
    sampling: SamplingParams,
    eos: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    let context = model.max_context();
    if prompt.len() > context {
        return Err(ModelError::ContextExceeded {
            tokens: prompt.len(),
            context,
        });
    }
    let mut cache = model.new_cache(plan, (prompt.len() + max_tokens).min(context))?;
    let mut sampler = Sampler::new(sampling);
    let mut tokens = Vec::new();
    let started = Instant::now();
    let mut next_input: Vec<u32> = prompt.to_vec();
    let mut prompt_time = Duration::ZERO;
    let mut finish = FinishReason::Length;
    while tokens.len() < max_tokens {
        if cache.len() + next_input.len() > context {
            finish = FinishReason::Context;
            break;
        }
        let mut steps = [SequenceStep {
            tokens: &next_input,
            cache: cache.as_mut(),
            logits: Logits::Last,
        }];
        let logits = model
            .forward(&mut steps)?
            .pop()
            .flatten()
            .ok_or_else(|| ModelError::Batch("no logits".into()))?;
        let logits = logits.squeeze(0)?.to_vec1::<f32>()?;
        if tokens.is_empty() {
            prompt_time = started.elapsed();
        }
        let token = sampler.sample(&logits);
        tokens.push(token);
        if eos.contains(&token) {
            finish = FinishReason::Stop;
            break;
        }
        if !on_token(token) {
            finish = FinishReason::Stop;
            break;
        }
        next_input = vec![token];
    }
    Ok(Generation {
        tokens,
        finish,
        prompt_time,
        decode_time: started.elapsed().saturating_sub(prompt_time),
    })
}
