//! `/tokenize` and `/detokenize`: the served model's tokenizer and chat template.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::parse;
use super::chat_messages::chat_messages;
use super::error::ApiError;
use super::field_names::field_names;
use super::schema::*;
use super::state::AppState;
use super::tool_calls::render_prompt;

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
        (None, Some(m)) => render_prompt(
            &ready.tokenizer,
            &chat_messages(m)?,
            None,
            req.add_generation_prompt,
        )?,
        _ => return Err(ApiError::bad_request("send either `prompt` or `messages`")),
    };
    let tokens = ready
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    Ok(axum::Json(
        json!({"tokens": tokens, "count": tokens.len(), "max_model_len": ready.max_model_len()}),
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
