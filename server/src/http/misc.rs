//! Health, model list, tokenizer endpoints and metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::parse;
use super::chat_messages::chat_messages;
use super::error::ApiError;
use super::field_names::field_names;
use super::schema::*;
use super::state::AppState;

/// Liveness and readiness: 200 only while requests can run.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let unavailable = |body| (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    let Some(ready) = state.ready.get() else {
        return unavailable(json!({"status": "loading"}));
    };
    if let Some(panic) = ready.engine.failure() {
        return unavailable(json!({"status": "failed", "error": panic}));
    }
    if ready
        .engine
        .state()
        .draining
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return unavailable(json!({"status": "draining"}));
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

pub async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let c = &ready.info.config;
    let max = ready
        .info
        .max_sharing_ratio(state.config.allow_untrained_sharing);
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.served_model_name,
            "object": "model",
            "created": ready.created,
            "owned_by": "epas",
            "max_model_len": ready.max_context,
            "epas": {
                "num_layers": c.num_layers,
                "max_sharing_ratio": max,
                "max_sharing_layers": epas_model::SharingPlan::new(c.num_layers, max).map(|p| p.sharing_layers()).unwrap_or(0),
                "trained_sharing_ratio": ready.info.epas.as_ref().map(|e| e.sharing_ratio),
                "default_sharing_ratio": state.config.default_sharing_ratio,
                "weights": ready.info.weight_format,
            },
        }],
    }))
    .into_response())
}

pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TokenizeRequest = parse(&headers, &body, &[field_names::<TokenizeRequest>()])?;
    let ready = state.ready()?;
    state.resolve(ready, req.model.as_deref(), None)?;
    let text = match (&req.prompt, &req.messages) {
        (Some(p), None) => p.clone(),
        (None, Some(m)) => ready
            .tokenizer
            .apply_chat_template(&chat_messages(m)?, req.add_generation_prompt)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?,
        _ => return Err(ApiError::bad_request("send either `prompt` or `messages`")),
    };
    let tokens = ready
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    Ok(axum::Json(
        json!({"tokens": tokens, "count": tokens.len(), "max_model_len": ready.max_context}),
    )
    .into_response())
}

pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: DetokenizeRequest = parse(&headers, &body, &[field_names::<DetokenizeRequest>()])?;
    let ready = state.ready()?;
    state.resolve(ready, req.model.as_deref(), None)?;
    let vocab = ready.info.config.vocab_size;
    if let Some(id) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token id {id} is outside the vocabulary of {vocab}"),
        ));
    }
    let prompt = ready
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(axum::Json(json!({"prompt": prompt})).into_response())
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state
        .ready
        .get()
        .map(|r| r.engine.snapshot())
        .unwrap_or_default();
    let body = state.metrics.render(&snapshot);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
