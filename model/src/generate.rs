//! Single-sequence generation: prefill, then decode token by token with the KV cache.

use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};
use crate::finish_reason::FinishReason;
use crate::model::{EpasLlama, Logits, SequenceStep};
use crate::sampler::{Sampler, SamplingParams};
use crate::sharing::SharingPlan;

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
            finish = FinishReason::Length;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;
    use crate::init::random_model;

    /// A full context ends generation as `max_tokens` does: "length", the word the API gives.
    #[test]
    fn a_full_context_finishes_with_length() {
        let config = LlamaConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 48,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 16,
            tie_word_embeddings: true,
            rope_scaling: Default::default(),
        };
        let model = random_model(config, None, 3).unwrap();
        let prompt: Vec<u32> = (1..=10).collect();
        let plan = SharingPlan::none(2);
        let g = generate(
            &model,
            &prompt,
            plan,
            20,
            SamplingParams::default(),
            &[],
            |_| true,
        );
        let g = g.unwrap();
        // The prompt fills 10 of 16 positions; each new token needs one more, the last one none.
        assert_eq!(g.tokens.len(), 7);
        assert_eq!(g.finish, FinishReason::Length);
        assert_eq!(g.finish.as_str(), "length");
    }
}
