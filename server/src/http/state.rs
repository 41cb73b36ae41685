//! What every handler shares: the engine once the model is loaded, settings, metrics.

use std::sync::{Arc, OnceLock};

use epas_model::{ModelInfo, SharingPlan, TextTokenizer};

use super::error::ApiError;
use crate::engine::EngineHandle;
use crate::metrics::Metrics;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub served_model_name: String,
    pub allow_untrained_sharing: bool,
    pub default_sharing_ratio: f64,
    pub api_keys: Vec<String>,
    pub max_n: usize,
    pub max_stop_sequences: usize,
    pub max_logprobs: usize,
}

/// The loaded model and its engine.
pub struct Ready {
    pub engine: EngineHandle,
    pub tokenizer: Arc<TextTokenizer>,
    pub info: ModelInfo,
    pub created: u64,
}

pub struct AppState {
    pub config: HttpConfig,
    pub metrics: Arc<Metrics>,
    pub ready: OnceLock<Ready>,
}

/// The sharing plan a request resolved to.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedModel {
    pub plan: SharingPlan,
    pub ratio: f64,
}

impl Ready {
    /// The longest sequence (prompt plus output) a request can have: the model's context, or
    /// less when the KV pool holds fewer positions of a sequence that shares no layer.
    pub fn max_model_len(&self) -> usize {
        let plan = SharingPlan::none(self.info.config.num_layers);
        self.engine.limits().max_sequence_tokens(&plan)
    }
}

impl AppState {
    /// The loaded model, or the 503 that explains why requests cannot run now.
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        let ready = self.ready.get().ok_or_else(ApiError::loading)?;
        if let Some(panic) = ready.engine.failure() {
            return Err(ApiError::engine_failed(panic));
        }
        if ready
            .engine
            .state()
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ApiError::draining());
        }
        Ok(ready)
    }

    /// Resolves the `model` field (`NAME` or `NAME@RATIO`) and `sharing_ratio` into a plan.
    pub fn resolve(
        &self,
        ready: &Ready,
        model: Option<&str>,
        sharing_ratio: Option<f64>,
    ) -> Result<ResolvedModel, ApiError> {
        let name = &self.config.served_model_name;
        let alias_ratio = match model {
            None => None,
            Some(m) if m == name => None,
            Some(m) => {
                let ratio = m
                    .strip_prefix(name.as_str())
                    .and_then(|rest| rest.strip_prefix('@'))
                    .ok_or_else(|| {
                        ApiError::not_found(format!(
                            "model `{m}` does not exist; this server serves `{name}` (or `{name}@RATIO`)"
                        ))
                        .with_code("model_not_found")
                    })?;
                Some(ratio.parse::<f64>().map_err(|_| {
                    ApiError::invalid(
                        "model",
                        format!("`{ratio}` in `{m}` is not a sharing ratio"),
                    )
                })?)
            }
        };
        let ratio = match (alias_ratio, sharing_ratio) {
            (Some(a), Some(r)) if (a - r).abs() > 1e-12 => {
                return Err(ApiError::invalid(
                    "sharing_ratio",
                    format!("sharing_ratio {r} contradicts the model alias ratio {a}"),
                ))
            }
            (Some(a), _) => a,
            (None, Some(r)) => r,
            (None, None) => self.config.default_sharing_ratio,
        };
        let plan = ready
            .info
            .plan(ratio, self.config.allow_untrained_sharing)
            .map_err(|e| ApiError::invalid("sharing_ratio", e.to_string()))?;
        Ok(ResolvedModel { plan, ratio })
    }
}
