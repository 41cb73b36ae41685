//! Perplexity and prefill speed of a model under a sharing plan, over fixed windows of a text.

use std::time::Instant;

use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::kv_cache::kv_bytes_per_token;
use crate::model::EpasLlama;
use crate::sharing::SharingPlan;

/// One row of `epas eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// The requested ratio.
    pub sharing_ratio: f64,
    pub sharing_layers: usize,
    pub source_layer: Option<usize>,
    pub perplexity: f64,
    pub scored_tokens: usize,
    /// Tokens processed per second of forward time (prefill speed).
    pub tokens_per_second: f64,
    pub kv_cache_bytes_per_token: usize,
}

/// Perplexity of `tokens` cut into non-overlapping windows of `ctx` tokens; the first token of
/// each window is context only and not scored. A shorter tail window is scored too when it has
/// at least two tokens.
pub fn perplexity(
    model: &EpasLlama,
    tokens: &[u32],
    ctx: usize,
    ratio: f64,
    plan: SharingPlan,
) -> Result<EvalRow> {
    if ctx < 2 {
        return Err(ModelError::Config(
            "the evaluation window needs at least 2 tokens".into(),
        ));
    }
    if ctx > model.max_context() {
        return Err(ModelError::ContextExceeded {
            tokens: ctx,
            context: model.max_context(),
        });
    }
    if tokens.len() < 2 {
        return Err(ModelError::Config(
            "the text has fewer than 2 tokens".into(),
        ));
    }
    let (mut nll, mut scored) = (0f64, 0usize);
    let started = Instant::now();
    for window in tokens.chunks(ctx).filter(|w| w.len() >= 2) {
        let logits = model.forward_sequence(window, plan)?;
        let logits = logits.to_vec2::<f32>()?;
        for (row, &target) in logits.iter().zip(&window[1..]) {
            nll += negative_log_likelihood(row, target as usize);
            scored += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let processed: usize = tokens
        .chunks(ctx)
        .filter(|w| w.len() >= 2)
        .map(<[u32]>::len)
        .sum();
    Ok(EvalRow {
        sharing_ratio: ratio,
        sharing_layers: plan.sharing_layers(),
        source_layer: plan.source_layer(),
        perplexity: (nll / scored as f64).exp(),
        scored_tokens: scored,
        tokens_per_second: processed as f64 / seconds,
        kv_cache_bytes_per_token: kv_bytes_per_token(model.config(), &plan, model.kv_dtype()),
    })
}

/// `-log softmax(row)[target]`, computed in f64.
pub(crate) fn negative_log_likelihood(row: &[f32], target: usize) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let row = vec![1.5f32; 8];
        assert!((negative_log_likelihood(&row, 3) - (8f64).ln()).abs() < 1e-9);
    }
}
