//! Validates the sampling fields shared by both endpoints into engine parameters.

use epas_model::SamplingParams;

use super::error::ApiError;
use super::schema::{CommonParams, Stop};
use super::state::HttpConfig;
use crate::engine::GenerationParams;

fn check_range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= lo && x <= hi) => Err(ApiError::invalid(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// What the endpoint knows besides the common fields.
pub struct Limits {
    /// Output tokens the prompt leaves room for (the engine's [`crate::engine::RequestLimits::room`]).
    pub room: usize,
    pub vocab: usize,
    pub max_tokens: Option<i64>,
    /// Applies when the request gives no `max_tokens` (clipped to `room`).
    pub default_max_tokens: usize,
    /// Alternatives asked for per token, if log-probabilities are wanted.
    pub logprobs: Option<usize>,
}

/// Engine parameters for a request's sampling fields. The prompt, `n` and the length limits are
/// the engine's validation step's ([`crate::engine::EngineHandle::validate`]).
pub fn generation_params(
    c: &CommonParams,
    config: &HttpConfig,
    limits: Limits,
) -> Result<GenerationParams, ApiError> {
    let Limits {
        room,
        vocab,
        max_tokens,
        default_max_tokens,
        logprobs,
    } = limits;
    let max_tokens = match max_tokens {
        None => default_max_tokens.min(room),
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ))
        }
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
    };
    check_range("temperature", c.temperature, 0.0, 2.0)?;
    check_range("top_p", c.top_p, 0.0, 1.0)?;
    if c.top_p == Some(0.0) {
        return Err(ApiError::invalid("top_p", "top_p must be above 0"));
    }
    check_range("min_p", c.min_p, 0.0, 1.0)?;
    check_range("presence_penalty", c.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", c.frequency_penalty, -2.0, 2.0)?;
    check_range("repetition_penalty", c.repetition_penalty, 0.01, 10.0)?;
    let n = match c.n {
        None => 1,
        Some(n) if n >= 1 && n as usize <= config.max_n => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n must be between 1 and {}, got {n}", config.max_n),
            ))
        }
    };
    let top_k = match c.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k must be -1, 0 or positive, got {k}"),
            ))
        }
    };
    let min_tokens = match c.min_tokens {
        None => 0,
        Some(m) if m >= 0 && m as usize <= max_tokens => m as usize,
        Some(m) => {
            return Err(ApiError::invalid(
                "min_tokens",
                format!("min_tokens must be between 0 and max_tokens ({max_tokens}), got {m}"),
            ))
        }
    };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > config.max_stop_sequences {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {} stop sequences are allowed, got {}",
                config.max_stop_sequences,
                stop.len()
            ),
        ));
    }
    if let Some(s) = stop.iter().find(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "stop sequences must have 1 to 256 bytes, got {} bytes",
                s.len()
            ),
        ));
    }
    let stop_token_ids = c.stop_token_ids.clone().unwrap_or_default();
    if let Some(id) = stop_token_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "stop_token_ids",
            format!("token id {id} is outside the vocabulary of {vocab}"),
        ));
    }
    let mut logit_bias = Vec::new();
    for (key, &bias) in c.logit_bias.iter().flatten() {
        let id: u32 = key
            .parse()
            .ok()
            .filter(|&id: &u32| (id as usize) < vocab)
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("`{key}` is not a token id below {vocab}"),
                )
            })?;
        if !(bias.is_finite() && (-100.0..=100.0).contains(&bias)) {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("bias {bias} must be between -100 and 100"),
            ));
        }
        logit_bias.push((id, bias as f32));
    }
    if let Some(l) = logprobs {
        if l > config.max_logprobs {
            return Err(ApiError::invalid(
                "logprobs",
                format!(
                    "at most {} log-probabilities per token, got {l}",
                    config.max_logprobs
                ),
            ));
        }
    }
    let seed = c.seed.map(|s| s as u64).unwrap_or_else(rand::random);
    Ok(GenerationParams {
        max_tokens,
        min_tokens,
        stop,
        stop_token_ids,
        ignore_eos: c.ignore_eos,
        sampling: SamplingParams {
            temperature: c.temperature.unwrap_or(1.0) as f32,
            top_k,
            top_p: c.top_p.unwrap_or(1.0) as f32,
            min_p: c.min_p.unwrap_or(0.0) as f32,
            seed,
            presence_penalty: c.presence_penalty.unwrap_or(0.0) as f32,
            frequency_penalty: c.frequency_penalty.unwrap_or(0.0) as f32,
            repetition_penalty: c.repetition_penalty.unwrap_or(1.0) as f32,
            logit_bias,
            logprobs,
        },
        n,
        speculative: c.speculative.unwrap_or(true),
    })
}
